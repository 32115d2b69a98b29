"""Background errors drawn from a known Gaussian B = U Uᵀ: the known-answer prior.

    ε_i = U w_i,   w_i ~ N(0, I) of shape (K, n_coef),   so   ε_i ~ N(0, B),  B = U Uᵀ

with U = U_p U_v S U_h the covariance model of bmatrix.py (normalised units, float64 inside).
With such errors and Gaussian observations of known R, 3DVar with exactly this B and an exact
minimiser is the best linear unbiased analysis (the Bayes-optimal one for a flat prior on the
truth): bench/experiments/known_prior.py uses it as the optimum other methods are measured
against, and bench/samples.py serves the draws to methods that learn ("known_prior" samples).

Draw i of a stream is seeded by SeedSequence([TAG, stream, seed, i]) alone, so draws nest
(the first 363 of 3,630 draws are the 363 draws) and two streams never share a w: the training
draws (``TRAIN``) and the check's cases (``CASES``) are disjoint by construction. Draws are made
``batch`` at a time, so memory is O(batch × C × H × W) whatever N is.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from methods.common.covariance.bmatrix import BMatrix

#: SeedSequence tag of every known-prior draw (b"known-prior" as an integer).
TAG = int.from_bytes(b"known-prior", "little")
#: Streams: the draws methods train on, the check's background errors, ensemble members.
TRAIN, CASES, MEMBERS = 0, 1, 2


def control_vector(b: BMatrix, stream: int, seed: int, index: int) -> torch.Tensor:
    """w_i ~ N(0, I): (K, n_coef) float64 on the CPU, a function of (stream, seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([TAG, stream, seed, index]))
    return torch.from_numpy(rng.standard_normal(b.shape_w))


def draw_batches(b: BMatrix, count: int, stream: int = TRAIN, seed: int = 0, batch: int = 32,
                 first: int = 0) -> Iterator[torch.Tensor]:
    """ε_i = U w_i for i = first … first + count − 1, as (≤ batch, C, H, W) float64 blocks on
    B's device, in order."""
    if count < 0 or batch < 1:
        raise ValueError(f"count={count} must be >= 0 and batch={batch} >= 1")
    for start in range(first, first + count, batch):
        stop = min(start + batch, first + count)
        w = torch.stack([control_vector(b, stream, seed, i) for i in range(start, stop)])
        with torch.no_grad():
            yield b.u(w.to(b.device))  # ε = U w


def draw(b: BMatrix, count: int, stream: int = TRAIN, seed: int = 0, batch: int = 32,
         out: np.ndarray | None = None) -> np.ndarray:
    """``count`` errors (count, C, H, W) float32: into ``out`` (e.g. a np.memmap, so N × C × H
    × W need not fit in memory) when given, else a new array."""
    shape = (count, b.n_channels, b.nlat, b.nlon)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {shape}")
    k = 0
    for block in draw_batches(b, count, stream, seed, batch):
        out[k:k + block.shape[0]] = block.cpu().numpy()
        k += block.shape[0]
    return out


def covariance_column(b: BMatrix, channel: int, row: int, col: int) -> torch.Tensor:
    """B e_p = U Uᵀ e_p (C, H, W) float64 for the unit vector e_p at grid point p = (channel,
    row, col): the covariance of ε_p with every element; its entry p is var(ε_p)."""
    e = torch.zeros(b.n_channels, b.nlat, b.nlon, dtype=torch.float64, device=b.device)
    e[channel, row, col] = 1.0
    with torch.no_grad():
        return b.u(b.u_adjoint(e))


def scaled(stats: dict, factor: float) -> dict:
    """``stats`` of B × ``factor``: S (the modes' std) × √factor, everything else shared."""
    return {**stats, "std": stats["std"] * factor ** 0.5}
