"""Training DiffDA's conditional denoiser: (truth, forecast) pairs and the ε-prediction loss.

Pairs come from the training period only: for each start i, the forecast x̂_i of lead L from
the frames (x_{i−1}, x_i) by the forecast model, and the truth x_{i+L} it should have been.
They are served as the harness's cached truth − forecast samples d_i = x_{i+L} − x̂_i
(``ctx.samples``, memory-mapped; bench/samples.py) and the training truth: a mini-batch gathers
d[idx] and x[t_idx] and rebuilds x̂ = x_t − d (``IncrementPairs``), so no forecast is held.
The diffused variable is the scaled increment

    z_0 = (x_{i+L} − x̂_i) / s,        s (C,) = per-channel std of the training increments,

and the loss is DDPM's simplified objective (Ho et al. 2020, eq. 14), as in DiffDA:

    L = E_{z_0, x̂, t ~ U{0..999}, ε ~ N(0, I)} ‖ε − ε_θ(√ᾱ_t z_0 + √(1 − ᾱ_t) ε, t, x̂)‖²

with ᾱ_t of diffusers' DDPMScheduler (1000 steps, linear β) and Adam.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from methods.common.moments import channel_std
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.sampler import NUM_TRAIN_TIMESTEPS


def forecast_pairs(model, truth: torch.Tensor, lead_steps: int, stride: int,
                   batch_size: int = 16, progress: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecasts x̂ (N, C, H, W) of ``lead_steps`` model steps and the truth indices (N,), all
    held in memory: the reference the cached samples of ``training_increments`` reproduce
    (tests/test_diffda_samples.py); fit no longer calls it.

    Args:
        model: a ForecastModel (``history`` frames in, ``rollout(frames, n)``).
        truth: (T, C, H, W) normalised training-period trajectory.
        lead_steps: the lead L in model steps (6 h each).
        stride: frames between starts.
    Returns:
        forecasts (N, C, H, W) float32 on the CPU, and ``target`` (N,) long: truth[target[k]] is
        the state forecasts[k] predicts.
    """
    history = model.history
    starts = list(range(history - 1, truth.shape[0] - lead_steps, stride))
    if not starts:
        raise ValueError(f"the training period has {truth.shape[0]} frames: too few for "
                         f"{lead_steps}-step forecasts from {history} frames")
    out = []
    for k in tqdm(range(0, len(starts), batch_size), desc=f"DiffDA: {6 * lead_steps} h forecasts",
                  disable=not progress, leave=False):
        chunk = starts[k:k + batch_size]
        frames = torch.stack([truth[i - history + 1:i + 1] for i in chunk])
        with torch.no_grad():
            forecast = model.rollout(frames.to(model.device), lead_steps)[:, -1]
        out.append(forecast.float().cpu())
    return torch.cat(out), torch.tensor(starts) + lead_steps


class IncrementPairs:
    """(forecast, increment) training pairs from increments d (N, C, H, W) = truth − forecast,
    which may be a memory map, and the truth they are relative to: pair k is
    (x̂_k, d_k) with x̂_k = truth[target[k]] − d_k (normalised units, float32).

    Args:
        increments: d (N, C, H, W); with ``sign`` = −1 the stored array holds −d (known_prior:
            ε with x̂ = x_t + ε, so d = −ε).
        truth: (T, C, H, W) float32 training truth; target: (N,) long indices into it.
    Memory: only ``batch``'s rows of ``increments`` are read (and copied) per call.
    """

    def __init__(self, increments: torch.Tensor, truth: torch.Tensor, target: torch.Tensor,
                 sign: float = 1.0):
        if increments.shape[0] != target.shape[0] or increments.shape[1:] != truth.shape[1:]:
            raise ValueError(f"{tuple(increments.shape)} increments do not match "
                             f"{tuple(target.shape)} targets into {tuple(truth.shape)} truth")
        self.increments, self.truth, self.target, self.sign = increments, truth, target, sign

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def batch(self, pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂ (B, C, H, W), d (B, C, H, W)) of the pairs ``pick`` (B,) long."""
        d = self.increments[pick].to(torch.float32)
        if self.sign < 0:
            d = -d
        return self.truth[self.target[pick]] - d, d

    def scale(self) -> torch.Tensor:
        """s (C,) float32: per-channel std of d (channel_std, float64 sums), at least 1e-6."""
        return channel_std(self.increments).to(torch.float32).clamp_min(1e-6)


def sample_pairs(ctx, truth: torch.Tensor, kind: str, **settings) -> IncrementPairs:
    """The pairs of ``ctx.samples(kind, **settings)`` (cached, memory-mapped), a kind whose
    samples are d = truth − forecast (truth_minus_forecast, cycled_background), and the truth
    frame of each from ``ctx.sample_targets``. ``truth`` (T, C, H, W): ``ctx.train_truth()``."""
    if ctx.sample_targets is None:
        raise ValueError("DiffDA trains on (forecast, truth) pairs and needs the training "
                         "context's sample_targets (the truth frame of each sample)")
    increments = ctx.samples(kind, **settings)
    target = torch.as_tensor(ctx.sample_targets(kind, **settings))
    return IncrementPairs(increments, truth, target)


def training_increments(ctx, truth: torch.Tensor, lead_hours: int, stride: int
                        ) -> IncrementPairs:
    """The pairs of lead ``lead_hours``: the truth − forecast samples of every ``stride``-th
    start of the whole training period (``days`` = 0: forecast_pairs' starts whatever the
    period's length; the default 365-day window's cache entry where the period is at most
    365 days)."""
    return sample_pairs(ctx, truth, "truth_minus_forecast", lead_hours=lead_hours,
                        start_stride=stride, days=0)


def cycled_pairs(ctx, truth: torch.Tensor, stride: int, cycling: dict) -> IncrementPairs:
    """The pairs (x_b, d = x_true − x_b) of every ``stride``-th 6 h background of the cycle
    ``cycling`` (method, density) through the whole training period (the cycled_background
    kind)."""
    return sample_pairs(ctx, truth, "cycled_background", start_stride=stride, days=0, **cycling)


def train_denoiser(
    denoiser: ConditionalDenoiser,
    pairs: IncrementPairs,
    scale: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
    desc: str = "DiffDA: training",
) -> list[float]:
    """Train ``denoiser`` in place with the ε-prediction loss; deterministic for a seed.

    Args:
        pairs: the (x̂, d = truth − x̂) pairs (normalised), gathered a mini-batch at a time.
        scale: s (C,), the per-channel increment std (z_0 = d / s).
        steps: optimiser steps, each on a random mini-batch of ``batch_size`` pairs.
    Returns:
        the loss of every step.
    """
    device = next(denoiser.parameters()).device
    scheduler = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    optimiser = torch.optim.Adam(denoiser.parameters(), lr=lr)
    # cosine decay to 10 % of lr: a short training ends in a quieter minimum
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.1 + 0.45 * (1 + math.cos(math.pi * k / steps)))
    inv_scale = (1.0 / scale).to(device=device, dtype=torch.float32)[None, :, None, None]
    n = len(pairs)
    losses: list[float] = []
    denoiser.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        pick = torch.randint(0, n, (batch_size,), generator=generator)
        x_hat, d = pairs.batch(pick)
        x_hat = x_hat.to(device)
        z_0 = d.to(device) * inv_scale
        noise = torch.randn(z_0.shape, generator=generator).to(device)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch_size,), generator=generator).to(device)
        z_t = scheduler.add_noise(z_0, noise, t)
        loss = (denoiser(z_t, t, x_hat) - noise).square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    denoiser.eval()
    return losses
