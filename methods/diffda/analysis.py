"""DiffDA's analysis: RePaint-style sampling with the soft observation mask (method.py's
docstring has the method; sampler.py the loop; mask.py the mask and the spread increments)."""

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

    def observed_increments(self, background: Background, obs: Observations
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft mask m and spread scaled increments x_0^known, each (C, H, W) float32."""
        m = self.method
        denoiser, scale = self.denoiser(background.lead_hours)
        x_b = background.x_b.to(device=scale.device, dtype=torch.float32)
        obs = obs.to(scale.device)
        # d_n = (y_n − H(x_b)_n) / s_{c_n}: the observed increment in the diffused variable
        d = (obs.values.to(torch.float32) - obs.operator(x_b)) / scale[obs.channel]
        return soft_mask_and_values(obs, d, self.lat, self.lon, m.mask_sigma, m.mask_cutoff,
                                    grid_tree=self.grid)

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a = x_b + s ⊙ z_0, z_0 sampled by the RePaint-style loop with the soft mask.

        Notation (code → Huang et al. 2024 / RePaint):
            background.x_b   x̂ = x_b, the forecast the denoiser is conditioned on (C, H, W)
            scale            s (C,): per-channel std of truth − forecast in training
            d                observed increments (y − H x_b) / s at the observations (N,)
            known            x_0^known: d spread to the grid (mask.py) (C, H, W)
            mask             m: soft mask, max_n exp(−d_n² / (2σ²)) per channel (C, H, W)
            z0               z_0 ~ p_θ(z | x̂, observations): the denoised scaled increment
            steps, jump_length, resamples    T (inference steps), j, r of RePaint

        Returns:
            Analysis: x_a (C, H, W), same dtype and device as ``background.x_b``; the sampling
            generator is seeded from (method seed, cycle). Diagnostics ``evaluations``
            (= ``denoiser_calls``), ``iterations`` (= ``sampling_steps``, reverse steps),
            ``undo_steps`` (re-noising), ``model_lead_hours`` (the denoiser used) and
            ``mask_mean`` (the observed fraction).
        """
        m = self.method
        x_b = background.x_b
        if tuple(x_b.shape) != self.shape or tuple(obs.grid_shape) != self.shape:
            raise ValueError(f"x_b {tuple(x_b.shape)} or the observations' grid "
                             f"{tuple(obs.grid_shape)} differ from the (C, H, W) = {self.shape} "
                             "DiffDA was trained on; fit and load with this world's spec")
        denoiser, scale = self.denoiser(background.lead_hours)
        device = scale.device
        mask, known = self.observed_increments(background, obs)
        seed = int(np.random.SeedSequence([m.seed, background.cycle]).generate_state(1)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            z0, stats = repaint_sample(
                denoiser, make_scheduler(m.eta), x_b.to(device, torch.float32), known, mask,
                steps=m.steps, jump_length=m.jump_length, resamples=m.resamples,
                generator=generator)
            x_a = x_b.to(device, torch.float32) + scale[:, None, None] * z0
        return Analysis(x_a.to(dtype=x_b.dtype, device=x_b.device), diagnostics={
            "evaluations": float(stats.denoiser_calls), "iterations": float(stats.steps),
            "denoiser_calls": float(stats.denoiser_calls), "sampling_steps": float(stats.steps),
            "undo_steps": float(stats.undo_steps),
            "model_lead_hours": float(m.lead_for(background.lead_hours)),
            "mask_mean": float(mask.mean())})

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
