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
Ensemble DiffDA (``samples_per_analysis``, ``members``): analysis.py's docstring.

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

The injection, not the prior, fails at 1 % (``denoiser="exact_gaussian"``: the exact E[ε | z_t]
of a spectrally diagonal Gaussian fitted to the same increments, exact_denoiser.py). With it the
15-day test cycles diverge at cycle 31 (learned ε_θ: 33) and give 0.663 at 5 % (learned 0.662).
Why (validation period, 48 h backgrounds, 1 %): RePaint re-applies the blend m ⊙ known +
(1 − m) ⊙ unknown at every reverse step, and where the prior passes the signal the unknown part
follows x_t, so it converges to the known value: m_eff ≈ 1 − (1 − m)^N (tests/test_diffda_exact.py).
The analysis increment is then the spread field v itself (slope 1.00 where m > 0.1, both
priors), a plateau out to 3σ around each observation: 45 % of the globe at 1 %, correlated 0.06
with the true error where 0.1 < m ≤ 0.5. One analysis raises the error (ratio 1.20; learned
1.19; v ⊙ m alone 1.05; the exact prior's own posterior mean 0.986), whatever the steps (100/5/5),
η (0) or sample count (K = 8). With σ = 0.5 (the prior spreads) the ratio is 1.016 and 15
validation days do not diverge (learned ε_θ: cycle 54) but are worse than none (0.971 vs
0.785; 3DVar 0.542); with K = 8 samples 0.792: one sample's noise was most of that gap, and
this univariate prior's own posterior mean gains only 1.4 % per analysis at 1 %.

Lifecycle: ``fit`` trains one denoiser per lead and returns their weights and scales
(``state_from`` builds the same dict from denoisers trained elsewhere); ``load`` rebuilds them
on the analysis device for the ``DiffDAAnalyser`` (analysis.py), which samples.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from bench.state import StateSpec
from methods.base import Assimilator, MemoryEstimate, TrainingContext
from methods.common import neighbours
from methods.common.cycled import CYCLED_DENSITY, CYCLED_METHOD, cycled_checks, cycled_settings
from methods.common.memory import activation_bytes, parameter_bytes
from methods.diffda import exact_denoiser as exact
from methods.diffda.analysis import DiffDAAnalyser
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.emulator_denoiser import EmulatorBackboneDenoiser, emulator_weights
from methods.diffda.sampler import make_scheduler
from methods.diffda.train import IncrementPairs, cycled_pairs, train_denoiser, training_increments

#: Hours per forecast-model step.
STEP_HOURS = 6
TRAINING_SAMPLES = ("forecast", "known_prior", "cycled_background")
DENOISERS = ("learned", "exact_gaussian", "emulator_backbone")
#: The per-channel scale s of ``untrained`` states (normalised units).
UNTRAINED_SCALE = 0.3


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
        training_samples: "forecast" (default: the (truth, forecast) pairs above) or
            "known_prior": pairs (x_t, x_t + ε_i), ε_i the first ``known_prior_count`` draws
            from the known B of bench/samples.py, x_t the training frames in turn (every
            ``start_stride``-th, wrapping), the same pairs for every lead (known-answer check),
            or "cycled_background": the 6 h denoiser learns from (x_b, x_true) of every
            ``start_stride``-th cycle of ``cycled_method`` at ``cycled_density`` through the
            training period (methods/common/cycled.py); other leads keep forecast pairs.
        known_prior_count, cycled_method, cycled_density: with "known_prior" /
            "cycled_background" only. ``keyed_when_set`` (out of the key at their defaults).
        denoiser: "learned" (default: the UNet ε_θ above), "exact_gaussian": no network; ε̂
            is the exact E[ε | z_t] of a spectrally diagonal Gaussian prior of z_0 fitted to
            the same training increments (λ per channel and total wavenumber;
            exact_denoiser.py), to separate the prior from the injection; or
            "emulator_backbone": the built-in emulator's encoder and residual blocks
            (``backbone_width`` × ``backbone_blocks``, emulator_denoiser.py), started from the
            trained emulator's weights with ``emulator_init`` (``--model emulator``). All
            ``keyed_when_set``.
        fit_version: always keyed; 2 (the only one computed): x̂ = x_t − d from the cached
            truth − forecast samples d (train.py), s from float64 sums; fits cached before it
            (in-memory forecasts) differ at float32 round-off, so their keys no longer match.
    Attributes (analysis):
        steps: reverse-diffusion steps (≤ 1000; their code: 300).
        jump_length, resamples: RePaint's jump length j and number of resamplings r (1 = no
            resampling; their code: 10 and 10). Denoiser calls ≈ steps + (r − 1)(steps − j).
            Default 20 / 5 / 1 (20 calls; 40 / 5 / 2, 75 calls, until 2026-11-30), chosen on
            15 validation days (results/speedups/README.md): 5 %: 0.6357 vs 0.6403, 0.84 vs
            3.2 s per analysis; 1 %: both diverge, at cycle 43 vs 30. ``paper_sampling()``
            gives their 300 / 10 / 10 (2,910 calls): 130 s per analysis.
        eta: η of the DDIM-form step in RePaintScheduler (1 = DDPM ancestral steps, RePaint).
        mask_sigma: σ of the soft mask's Gaussian kernel in grid spacings (1.5 in their code;
            3 chosen on the validation period, see the module docstring).
        mask_cutoff: the kernel (mask and spreading) is 0 beyond mask_cutoff · σ.
        samples_per_analysis: K ≥ 1 samples of z_0 per analysis, drawn in one batch (K × the
            denoiser cost and activations); x_a = x_b + s ⊙ mean_k z_0^(k). 1 (default) is the
            single-sample DiffDA; diagnostic ``sample_spread``: mean std over the K samples of
            x_a (normalised units). Must be 1 when members > 0.
        members: N ≥ 0 ensemble members (0, default: deterministic). N > 0: the harness hands
            ``Background.members`` (N, history, C, H, W) and gets ``Analysis.members``
            (N, C, H, W), one sample per member (conditioned on its background, generator
            seeded from (seed, cycle, n)); x_a is their mean. An analysis field, as LETKF's.
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
    training_samples: str = "forecast"
    known_prior_count: int = 363
    cycled_method: str = CYCLED_METHOD
    cycled_density: float = CYCLED_DENSITY
    denoiser: str = "learned"
    backbone_width: int = 64
    backbone_blocks: int = 4
    emulator_init: bool = True
    fit_version: int = 2
    steps: int = 20
    jump_length: int = 5
    resamples: int = 1
    eta: float = 1.0
    mask_sigma: float = 3.0
    mask_cutoff: float = 3.0
    samples_per_analysis: int = 1
    members: int = 0

    analysis_fields = ("steps", "jump_length", "resamples", "eta", "mask_sigma", "mask_cutoff",
                       "samples_per_analysis", "members")
    keyed_when_set = ("training_samples", "known_prior_count", "denoiser", "cycled_method",
                      "cycled_density", "backbone_width", "backbone_blocks", "emulator_init")
    #: ``python -m bench tune``'s grid: the observation mask's width (grid lengths) and the
    #: sampling steps.
    tuning_grid = {"mask_sigma": (0.5, 1.5, 3.0, 6.0), "steps": (20, 40)}

    def __post_init__(self):
        # tuples, so the method stays hashable (the harness turns JSON lists into tuples)
        for name in ("leads_hours", "block_out_channels"):
            self.check_fields([(name, isinstance(getattr(self, name), tuple),
                                "a tuple of integers")])
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
            ("training_samples", self.training_samples in TRAINING_SAMPLES,
             f"one of {TRAINING_SAMPLES}"),
            ("training_samples", self.training_samples != "cycled_background" or
             STEP_HOURS in self.leads_hours,
             f"a lead of {STEP_HOURS} h in leads_hours with cycled_background (the cycles' "
             "lead)"),
            *cycled_checks(self.cycled_method, self.cycled_density),
            ("known_prior_count", self.known_prior_count >= 1, "an integer ≥ 1"),
            ("denoiser", self.denoiser in DENOISERS, f"one of {DENOISERS}"),
            ("backbone_width", _integer(self.backbone_width) and self.backbone_width >= 1,
             "an integer ≥ 1 (the emulator's width)"),
            ("backbone_blocks", _integer(self.backbone_blocks) and self.backbone_blocks >= 1,
             "an integer ≥ 1 (the emulator's residual blocks)"),
            ("emulator_init", isinstance(self.emulator_init, bool), "true or false"),
            ("fit_version", self.fit_version == 2, "2 (earlier fits are not computed)"),
            ("steps", 1 <= self.steps <= 1000, "in [1, 1000]"),
            ("jump_length", 1 <= self.jump_length <= self.steps, "in [1, steps]"),
            ("resamples", self.resamples >= 1, "an integer ≥ 1 (1 = no resampling)"),
            ("eta", 0 <= self.eta <= 1, "in [0, 1] (1 = DDPM)"),
            ("mask_sigma", self.mask_sigma > 0, "> 0 grid spacings"),
            ("mask_cutoff", self.mask_cutoff > 0, "> 0 kernel widths"),
            ("samples_per_analysis", _integer(self.samples_per_analysis) and
             self.samples_per_analysis >= 1, "an integer ≥ 1"),
            ("members", _integer(self.members) and self.members >= 0,
             "an integer ≥ 0 (0 = deterministic)"),
            ("samples_per_analysis", self.members == 0 or self.samples_per_analysis == 1,
             "1 when members > 0 (each member is one sample)"),
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

    # ------------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> dict:
        """Train one denoiser per lead on (truth, forecast) pairs of the training period (on
        ctx.device; the k-th lead's weights and batches seeded by ctx.seed + k), served as the
        cached truth − forecast samples d (memory-mapped; train.training_increments).

        Returns:
            {"shape": [C, H, W], "leads_hours": [...], "models": [per lead: {"state": the
            denoiser's state_dict (CPU), "scale": s (C,), "losses": per step, "n_pairs"}],
            "train_seconds"}. With denoiser "exact_gaussian" each model is instead {"prior":
            exact_denoiser.fit_prior's dict, "scale", "losses": [], "n_pairs"} (no training).
        """
        start = time.perf_counter()
        shape = tuple(int(v) for v in ctx.spec.shape)
        # the training period, float32, held (as the emulator holds it); increments stay mapped
        truth = ctx.train_truth().to(torch.float32)
        entries = []
        for k, lead in enumerate(self.leads_hours):
            if self.training_samples == "known_prior":  # x̂ = x_t + ε_i, ε_i ~ N(0, B): d = −ε_i
                eps = ctx.samples("known_prior", count=self.known_prior_count)
                target_index = (torch.arange(eps.shape[0]) * self.start_stride) % truth.shape[0]
                pairs = IncrementPairs(eps, truth, target_index, sign=-1.0)
            elif self.training_samples == "cycled_background" and lead == STEP_HOURS:
                pairs = cycled_pairs(ctx, truth, self.start_stride,
                                     cycled_settings(self.cycled_method, self.cycled_density))
            else:  # d_i = x_{t_i} − x̂_i, the cached truth − forecast samples
                pairs = training_increments(ctx, truth, lead, self.start_stride)
            scale = pairs.scale()  # s: per-channel std of the training increments
            if self.denoiser == "exact_gaussian":  # no network: the Gaussian fitted to z_0
                entries.append(exact.fitted_entry(pairs.increments, scale, ctx.spec,
                                                  sign=pairs.sign))
                continue
            denoiser = self.network(shape, ctx.seed + k, ctx.spec.lat)
            if self.denoiser == "emulator_backbone" and self.emulator_init:
                denoiser.start_from(emulator_weights(ctx.model))
            denoiser = denoiser.to(ctx.device)
            losses = train_denoiser(
                denoiser, pairs, scale, steps=self.train_steps,
                batch_size=self.batch_size, lr=self.lr, seed=ctx.seed + k,
                progress=ctx.progress, desc=f"DiffDA: training the {lead} h denoiser")
            entries.append({"state": {n: v.cpu() for n, v in denoiser.state_dict().items()},
                            "scale": scale, "losses": losses, "n_pairs": len(pairs)})
            del pairs
        return {"shape": list(shape), "leads_hours": list(self.leads_hours), "models": entries,
                "train_seconds": time.perf_counter() - start}

    def state_from(self, models: dict[int, tuple[ConditionalDenoiser, torch.Tensor]],
                   train_seconds: float = 0.0) -> dict:
        """The state ``load`` takes, from ``models`` = {lead hours: (ε_θ, s (C,))} trained
        elsewhere (or random, for timing): fit's dict, without losses. Copies the weights."""
        if set(models) != set(self.leads_hours):
            raise ValueError(f"models has leads {sorted(models)} h; this DiffDA's leads_hours "
                             f"are {list(self.leads_hours)}")
        shapes = {tuple(d.shape) for d, _ in models.values()}
        if len(shapes) != 1:
            raise ValueError(f"the denoisers are for different (C, H, W): {sorted(shapes)}")
        (shape,) = shapes
        entries = []
        for lead in self.leads_hours:
            denoiser, scale = models[lead]
            scale = torch.as_tensor(scale)
            if tuple(scale.shape) != (shape[0],):
                raise ValueError(f"the {lead} h scale must have shape ({shape[0]},), got "
                                 f"{tuple(scale.shape)}")
            entries.append({"state": {n: v.detach().cpu().clone()
                                      for n, v in denoiser.state_dict().items()},
                            "scale": scale.detach().cpu().clone(), "losses": [], "n_pairs": 0})
        return {"shape": list(shape), "leads_hours": list(self.leads_hours), "models": entries,
                "train_seconds": float(train_seconds)}

    def load(self, state: dict, spec: StateSpec, device: torch.device | str) -> DiffDAAnalyser:
        """Rebuild each lead's denoiser from ``state`` on ``device`` (frozen, eval mode), with
        its scale s (float32) and the grid's coordinates for the mask."""
        shape = tuple(int(v) for v in state["shape"])
        if shape != tuple(spec.shape):
            raise ValueError(f"the denoisers are for (C, H, W) = {shape} (a {shape[1]}×"
                             f"{shape[2]} grid); the spec is {tuple(spec.shape)} (a "
                             f"{spec.shape[1]}×{spec.shape[2]} grid): fit on this world")
        if [int(v) for v in state["leads_hours"]] != list(self.leads_hours):
            raise ValueError(f"the state has leads {list(state['leads_hours'])} h; this "
                             f"DiffDA's leads_hours are {list(self.leads_hours)}")
        models = {}
        for lead, entry in zip(self.leads_hours, state["models"], strict=True):
            if ("prior" in entry) != (self.denoiser == "exact_gaussian"):
                raise ValueError(f"the state's {lead} h model is not a {self.denoiser} denoiser")
            if self.denoiser == "exact_gaussian":
                models[lead] = (exact.load_entry(entry, spec, device,
                                                 make_scheduler().alphas_cumprod),
                                torch.as_tensor(entry["scale"]).to(device, torch.float32))
                continue
            denoiser = self.network(shape, 0, spec.lat)
            denoiser.load_state_dict(entry["state"])
            models[lead] = (denoiser.to(device).eval().requires_grad_(False),
                            torch.as_tensor(entry["scale"]).to(device, torch.float32))
        training = {"losses": {lead: list(e["losses"]) for lead, e in
                               zip(self.leads_hours, state["models"], strict=True)},
                    "train_seconds": float(state["train_seconds"])}
        return DiffDAAnalyser(self, models, spec.lat, spec.lon, shape, training)

    def network(self, shape: tuple[int, int, int], seed: int, lat_deg=None) -> torch.nn.Module:
        """A fresh ε_θ for (C, H, W), weights seeded by ``seed``; ``lat_deg`` (H,): latitudes."""
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            alphas = make_scheduler().alphas_cumprod if self.skip_parametrisation else None
            if self.denoiser == "emulator_backbone":
                return EmulatorBackboneDenoiser(shape, lat_deg, self.backbone_width,
                                                self.backbone_blocks, alphas)
            return ConditionalDenoiser(shape, self.block_out_channels, self.layers_per_block,
                                       self.lon_pad, alphas_cumprod=alphas)

    def lead_for(self, lead_hours: int) -> int:
        """The lead of ``leads_hours`` nearest ``lead_hours`` (the shorter on a tie)."""
        return min(self.leads_hours, key=lambda v: (abs(v - lead_hours), v))

    # ------------------------------------------------------------------------------- costs
    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """One denoiser of the configured size per lead, the k-th with weights seeded by
        seed + k, s = 0.3 per channel (only the nearest lead is used by an analysis)."""
        shape = tuple(int(v) for v in spec.shape)
        if self.denoiser == "exact_gaussian":
            return {"shape": list(shape), "leads_hours": list(self.leads_hours),
                    "models": [exact.untrained_entry(spec, UNTRAINED_SCALE)
                               for _ in self.leads_hours], "train_seconds": 0.0}
        return self.state_from({lead: (self.network(shape, seed + k, spec.lat),
                                       torch.full((shape[0],), UNTRAINED_SCALE))
                                for k, lead in enumerate(self.leads_hours)})

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the UNets' weights (float32, one per lead) + the grid's SphereTree for the
        mask (neighbours.TREE_BYTES_PER_POINT per grid point). Analysis: per sample of the
        batch (B = members, else samples_per_analysis), the UNet's activations (all of them,
        as if none were freed) at float32 + 12 float32 states; + one chunk of the mask's
        neighbour pairs (neighbours.chunk_bytes()). Activations are counted on the meta
        device (methods/common/memory.py): no memory is used."""
        c, h, w = spec.shape
        batch = max(1, members or self.members or self.samples_per_analysis)
        if self.denoiser == "exact_gaussian":  # V, d per lead; ~12 float64 states per sample
            return MemoryEstimate(exact.model_bytes(spec) * len(self.leads_hours)
                                  + neighbours.TREE_BYTES_PER_POINT * h * w,
                                  batch * 12 * 8.0 * c * h * w + neighbours.chunk_bytes())
        denoiser = self.network((c, h, w), 0, spec.lat)
        x = torch.zeros(1, c, h, w)
        act = activation_bytes(denoiser, (x, torch.zeros(1, dtype=torch.long), x), 4)
        return MemoryEstimate(
            parameter_bytes(denoiser, 4) * len(self.leads_hours)
            + neighbours.TREE_BYTES_PER_POINT * h * w,
            batch * (act + 12 * 4.0 * c * h * w) + neighbours.chunk_bytes())


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
