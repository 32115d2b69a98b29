"""VAE-Var (Xiao et al., "VAE-Var: Variational data assimilation with a background model
learnt by a variational autoencoder", ICLR 2025, arXiv:2405.13711).

The background term of variational assimilation, p(x | x_b) = p_δ(x − x_b), is learnt from
background-error samples by a VAE (methods/vaevar/vae.py, trained in train.py). The analysis
searches the VAE's latent space: with s (C,) the per-channel std of the training samples and D
the decoder,

    x(w) = x_b + s ⊙ ½ (D(w) − D(−w))   (default, odd_decoder; their code: x_b + s ⊙ D(w),
                                         and x_b + s ⊙ (D(w) − D(0)) with subtract_offset)
    J(w) = ½ ‖w‖² + (1/λ) · ½ Σ_n ((H(x(w))_n − y_n) / σ_o,n)²,

minimised by L-BFGS from w = 0 (``outer_iterations`` restarts of ``inner_iterations``
iterations each; 2 × 10 in their configurations). ½‖w‖² is −log p(w) for the VAE's N(0, I)
prior. λ multiplies R: the observation term is that of R' = λ R, so λ > 1 trusts the
observations less (λ = 400 in their code; 4000 here, selected on the validation period). The
paper's exact analysis is ``--set vaevar.lam=400 --set vaevar.odd_decoder=false --set
vaevar.subtract_offset=false``. The Jacobian-determinant term log |det ∂D/∂w| of the
first preprint is dropped, as in their code at weather scale (a determinant of a
(C·H·W)-sized Jacobian per cost evaluation is unaffordable). The encoder is used only in
training.

The background term is learnt from NMC differences (``ctx.samples("nmc")``, 48 h − 24 h
forecasts valid at the same time) by default, or from truth − 24 h forecast differences.

Lifecycle: ``fit`` trains the VAE and returns its weights and the scale s (``state_from``
builds the same dict from a VAE trained elsewhere); ``load`` rebuilds the VAE and hands a copy
of its decoder, in the analysis dtype on the analysis device, to the ``VAEVarAnalyser``
(analysis.py), which minimises J.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from bench.state import StateSpec
from methods.base import Assimilator, MemoryEstimate, TrainingContext
from methods.common.cycled import CYCLED_DENSITY, CYCLED_METHOD, cycled_checks, cycled_settings
from methods.common.memory import activation_bytes, parameter_bytes
from methods.common.moments import channel_std
from methods.vaevar.analysis import (
    ANALYSIS_DTYPES,
    DECODER_DTYPES,
    LAM_PER_CHANNEL,
    VAEVarAnalyser,
)
from methods.vaevar.train import channel_recon_mse, train_vae
from methods.vaevar.vae import VAE

#: Valid values of ``VAEVar.training_samples``.
TRAINING_SAMPLES = ("nmc", "truth_minus_forecast", "known_prior", "cycled_background")
#: The per-channel scale s of ``untrained`` states (normalised units).
UNTRAINED_SCALE = 0.3


@dataclasses.dataclass(frozen=True)
class VAEVar(Assimilator):
    """Variational assimilation in the latent space of a VAE trained on background errors.

    Attributes (network; all are part of the cache key):
        latent_channels: channels of the spatial latent w (32 in Xiao et al.).
        widths: feature channels per resolution level, finest first (needs at least
            ``downsamplings`` + 1 entries; extra entries are ignored).
        downsamplings: 2× down-samplings between the grid and the latent; fewer are used when H
            or W is not divisible (the contract's 8 × 16 grid, 721-row grids). 0 (default since
            2026-11-30; 2 before): the latent keeps the grid, 32 × 32 × 64 at 32 × 64 (65,536
            numbers; latent cells of ~600 km, the nearest we have to the paper's 32 × 128 × 256
            at 0.25°, ~160 km), and the networks use ``widths[0]`` only. Chosen on the
            validation period (15 days, seed 0, λ = 4000, ``bench tune`` with widths
            (32, 64, 64, 64); results/heldsuarez-paper-regimes/latent/): channel-mean normalised
            analysis RMSE at 1 / 5 / 50 % for 0, 1, 2, 3 down-samplings 0.703 / 0.538 / 0.312,
            0.691 / 0.549 / 0.377, 0.752 / 0.613 / 0.429, 0.712 / 0.604 / 0.472; 0 is best on
            the mean and at 5 % and 50 %, and the fastest analysis (0.49 s against 0.75–0.93 s
            with 3–4 other jobs on 2 cores). ``--set vaevar.downsamplings=2`` reproduces the
            tables made before.
    Attributes (training):
        epochs, batch_size, lr: Adam training of the VAE (one epoch = one pass over the
            samples). At 69 × 32 × 64 with 363 NMC samples the defaults take ≈ 5–10 min on 2
            CPU cores.
        recon_sigma: σ of the Gaussian likelihood p(e | z) in scaled units (2.0 in their
            code); larger values weight the KL term more and give a smoother decoder.
            σ = 0.5 / 4 reconstruct to 0.50 / 0.74 and check at 1.009 / 1.003 and
            1.033 / 0.980 (see ``lam``): neither helps.
        training_samples: "nmc" (default), "truth_minus_forecast" (24 h lead) or
            "known_prior" (``known_prior_count`` draws from the known B of bench/samples.py,
            for the known-answer check; ``sample_stride`` is then unused: the known B is
            always the one of the default NMC samples, the check's) or "cycled_background":
            d = x_true − x_b of the 6 h backgrounds of ``cycled_method`` cycled through the
            training period at ``cycled_density`` (methods/common/cycled.py), every
            ``sample_stride``-th cycle of the last ``sample_days`` days.
        cycled_method, cycled_density: with "cycled_background" only; ``keyed_when_set``.
        known_prior_count: the number N of known-prior draws (with "known_prior" only;
            ``keyed_when_set``: out of the cache key at its default, so earlier fits keep
            their cache entries).
        sample_stride: 6-hourly frames between the starts of the training samples (4 = one
            sample a day, 363 from the built-in world's training year; 1 = every 6 h, 1451).
            Four times the samples (stride 1, 15 epochs: the same number of optimiser steps)
            reconstructed no better (0.61 vs 0.59 mean squared error, scaled units) and
            checked no better (1.022 / 0.985 vs 1.011 / 0.970, see ``lam``).
        sample_days: the samples come from the last ``sample_days`` days of the training
            period (365: a year of pairs, as NMC practice uses; the built-in world's whole
            training year); 0: all of it (the data-volume learning curve on a long world).
            ``keyed_when_set``.
    Attributes (analysis):
        lam: λ > 0; the observation term is divided by λ, i.e. R is inflated to λ R
            (λ → ∞ returns the prior mode: x_b, or x_b + s ⊙ D(0) with neither odd_decoder nor
            subtract_offset). Default 4000, selected on the validation period, not the paper's
            400: one analysis of truth − 48 h forecast errors (`python -m bench check`,
            results/analysis-check/; analysis/background RMSE, mean over channels, 1 % / 5 %)
            gave 1.031 / 1.010 at λ = 400, 0.989 / 0.932 at 4000, 0.992 / 0.952 at 10000,
            0.998 / 0.977 at 30000 (λ = 1 with 4 × 50 iterations: 2.65 / 1.71). In 15-day
            cycles on the test period (results/heldsuarez-paper/, results/vaevar-paper-settings/)
            the paper's λ = 400 diverged at every density with their x_b + s ⊙ D(w) and stayed
            worse than no assimilation with odd_decoder; λ = 4000 with odd_decoder beats it.
            One analysis against held-out NMC errors, its own training distribution: 1.011 /
            0.970 at λ = 400, 0.982 / 0.907 at 4000; 3DVar 0.973 / 0.846.
        outer_iterations, inner_iterations: L-BFGS runs (each restarted from the previous w
            with a fresh curvature memory) × iterations per run.
        min_obs_error: floor on σ_o in normalised units (σ_o,eff = max(σ_o, floor)), so the
            noise-free protocol (σ_o = 0) gives a finite cost; 0.01 = 1 % of each channel's
            normalisation std, the order of the default observation noise.
        subtract_offset: x(w) = x_b + s ⊙ (D(w) − D(0)) (True) instead of their
            x_b + s ⊙ D(w) (False). The decoder's output at w = 0 is not the samples' mean error
            but a fixed artefact of training: on the built-in world D(0) has an rms of 0.049 s
            and correlates 0.05 with the NMC samples' mean (rms 0.061 s). Without the
            subtraction every analysis adds that same pattern, 6-hourly. It did not decide
            the cycling outcome here: λ = 400 diverged at cycle 34 (1 %) and 30 (5 %) with
            it, at 30 and 32 without.
        odd_decoder: use the odd part of the decoder, x(w) = x_b + s ⊙ ½ (D(w) − D(−w))
            (supersedes subtract_offset: the odd part is 0 at w = 0). Why: the decoder's
            even part (D(w) + D(−w))/2 − D(0) is not zero, so every increment carries a
            second-order shift whose sign does not depend on the innovations' sign; for
            w ~ N(0, r² I) its area mean is −0.2 … −0.3 of the increment's std in t300 and
            q200 and +0.15 in u50 (r = 0.3, 512 draws, built-in world). In cycles these
            shifts accumulate into biases (λ = 4000, 1 %: u50 bias +4 m/s, t250 −0.9 K after
            ten days, while `none` stays within ±0.5). With the odd part the analysis is an
            odd function of the innovations (w*(−d) = −w*(d)), so unbiased innovations give
            unbiased increments. Costs one decoder call on a batch of two per evaluation.
            Measured (λ = 4000, 15 days): u50 bias within ±0.4 m/s at 1 %; the paper's form
            (False) at λ = 400 diverged at cycles 43 / 33 / 38 (0.5 / 1 / 5 %). Default True:
            a departure from their code, made because of this bias.
        lam_per_channel: "off" (default: one λ, the analyses as before, bit for bit),
            "recon_sigma" or "measured": add the decoder's representation error to R, per
            channel (analysis.py, ``VAEVarAnalyser.obs_weight``). The VAE knows the scaled
            error e only to within its likelihood's noise: x_true = x_b + s ⊙ (D(w) + η),
            η_c ~ N(0, v_c), so y − H(x(w)) has variance R_eff,n = σ_o,n² + s_c² v_c and

                J_o = ½ Σ_n (H(x(w))_n − y_n)² / (lam · R_eff,n),
                i.e. λ_n = lam · (1 + s_c² v_c / σ_o,n²)   (c = channel of observation n),

            with v_c = recon_sigma² ("recon_sigma", the prior's σ²) or v_c = mse_c, the
            decoder's per-channel reconstruction error on the training samples ("measured",
            ``recon_mse_channel`` of the state; fit computes it, states cached before it
            existed are refused: refit). lam still multiplies; lam = 1 is then R_eff as it
            is. (A point observation's η is one grid value's; a bilinear one's is taken as
            that of one value too: the decoder's errors are smooth.)
        analysis_dtype: "mixed" (default: the decoder, nearly all the cost, in float32; w, x,
            J and L-BFGS in float64), "float64" (everything in float64: the default until
            2026-11-30, because L-BFGS with a strong-Wolfe line search sometimes stalls in
            float32, FACTS.md) or "float32" (everything in float32). Validation period, 15
            days, seed 0, channel-mean normalised analysis RMSE at 1 % / 5 % (median cost
            evaluations 24 for all): float64 0.7508 / 0.6116, mixed 0.7517 / 0.6133 (+0.1 /
            +0.3 %), float32 0.7558 / 0.6256 (+0.7 / +2.3 %). CPU seconds per analysis, 1
            thread, 12 forecast problems per density A B C (results/speedups/README.md):
            float64 0.42 / 0.56, mixed 0.21 / 0.26, float32 0.20 / 0.24 — mixed keeps
            float64's skill at float32's cost.
    """

    latent_channels: int = 32
    widths: tuple[int, ...] = (32, 64, 64)
    downsamplings: int = 0
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    recon_sigma: float = 2.0
    training_samples: str = "nmc"
    sample_stride: int = 4
    sample_days: int = 365
    known_prior_count: int = 363
    cycled_method: str = CYCLED_METHOD
    cycled_density: float = CYCLED_DENSITY
    lam: float = 4000.0
    outer_iterations: int = 2
    inner_iterations: int = 10
    min_obs_error: float = 0.01
    analysis_dtype: str = "mixed"
    subtract_offset: bool = True
    odd_decoder: bool = True
    lam_per_channel: str = "off"

    analysis_fields = ("lam", "outer_iterations", "inner_iterations", "min_obs_error",
                       "analysis_dtype", "subtract_offset", "odd_decoder", "lam_per_channel")
    keyed_when_set = ("known_prior_count", "sample_days", "cycled_method", "cycled_density")
    #: ``python -m bench tune``'s grid: λ (the observation term's weight, 1/λ) a factor 4
    #: apart around the default, and the L-BFGS budget per outer loop.
    tuning_grid = {"lam": (1000.0, 4000.0, 16000.0, 64000.0), "inner_iterations": (10, 20)}

    def __post_init__(self):
        checks = (
            ("latent_channels", self.latent_channels >= 1, "an integer ≥ 1"),
            # a tuple, so the method stays hashable (the harness turns JSON lists into tuples)
            ("widths", isinstance(self.widths, tuple) and len(self.widths) >= 1 and
             all(isinstance(v, int) and v >= 1 for v in self.widths),
             "a tuple of positive integers"),
            ("downsamplings", 0 <= self.downsamplings < len(self.widths),
             "in [0, len(widths))"),
            ("epochs", self.epochs >= 1, "an integer ≥ 1"),
            ("batch_size", self.batch_size >= 1, "an integer ≥ 1"),
            ("lr", self.lr > 0, "> 0"),
            ("recon_sigma", self.recon_sigma > 0, "> 0"),
            ("training_samples", self.training_samples in TRAINING_SAMPLES,
             f"one of {TRAINING_SAMPLES}"),
            ("sample_stride", self.sample_stride >= 1, "an integer ≥ 1"),
            ("sample_days", self.sample_days >= 0, "an integer ≥ 0 (0: the whole period)"),
            ("known_prior_count", self.known_prior_count >= 1, "an integer ≥ 1"),
            ("lam", self.lam > 0, "> 0"),
            ("outer_iterations", self.outer_iterations >= 1, "an integer ≥ 1"),
            ("inner_iterations", self.inner_iterations >= 1, "an integer ≥ 1"),
            ("min_obs_error", self.min_obs_error > 0, "> 0 (σ_o may be 0)"),
            ("analysis_dtype", self.analysis_dtype in ANALYSIS_DTYPES,
             f"one of {tuple(ANALYSIS_DTYPES)}"),
            ("lam_per_channel", self.lam_per_channel in LAM_PER_CHANNEL,
             f"one of {LAM_PER_CHANNEL}"),
            *cycled_checks(self.cycled_method, self.cycled_density),
        )
        self.check_fields(checks)

    @classmethod
    def for_tests(cls, **overrides) -> VAEVar:
        """A tiny configuration that trains in about a second on small grids."""
        settings = dict(latent_channels=4, widths=(8, 8), downsamplings=1, epochs=3,
                        batch_size=16, lr=3e-3, sample_stride=1)
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> dict:
        """Train the VAE on ctx's background-error samples (on ctx.device, seeded by ctx.seed).

        Returns:
            ``state_from``'s dict: the VAE's weights, s (C,) = per-channel std of the samples
            (normalised units), and the training record ("history": per-epoch recon_mse / kl
            / loss, "train_seconds", "n_samples", "recon_mse_channel": (C,) the trained VAE's
            per-channel reconstruction error on the samples, scaled units, train.py's
            ``channel_recon_mse``; one more pass over the samples, the weights unchanged).
        """
        shape = tuple(int(v) for v in ctx.spec.shape)
        if self.training_samples == "nmc":
            samples = ctx.samples("nmc", start_stride=self.sample_stride, days=self.sample_days)
        elif self.training_samples == "known_prior":
            samples = ctx.samples("known_prior", count=self.known_prior_count)
        elif self.training_samples == "cycled_background":
            samples = ctx.samples("cycled_background", start_stride=self.sample_stride,
                                  days=self.sample_days,
                                  **cycled_settings(self.cycled_method, self.cycled_density))
        else:
            samples = ctx.samples("truth_minus_forecast", lead_hours=24,
                                  start_stride=self.sample_stride, days=self.sample_days)
        # s: per-channel std of the samples; the VAE models ε / s (all channels ~ unit size).
        # Both in batches: the samples may be a memory map larger than memory (moments.py).
        scale = channel_std(samples).to(torch.float32).clamp_min(1e-8)
        vae = self.network(shape, ctx.seed).to(ctx.device)
        start = time.perf_counter()
        history = train_vae(vae, samples, scale=scale, epochs=self.epochs,
                            batch_size=self.batch_size, lr=self.lr,
                            recon_sigma=self.recon_sigma, seed=ctx.seed, progress=ctx.progress)
        train_seconds = time.perf_counter() - start
        recon_mse = channel_recon_mse(vae, samples, scale=scale, batch_size=self.batch_size)
        return self.state_from(vae, scale, training={
            "history": [dataclasses.asdict(h) for h in history],
            "train_seconds": train_seconds, "n_samples": int(samples.shape[0]),
            "recon_mse_channel": recon_mse})

    @staticmethod
    def state_from(vae: VAE, scale: torch.Tensor, training: dict | None = None) -> dict:
        """The state ``load`` takes, from a VAE (trained here or elsewhere) and the per-channel
        scale s (C,): {"vae": its state_dict (CPU), "scale", "shape": [C, H, W], "history",
        "train_seconds", "n_samples", "recon_mse_channel" ((C,) or None: not measured)}.
        Copies: later changes to ``vae`` have no effect."""
        scale = torch.as_tensor(scale)
        if tuple(scale.shape) != (vae.shape[0],):
            raise ValueError(f"scale must have shape ({vae.shape[0]},) for a VAE of "
                             f"{vae.shape[0]} channels, got {tuple(scale.shape)}")
        training = training or {"history": [], "train_seconds": 0.0, "n_samples": 0}
        recon_mse = training.get("recon_mse_channel")
        if recon_mse is not None:
            recon_mse = torch.as_tensor(recon_mse, dtype=torch.float64).detach().cpu().clone()
            if tuple(recon_mse.shape) != (vae.shape[0],):
                raise ValueError(f"recon_mse_channel must have shape ({vae.shape[0]},), got "
                                 f"{tuple(recon_mse.shape)}")
        return {"vae": {k: v.detach().cpu().clone() for k, v in vae.state_dict().items()},
                "scale": scale.detach().cpu().clone(), "shape": list(vae.shape),
                "history": list(training["history"]),
                "train_seconds": float(training["train_seconds"]),
                "n_samples": int(training["n_samples"]), "recon_mse_channel": recon_mse}

    def load(self, state: dict, spec: StateSpec, device: torch.device | str) -> VAEVarAnalyser:
        """Rebuild the VAE from ``state`` and hand a copy of its decoder, in the analysis dtype
        on ``device``, to the analyser (with s in the same dtype and device)."""
        shape = tuple(int(v) for v in state["shape"])
        if shape != tuple(spec.shape):
            raise ValueError(f"the VAE was trained on (C, H, W) = {shape}; the spec is "
                             f"{tuple(spec.shape)}: fit on this world")
        vae = self.network(shape, self.seed)
        vae.load_state_dict(state["vae"])
        scale = torch.as_tensor(state["scale"])
        if tuple(scale.shape) != (shape[0],):
            raise ValueError(f"scale must have shape ({shape[0]},) for a VAE of {shape[0]} "
                             f"channels, got {tuple(scale.shape)}")
        dtype = ANALYSIS_DTYPES[self.analysis_dtype]
        decoder = vae.decoder.to(device=device, dtype=DECODER_DTYPES[self.analysis_dtype])
        decoder = decoder.eval().requires_grad_(False)
        training = {k: state[k] for k in ("history", "train_seconds", "n_samples")}
        # absent from states cached before it was measured (the analyser refuses "measured")
        training["recon_mse_channel"] = state.get("recon_mse_channel")
        return VAEVarAnalyser(self, decoder, scale.to(device, dtype)[:, None, None],
                              vae.latent_shape, shape, training)

    def network(self, shape: tuple[int, int, int], seed: int) -> VAE:
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            return VAE(shape, self.latent_channels, self.widths, self.downsamplings)

    # ------------------------------------------------------------------------------- costs
    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """A VAE of the configured size with weights seeded by ``seed``, s = 0.3 per channel."""
        shape = tuple(int(v) for v in spec.shape)
        return self.state_from(self.network(shape, seed),
                               torch.full((shape[0],), UNTRAINED_SCALE))

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the decoder's weights in its dtype. Analysis: the decoder's
        activations × 3 (forward, saved for backward, gradients) in its dtype + 30
        latents (L-BFGS memory of 10 pairs) + 8 float64 states. Activations are counted on the
        meta device (methods/common/memory.py): no memory is used."""
        c, h, w = spec.shape
        vae = self.network((c, h, w), 0)
        itemsize = ANALYSIS_DTYPES[self.analysis_dtype].itemsize
        decoder_itemsize = DECODER_DTYPES[self.analysis_dtype].itemsize
        z = torch.zeros(1, *vae.latent_shape)
        act = activation_bytes(vae.decoder, (z,), decoder_itemsize)
        return MemoryEstimate(parameter_bytes(vae.decoder, decoder_itemsize),
                              3 * act + 30 * z.numel() * itemsize + 8 * 8.0 * c * h * w)
