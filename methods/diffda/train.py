"""Training DiffDA's conditional denoiser: (truth, forecast) pairs and the ε-prediction loss.

Pairs come from the training period only: for each start i, the forecast x̂_i of lead L from
the frames (x_{i−1}, x_i) by the forecast model, and the truth x_{i+L} it should have been.
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

from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.sampler import NUM_TRAIN_TIMESTEPS


def forecast_pairs(model, truth: torch.Tensor, lead_steps: int, stride: int,
                   batch_size: int = 16, progress: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecasts x̂ (N, C, H, W) of ``lead_steps`` model steps and the truth indices (N,).

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


def train_denoiser(
    denoiser: ConditionalDenoiser,
    forecasts: torch.Tensor,
    targets: torch.Tensor,
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
        forecasts: x̂ (N, C, H, W) normalised; targets: the matching truths (N, C, H, W).
        scale: s (C,), the per-channel increment std (z_0 = (truth − x̂) / s).
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
    n = forecasts.shape[0]
    losses: list[float] = []
    denoiser.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        pick = torch.randint(0, n, (batch_size,), generator=generator)
        x_hat = forecasts[pick].to(device)
        z_0 = (targets[pick].to(device) - x_hat) * inv_scale
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
