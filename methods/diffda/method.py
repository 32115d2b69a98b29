"""DiffDA (Huang et al., "DiffDA: a diffusion model for weather-scale data assimilation",
ICML 2024, arXiv:2401.05932).

A denoising diffusion model of the forecast's error, conditioned on the forecast, turned into an
assimilation method by inpainting: the observed increments are injected at every reverse step
with a soft mask (RePaint-style, with resampling). Per analysis, with s (C,) the per-channel std
of the training increments and ε_θ the denoiser (methods/diffda/denoiser.py),

    z_0 ~ p_θ(z_0 | x̂ = x_b, observations)      (methods/diffda/sampler.py)
    x_a = x_b + s ⊙ z_0.

One denoiser per forecast lead (their code trains one on 48 h forecasts for the first cycles and
one on 6 h forecasts for the rest): ``leads_hours`` lists them; an analysis uses the one whose
lead is nearest to ``background.lead_hours`` (the shorter on a tie).

Deviations from their setup, all documented where they happen: a diffusers UNet2DModel instead
of their GraphCast-style network (circular padding in longitude, denoiser.py); the observed
increments are spread by a kernel-weighted mean instead of kriging (mask.py); the observations'
error std is not used (as in DiffDA, the data are injected as if exact, softened only by the
mask). The sampling is stochastic but reproducible: the generator is seeded from (seed, cycle).

The mask's width is the one default that departs from their code (σ = 3 grid spacings, theirs
1.5), chosen on the validation period, never on the test period: 15-day cycles at 5 % density,
mean over channels of the analysis RMSE in climatological std after spin-up (no assimilation
0.750): σ = 1.5 → 0.824, 2 → 0.659, 3 → 0.614, 4 → 0.617. The wider kernel spreads each observed
increment over the gaps between observations (mean spacing ≈ 4.5 grid lengths at 5 %), where the
denoiser alone adds error: trained on 6 h errors from the truth (per-channel std s, median 0.068
climatological std), it has learnt little of the error's dependence on the forecast (without
observations the mean of 4 samples correlated 0.01 with the error, measured on the earlier
emulator), and a single sample's expected squared error is twice the posterior variance. At 1 %
and 0.5 % the cycles diverge whatever the σ tried (validation: σ = 1.5 and 3 at 1 % and σ = 3 at
0.5 % all diverge by cycle 35; projecting each increment on the emulator's T31 does not change
that, so the growth is not grid-scale noise). The errors grow in every variable, most in v: at
cycle 34 (1 %, σ = 3) v errors are 3.0–3.5 climatological std at every level, with area-mean
biases up to 1.2 std (v100, v50). The injection puts in a net meridional flow (4 validation
cases, 6 h denoiser: without observations the area-mean v increment is at most 0.006 std; with 5
% observations on 48 h backgrounds −0.02 to −0.05 std where the true error's is about −0.01),
but that bias is a symptom, not the cause: removing each analysis's area-mean v increment
removes the bias and the cycles diverge as before (v, u and q500 at ≈ 3 std by cycle 34). The
cause is not yet known. Their σ is ``--set diffda.mask_sigma=1.5``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from methods.base import Assimilator, Background, Observations, TrainingContext
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.mask import soft_mask_and_values
from methods.diffda.sampler import make_scheduler, repaint_sample
from methods.diffda.train import forecast_pairs, train_denoiser

#: The file in ctx.cache_dir holding the trained denoisers and their scales.
CACHE_FILE = "diffda.pt"
#: Hours per forecast-model step.
STEP_HOURS = 6


@dataclasses.dataclass(frozen=True)
class DiffDA(Assimilator):
    """Assimilation by conditional diffusion with RePaint-style observation injection.

    Attributes (network and training; all are part of the cache key):
        leads_hours: forecast leads (multiples of 6 h) with one denoiser each; (6, 48) as in
            their code (48 h for the time-lagged first cycle, 6 h for the cycles after).
        block_out_channels: UNet widths per level, finest first (len − 1 down-samplings).
            (32, 64, 128) at 69 × 32 × 64: 2.6 M parameters, ≈ 30 ms per call on 1 CPU thread.
        layers_per_block: ResNet layers per UNet block.
        lon_pad: columns of circular longitude padding on each side (denoiser.py).
        skip_parametrisation: ε̂ = √(1−ᾱ_t) z_t + √ᾱ_t F_θ (True, stable with short training;
            denoiser.py) or the UNet's output as ε̂ (False, a plain ε-network as in DiffDA).
        train_steps, batch_size, lr: Adam steps per lead (cosine decay to lr/10), mini-batch
            size and peak learning rate. At 69 × 32 × 64 the defaults (2 leads × 600 steps,
            with the training forecasts) took 840 s of CPU time on one thread (29.8 min wall
            on a 2-core machine shared with three other jobs; peak RSS 8.4 GB).
        start_stride: frames between the starts of the training forecasts (2 = every 12 h:
            ≈ 730 pairs per lead from a year).
    Attributes (analysis):
        steps: reverse-diffusion steps (≤ 1000; their code: 300).
        jump_length, resamples: RePaint's jump length j and number of resamplings r (1 = no
            resampling; their code: 10 and 10). Denoiser calls ≈ steps + (r − 1)(steps − j).
            The default 40 / 5 / 2 (75 calls) is the ≤ 5 s setting at 69 × 32 × 64: 3.9–4.7 s
            per analysis on one thread of a shared 2-core CPU (load average 3.4; 50–60 ms per
            call; 50 / 5 / 2 took 5.0–6.7 s). ``paper_sampling()`` gives their 300 / 10 / 10
            (2,910 calls): 130 s per analysis on the same machine.
        eta: η of the DDIM-form step in RePaintScheduler (1 = DDPM ancestral steps, RePaint).
        mask_sigma: σ of the soft mask's Gaussian kernel in grid spacings (1.5 in their code;
            3 chosen on the validation period, see the module docstring).
        mask_cutoff: the kernel (mask and spreading) is 0 beyond mask_cutoff · σ.
    """

    leads_hours: tuple[int, ...] = (6, 48)
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    lon_pad: int = 4
    skip_parametrisation: bool = True
    train_steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    start_stride: int = 2
    steps: int = 40
    jump_length: int = 5
    resamples: int = 2
    eta: float = 1.0
    mask_sigma: float = 3.0
    mask_cutoff: float = 3.0

    trains = True
    analysis_fields = ("steps", "jump_length", "resamples", "eta", "mask_sigma", "mask_cutoff")

    def __post_init__(self):
        # a config read back from JSON holds lists; keep the fields hashable and comparable
        for name in ("leads_hours", "block_out_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        checks = (
            ("leads_hours", len(self.leads_hours) >= 1 and len(set(self.leads_hours)) ==
             len(self.leads_hours) and all(v > 0 and v % STEP_HOURS == 0
                                           for v in self.leads_hours),
             f"distinct positive multiples of {STEP_HOURS} h"),
            ("block_out_channels", len(self.block_out_channels) >= 1 and
             min(self.block_out_channels) >= 1, "positive integers"),
            ("layers_per_block", self.layers_per_block >= 1, "an integer ≥ 1"),
            ("lon_pad", self.lon_pad >= 0, "an integer ≥ 0"),
            ("train_steps", self.train_steps >= 1, "an integer ≥ 1"),
            ("batch_size", self.batch_size >= 1, "an integer ≥ 1"),
            ("lr", self.lr > 0, "> 0"),
            ("start_stride", self.start_stride >= 1, "an integer ≥ 1"),
            ("steps", 1 <= self.steps <= 1000, "in [1, 1000]"),
            ("jump_length", 1 <= self.jump_length <= self.steps, "in [1, steps]"),
            ("resamples", self.resamples >= 1, "an integer ≥ 1 (1 = no resampling)"),
            ("eta", 0 <= self.eta <= 1, "in [0, 1] (1 = DDPM)"),
            ("mask_sigma", self.mask_sigma > 0, "> 0 grid spacings"),
            ("mask_cutoff", self.mask_cutoff > 0, "> 0 kernel widths"),
        )
        self.check_fields(checks)

    @classmethod
    def for_tests(cls, **overrides) -> DiffDA:
        """A tiny configuration that trains and samples in about a second on small grids."""
        settings = dict(leads_hours=(6,), block_out_channels=(8, 16), train_steps=20,
                        batch_size=8, lr=2e-3, start_stride=1, steps=10, jump_length=5,
                        resamples=2)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def paper_sampling(cls, **overrides) -> DiffDA:
        """The sampling setting of their code: 300 steps, jump length 10, 10 resamplings."""
        settings = dict(steps=300, jump_length=10, resamples=10)
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------------------- training
    def prepare(self, ctx: TrainingContext) -> None:
        """Train one denoiser per lead on (truth, forecast) pairs of the training period, or
        reload them from ctx.cache_dir; remember the grid's coordinates for the mask."""
        path = Path(ctx.cache_dir) / CACHE_FILE
        shape = tuple(int(v) for v in ctx.spec.shape)
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        if saved is None or tuple(saved["shape"]) != shape or \
                tuple(saved["leads_hours"]) != self.leads_hours:
            saved = self._train(ctx, shape)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(saved, tmp)
            tmp.replace(path)  # atomic: a killed run never leaves half a file
        models = {}
        for lead, entry in zip(self.leads_hours, saved["models"], strict=True):
            denoiser = self._build(shape, seed=0)
            denoiser.load_state_dict(entry["state"])
            models[lead] = (denoiser, entry["scale"])
        self.set_denoisers(models, ctx.spec.lat, ctx.spec.lon, ctx.device, training={
            "losses": {lead: e["losses"] for lead, e in zip(self.leads_hours, saved["models"],
                                                            strict=True)},
            "train_seconds": saved["train_seconds"]})

    def set_denoisers(self, models: dict[int, tuple[ConditionalDenoiser, torch.Tensor]],
                      lat, lon, device: torch.device | str = "cpu",
                      training: dict | None = None) -> None:
        """Use ``models`` = {lead hours: (ε_θ, s (C,))} on the grid (lat (H,), lon (W,) in
        degrees) for the analysis: what prepare() does after training or loading; also the
        way to analyse with denoisers trained elsewhere, or random ones for timing."""
        if set(models) != set(self.leads_hours):
            raise ValueError(f"models has leads {sorted(models)} h; this DiffDA's leads_hours "
                             f"are {list(self.leads_hours)}")
        shapes = {tuple(d.shape) for d, _ in models.values()}
        if len(shapes) != 1:
            raise ValueError(f"the denoisers are for different (C, H, W): {sorted(shapes)}")
        (shape,) = shapes
        if (len(lat), len(lon)) != shape[1:]:
            raise ValueError(f"lat/lon give a {len(lat)}×{len(lon)} grid; the denoisers are "
                             f"for {shape[1]}×{shape[2]}")
        object.__setattr__(self, "_models", {
            lead: (d.to(device).eval().requires_grad_(False), s.to(device, torch.float32))
            for lead, (d, s) in models.items()})
        object.__setattr__(self, "_shape", shape)
        object.__setattr__(self, "_grid", (np.asarray(lat, dtype=np.float64),
                                           np.asarray(lon, dtype=np.float64)))
        object.__setattr__(self, "_training", training or {"losses": {}, "train_seconds": 0.0})
        object.__setattr__(self, "_diagnostics", {})

    def _train(self, ctx: TrainingContext, shape: tuple[int, int, int]) -> dict:
        start = time.perf_counter()
        truth = ctx.train_truth().to(torch.float32)
        entries = []
        for k, lead in enumerate(self.leads_hours):
            forecasts, target_index = forecast_pairs(
                ctx.model, truth, lead // STEP_HOURS, self.start_stride, progress=ctx.progress)
            targets = truth[target_index]
            # s: per-channel std of the training increments truth − forecast
            scale = (targets - forecasts).std(dim=(0, 2, 3)).clamp_min(1e-6)
            denoiser = self._build(shape, seed=ctx.seed + k).to(ctx.device)
            losses = train_denoiser(
                denoiser, forecasts, targets, scale, steps=self.train_steps,
                batch_size=self.batch_size, lr=self.lr, seed=ctx.seed + k,
                progress=ctx.progress, desc=f"DiffDA: training the {lead} h denoiser")
            entries.append({"state": {n: v.cpu() for n, v in denoiser.state_dict().items()},
                            "scale": scale, "losses": losses,
                            "n_pairs": int(forecasts.shape[0])})
            del forecasts, targets
        return {"shape": list(shape), "leads_hours": list(self.leads_hours), "models": entries,
                "train_seconds": time.perf_counter() - start}

    def _build(self, shape: tuple[int, int, int], seed: int) -> ConditionalDenoiser:
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            alphas = make_scheduler().alphas_cumprod if self.skip_parametrisation else None
            return ConditionalDenoiser(shape, self.block_out_channels, self.layers_per_block,
                                       self.lon_pad, alphas_cumprod=alphas)

    @property
    def training(self) -> dict:
        """{"losses": {lead: per-step loss}, "train_seconds"} of the trained denoisers."""
        self._require_prepared()
        return self._training

    def lead_for(self, lead_hours: int) -> int:
        """The trained lead nearest ``lead_hours`` (the shorter on a tie)."""
        return min(self.leads_hours, key=lambda v: (abs(v - lead_hours), v))

    def denoiser(self, lead_hours: int) -> tuple[ConditionalDenoiser, torch.Tensor]:
        """(ε_θ, s (C,)) of the model whose lead is nearest ``lead_hours`` (shorter on ties)."""
        self._require_prepared()
        return self._models[self.lead_for(lead_hours)]

    def _require_prepared(self) -> None:
        if getattr(self, "_models", None) is None:
            raise RuntimeError("DiffDA needs trained denoisers: call prepare(ctx) first")

    def diagnostics(self) -> dict[str, float]:
        """Of the last analysis: denoiser calls, reverse steps, re-noising (undo) steps, the
        lead of the denoiser used and the mean of the soft mask (the observed fraction)."""
        return dict(getattr(self, "_diagnostics", {}))

    # ------------------------------------------------------------------------------- analysis
    def observed_increments(self, background: Background, obs: Observations
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft mask m and spread scaled increments x_0^known, each (C, H, W) float32."""
        denoiser, scale = self.denoiser(background.lead_hours)
        x_b = background.x_b.to(device=scale.device, dtype=torch.float32)
        obs = obs.to(scale.device)
        # d_n = (y_n − H(x_b)_n) / s_{c_n}: the observed increment in the diffused variable
        d = (obs.values.to(torch.float32) - obs.operator(x_b)) / scale[obs.channel]
        lat, lon = self._grid
        return soft_mask_and_values(obs, d, lat, lon, self.mask_sigma, self.mask_cutoff)

    def analyse(self, background: Background, obs: Observations) -> torch.Tensor:
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
            (C, H, W) analysis, same dtype and device as ``background.x_b``.
        """
        self._require_prepared()
        x_b = background.x_b
        if tuple(x_b.shape) != self._shape or tuple(obs.grid_shape) != self._shape:
            raise ValueError(f"x_b {tuple(x_b.shape)} or the observations' grid "
                             f"{tuple(obs.grid_shape)} differ from the (C, H, W) = {self._shape} "
                             "DiffDA was trained on; prepare() with this world's context")
        denoiser, scale = self.denoiser(background.lead_hours)
        device = scale.device
        mask, known = self.observed_increments(background, obs)
        seed = int(np.random.SeedSequence([self.seed, background.cycle]).generate_state(1)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            z0, stats = repaint_sample(
                denoiser, make_scheduler(self.eta), x_b.to(device, torch.float32), known, mask,
                steps=self.steps, jump_length=self.jump_length, resamples=self.resamples,
                generator=generator)
            x_a = x_b.to(device, torch.float32) + scale[:, None, None] * z0
        object.__setattr__(self, "_diagnostics", {
            "denoiser_calls": float(stats.denoiser_calls), "sampling_steps": float(stats.steps),
            "undo_steps": float(stats.undo_steps),
            "model_lead_hours": float(self.lead_for(background.lead_hours)),
            "mask_mean": float(mask.mean())})
        return x_a.to(dtype=x_b.dtype, device=x_b.device)
