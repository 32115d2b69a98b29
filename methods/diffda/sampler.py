"""DiffDA's sampling loop: RePaint-style observation injection with resampling.

The loop is written here (diffusers' philosophy: the user owns the loop; the denoiser and the
scheduler stay independent). The scheduler is diffusers' ``RePaintScheduler`` (Lugmayr et al.
2022), configured like DiffDA's DDPM: 1000 training steps, linear β, η = 1 (DDPM ancestral
steps), no clipping of the predicted clean sample (increments are not in [−1, 1]).

Notation (code → RePaint / DiffDA symbols):
    z                 x_t, the current samples (scaled increments), (B, C, H, W)
    known             x_0^known, the observed scaled increment spread to the grid (B, C, H, W)
    mask              m, DiffDA's soft mask (B, C, H, W) in [0, 1] (1 at observed points)
    condition         x̂, the normalised forecast the denoiser is conditioned on (B, C, H, W)
    B                 samples drawn together (1 for a single (C, H, W) sample; ensemble DiffDA:
                      K samples of one x̂, or one sample per member's x̂), one generator each
    alphas_cumprod    ᾱ_t;  n = 1000 / steps is the stride between inference timesteps
    jump_length       j (RePaint "jump length");  resamples: r (RePaint "jump_n_sample")

Per inference timestep t (RePaint Algorithm 1, Lugmayr et al. 2022):
    1. ε̂ = ε_θ(x_t, t, x̂)                                          (one denoiser call)
    2. x_{t−1}^unknown ~ p_θ(x_{t−1} | x_t)                          (DDPM reverse step, eq. 8b)
    3. x_{t−1}^known = √ᾱ_{t−1} x_0^known + √(1 − ᾱ_{t−1}) ε          (eq. 8a)
    4. x_{t−1} = m ⊙ x_{t−1}^known + (1 − m) ⊙ x_{t−1}^unknown       (eq. 9; soft m in DiffDA)
Steps 2–4 are ``RePaintScheduler.step``: it writes step 2 in DDIM's form (Song et al. 2021,
eq. 12; η = 1 gives DDPM's posterior variance) and draws one ε for both 2. and 3. Every j
steps the sample is sent back up j steps, r − 1 times (resampling, RePaint §4.2), by forward
diffusion
    5. x_t = √(1 − β_t) x_{t−1} + √β_t ε    over the n training steps between the two levels
(``RePaintScheduler.undo_step``). Cost: about steps + (r − 1)·(steps − j) denoiser calls.

diffusers' RePaintPipeline calls ``undo_step(x, t_last)``, which applies β_{t_last},
…, β_{t_last+n−1} to a sample at level t_last − n; we pass t_last − n + 1 so the n β's are
exactly those between the two levels (from the clean sample, t_last = 0, it is β_0…β_{n−1}:
off by at most n − 1 of the smallest β's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from diffusers import RePaintScheduler

#: DiffDA's diffusion: 1000 training steps, linear β from 1e-4 to 0.02 (DDPM defaults).
NUM_TRAIN_TIMESTEPS = 1000


def make_scheduler(eta: float = 1.0) -> RePaintScheduler:
    """The RePaint scheduler for DiffDA's training diffusion (η = 1: DDPM reverse steps)."""
    return RePaintScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear",
                            eta=eta, clip_sample=False)


@dataclasses.dataclass
class SamplingStats:
    """What one sampling run did: ``denoiser_calls`` (ε_θ evaluations), ``steps`` (reverse
    steps, = calls), ``undo_steps`` (forward re-noising steps of the resampling jumps)."""

    denoiser_calls: int
    steps: int
    undo_steps: int


def repaint_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: RePaintScheduler,
    condition: torch.Tensor,
    known: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    jump_length: int,
    resamples: int,
    generator: torch.Generator | list[torch.Generator],
) -> tuple[torch.Tensor, SamplingStats]:
    """One sample of the scaled increment given the forecast and the observations, or a batch
    of B independent samples (each with its own x̂, x_0^known, m and generator).

    Args:
        denoiser: ε_θ(z_t (B, C, H, W), t (B,) long, x̂ (B, C, H, W)) -> (B, C, H, W).
        scheduler: a RePaintScheduler (see ``make_scheduler``); its timesteps are reset here.
        condition: x̂ (C, H, W) or (B, C, H, W), the normalised forecast(s).
        known: x_0^known, observed scaled increments spread to the grid, shaped as condition.
        mask: m in [0, 1], shaped as condition; all zeros gives an unconditional sample of
            p(z | x̂).
        steps: inference steps (≤ 1000); jump_length: j; resamples: r (1 = no resampling).
        generator: the only source of randomness (initial noise, DDPM noise, re-noising): one
            generator, or a list of B, sample b drawing all its noise from the b-th (diffusers'
            randn_tensor), so that a sample does not depend on the others in its batch.

    Returns:
        (z_0 (C, H, W) or (B, C, H, W) as condition, SamplingStats); the stats count the
        loop's batched calls (B samples each).
    """
    if not 1 <= jump_length <= steps or resamples < 1:
        raise ValueError(f"need 1 ≤ jump_length ≤ steps and resamples ≥ 1, got steps={steps}, "
                         f"jump_length={jump_length}, resamples={resamples}")
    device, dtype = condition.device, condition.dtype
    scheduler.set_timesteps(steps, jump_length=jump_length, jump_n_sample=resamples,
                            device=device)
    stride = NUM_TRAIN_TIMESTEPS // scheduler.num_inference_steps  # n
    batched = condition.ndim == 4
    if not batched:
        condition, known, mask = condition[None], known[None], mask[None]
    x_hat, x_known, m = condition, known.to(dtype), mask.to(dtype)
    batch = x_hat.shape[0]
    if isinstance(generator, list):
        if len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch} samples")
        if batch == 1:
            generator = generator[0]
    if isinstance(generator, list):  # x_T, each sample from its own generator
        z = torch.cat([torch.randn((1, *x_hat.shape[1:]), generator=g, device=device,
                                   dtype=dtype) for g in generator])
    else:
        z = torch.randn(x_hat.shape, generator=generator, device=device, dtype=dtype)  # x_T
    calls = undos = 0
    t_last = int(scheduler.timesteps[0]) + 1
    for t in scheduler.timesteps.tolist():
        if t < t_last:
            t_batch = torch.full((batch,), t, device=device, dtype=torch.long)
            eps = denoiser(z, t_batch, x_hat)  # 1.
            z = scheduler.step(eps, t, z, x_known, m, generator=generator).prev_sample  # 2.–4.
            calls += 1
        else:
            z = scheduler.undo_step(z, max(t_last - stride + 1, 0), generator=generator)  # 5.
            undos += 1
        t_last = t
    stats = SamplingStats(denoiser_calls=calls, steps=calls, undo_steps=undos)
    return (z if batched else z[0]), stats
