"""Per-channel moments of a sample set too large to copy: float64 sums over batches.

    s_c = sqrt( (Σ x² − (Σ x)² / n) / (n − 1) ),   sums over samples and grid points of channel c

Samples (N, C, H, W) may be a memory map of the cache (bench/samples.py serves them so): a
reduction over the whole tensor, or ``samples / s``, would make a full in-memory copy (N × C ×
H × W × 4 bytes: 20 GB for 36,300 built-in-world samples, 104 GB for a year of 0.25° NMC pairs);
these read ``batch`` samples at a time.
"""

from __future__ import annotations

import torch


def channel_std(samples: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Per-channel std (C,) float64 of ``samples`` (N, C, H, W), over samples and grid points
    (n − 1 in the denominator, as torch.std), from float64 sums over ``batch`` samples at a
    time. Memory: one batch in float64."""
    if samples.ndim != 4 or samples.shape[0] < 1:
        raise ValueError(f"samples must be (N, C, H, W) with N >= 1; got {tuple(samples.shape)}")
    total = torch.zeros(samples.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, samples.shape[0], batch):
        block = samples[start:start + batch].to(torch.float64)
        total += block.sum(dim=(0, 2, 3)).cpu()
        squares += block.square().sum(dim=(0, 2, 3)).cpu()
    n = samples.shape[0] * samples.shape[2] * samples.shape[3]
    return ((squares - total.square() / n) / max(n - 1, 1)).clamp_min(0).sqrt()
