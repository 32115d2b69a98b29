"""DiffDA's analysis: RePaint-style sampling with the soft observation mask (method.py's
docstring has the method; sampler.py the loop; mask.py the mask and the spread increments).

Ensemble DiffDA (both off by default): ``samples_per_analysis`` = K draws K
samples z_0^(k) ~ p_θ(z_0 | x_b, observations) and analyses with their mean,
x_a = x_b + s ⊙ (1/K) Σ_k z_0^(k) (one sample's expected squared error is twice the posterior
variance; the K-mean's is (1 + 1/K) times it). ``members`` = N > 0 makes DiffDA an ensemble
method: the harness forecasts each member; member n is one sample conditioned on its own
background, x_a^(n) = x_b^(n) + s ⊙ z_0^(n) (d against x_b^(n)), and x_a = (1/N) Σ_n x_a^(n).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from methods.base import Analyser, Analysis, Background, Kernel, Observations
from methods.common.neighbours import SphereTree
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.mask import soft_mask_and_values
from methods.diffda.sampler import make_scheduler, repaint_sample

if TYPE_CHECKING:
    from methods.diffda.method import DiffDA


class DiffDAAnalyser(Analyser):
    """Trained DiffDA denoisers on one device.

    Attributes:
        method: the DiffDA (sampling and mask settings, seed).
        models: {lead hours: (ε_θ, s (C,) float32)} on the analysis device.
        lat, lon: (H,), (W,) grid coordinates in degrees (for the mask).
        grid: SphereTree of the grid points (the mask's neighbour search), built once.
        shape: (C, H, W) the denoisers were trained on.
        training: {"losses": {lead: per-step loss}, "train_seconds"}.
    """

    def __init__(self, method: DiffDA, models: dict[int, tuple[ConditionalDenoiser,
                                                                torch.Tensor]],
                 lat, lon, shape: tuple[int, int, int], training: dict):
        self.method, self.models, self.shape, self.training = method, models, shape, training
        self.lat = np.asarray(lat, dtype=np.float64)
        self.lon = np.asarray(lon, dtype=np.float64)
        self.grid = SphereTree(np.repeat(self.lat, self.lon.size),
                               np.tile(self.lon, self.lat.size))

    def denoiser(self, lead_hours: int) -> tuple[ConditionalDenoiser, torch.Tensor]:
        """(ε_θ, s (C,)) of the model whose lead is nearest ``lead_hours`` (shorter on ties)."""
        return self.models[self.method.lead_for(lead_hours)]

    def observed_increments(self, background: Background, obs: Observations,
                            x_b: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft mask m and spread scaled increments x_0^known, each (C, H, W) float32, of the
        observations against ``x_b`` (C, H, W) (default ``background.x_b``; ensemble DiffDA
        passes each member's background)."""
        m = self.method
        denoiser, scale = self.denoiser(background.lead_hours)
        x_b = (background.x_b if x_b is None else x_b).to(device=scale.device,
                                                          dtype=torch.float32)
        obs = obs.to(scale.device)
        # d_n = (y_n − H(x_b)_n) / s_{c_n}: the observed increment in the diffused variable
        d = (obs.values.to(torch.float32) - obs.operator(x_b)) / scale[obs.channel]
        return soft_mask_and_values(obs, d, self.lat, self.lon, m.mask_sigma, m.mask_cutoff,
                                    grid_tree=self.grid)

    def conditions(self, background: Background) -> tuple[torch.Tensor, list[int]]:
        """The B backgrounds x_b^(b) (B, C, H, W) the samples are conditioned on and the seed
        of each sample's generator: K copies of x_b, seeds from (seed, cycle) for the first
        (so K = 1 is the deterministic DiffDA) and (seed, cycle, k) for k ≥ 1; or, with
        ``members`` = N > 0, the N member backgrounds, seeds from (seed, cycle, n)."""
        m = self.method
        if m.members:
            if background.members is None or background.members.shape[0] != m.members:
                got = None if background.members is None else background.members.shape[0]
                raise ValueError(f"DiffDA with members = {m.members} needs Background.members "
                                 f"of {m.members} members, got {got}")
            x_bs = background.member_backgrounds
            keys = [[m.seed, background.cycle, n] for n in range(m.members)]
        else:
            x_bs = background.x_b[None].expand(m.samples_per_analysis, *self.shape)
            keys = [[m.seed, background.cycle] + ([k] if k else [])
                    for k in range(m.samples_per_analysis)]
        if tuple(x_bs.shape[1:]) != self.shape:
            raise ValueError(f"the member backgrounds are {tuple(x_bs.shape[1:])}, not the "
                             f"(C, H, W) = {self.shape} DiffDA was trained on")
        return x_bs, [int(np.random.SeedSequence(k).generate_state(1)[0]) for k in keys]

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a = x_b + s ⊙ z_0, z_0 sampled by the RePaint-style loop with the soft mask;
        ensemble DiffDA (method.py) draws B samples in one batch of the loop:

            K = samples_per_analysis:  z_0^(k) ~ p_θ(z | x̂ = x_b, y), k = 1..K,
                                       x_a = x_b + s ⊙ (1/K) Σ_k z_0^(k)
            N = members > 0:           z_0^(n) ~ p_θ(z | x̂ = x_b^(n), y), d against x_b^(n),
                                       x_a^(n) = x_b^(n) + s ⊙ z_0^(n),  x_a = (1/N) Σ_n x_a^(n)

        Notation (code → Huang et al. 2024 / RePaint):
            background.x_b   x̂ = x_b, the forecast the denoiser is conditioned on (C, H, W)
            x_bs             the B = K or N backgrounds of the samples (B, C, H, W)
            scale            s (C,): per-channel std of truth − forecast in training
            d                observed increments (y − H x_b) / s at the observations (N,)
            known            x_0^known: d spread to the grid (mask.py) (B, C, H, W)
            mask             m: soft mask, max_n exp(−d_n² / (2σ²)) per channel (B, C, H, W)
            z0               z_0 ~ p_θ(z | x̂, observations): the denoised scaled increments
                             (B, C, H, W)
            steps, jump_length, resamples    T (inference steps), j, r of RePaint

        Returns:
            Analysis: x_a (C, H, W), same dtype and device as ``background.x_b``, and with
            members > 0 the members x_a^(n) (N, C, H, W); each sample's generator is seeded
            as in ``conditions``. Diagnostics ``evaluations`` (= ``denoiser_calls``: all
            denoiser evaluations, B per batched call), ``iterations`` (= ``sampling_steps``,
            reverse steps), ``undo_steps`` (re-noising), ``model_lead_hours`` (the denoiser
            used), ``mask_mean`` (the observed fraction) and, with K > 1 or N > 0,
            ``sample_spread``: the mean over channels and grid points (latitude-unweighted)
            of the std over the B samples of x_a^(b) (normalised units).
        """
        m = self.method
        x_b = background.x_b
        if tuple(x_b.shape) != self.shape or tuple(obs.grid_shape) != self.shape:
            raise ValueError(f"x_b {tuple(x_b.shape)} or the observations' grid "
                             f"{tuple(obs.grid_shape)} differ from the (C, H, W) = {self.shape} "
                             "DiffDA was trained on; fit and load with this world's spec")
        denoiser, scale = self.denoiser(background.lead_hours)
        device = scale.device
        x_bs, seeds = self.conditions(background)
        x_bs = x_bs.to(device, torch.float32)
        if m.members:  # d against each member's background
            pairs = [self.observed_increments(background, obs, x) for x in x_bs]
        else:  # the same x_b for all K samples
            pairs = [self.observed_increments(background, obs)] * len(seeds)
        mask = torch.stack([p[0] for p in pairs])
        known = torch.stack([p[1] for p in pairs])
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        with torch.no_grad():
            z0, stats = repaint_sample(
                denoiser, make_scheduler(m.eta), x_bs, known, mask, steps=m.steps,
                jump_length=m.jump_length, resamples=m.resamples,
                generator=generators if len(generators) > 1 else generators[0])
            x_as = x_bs + scale[:, None, None] * z0  # x_a^(b) = x_b^(b) + s ⊙ z_0^(b)
            if m.members:
                x_a = x_as.mean(dim=0)
            elif len(seeds) == 1:  # today's deterministic analysis, bit for bit
                x_a = x_bs[0] + scale[:, None, None] * z0[0]
            else:  # x_b + s ⊙ mean_k z_0^(k)
                x_a = x_bs[0] + scale[:, None, None] * z0.mean(dim=0)
        calls = float(stats.denoiser_calls * len(seeds))
        diagnostics = {
            "evaluations": calls, "iterations": float(stats.steps), "denoiser_calls": calls,
            "sampling_steps": float(stats.steps), "undo_steps": float(stats.undo_steps),
            "model_lead_hours": float(m.lead_for(background.lead_hours)),
            "mask_mean": float(mask.mean())}
        if m.samples_per_analysis > 1 or m.members:
            diagnostics["sample_spread"] = (float(x_as.std(dim=0).mean()) if len(seeds) > 1
                                            else 0.0)
        members = x_as.to(dtype=x_b.dtype, device=x_b.device) if m.members else None
        return Analysis(x_a.to(dtype=x_b.dtype, device=x_b.device), members=members,
                        diagnostics=diagnostics)

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """One denoiser call (of the lead the analysis uses) at t = 500."""
        denoiser, scale = self.denoiser(background.lead_hours)
        device = scale.device
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1, *self.shape, generator=g).to(device)
        x_hat = background.x_b[None].to(device, torch.float32)
        t = torch.full((1,), 500, dtype=torch.long, device=device)

        def call():
            with torch.no_grad():
                return denoiser(z, t, x_hat)

        return Kernel("one denoiser call", call, "FLOP", "float32")
