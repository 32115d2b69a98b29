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
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from methods.base import Assimilator, Background, Observations, TrainingContext
from methods.vaevar.train import train_vae
from methods.vaevar.vae import VAE

#: Valid values of ``VAEVar.training_samples``.
TRAINING_SAMPLES = ("nmc", "truth_minus_forecast")
#: Valid values of ``VAEVar.analysis_dtype``.
ANALYSIS_DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: The file in ctx.cache_dir holding the trained VAE and the scale s.
CACHE_FILE = "vaevar.pt"


@dataclasses.dataclass(frozen=True)
class VAEVar(Assimilator):
    """Variational assimilation in the latent space of a VAE trained on background errors.

    Attributes (network; all are part of the cache key):
        latent_channels: channels of the spatial latent w (32 in Xiao et al.).
        widths: feature channels per resolution level, finest first (needs at least
            ``downsamplings`` + 1 entries; extra entries are ignored).
        downsamplings: 2× down-samplings between the grid and the latent; fewer are used when H
            or W is not divisible (the contract's 8 × 16 grid, 721-row grids). At 32 × 64 the
            default gives a 32 × 8 × 16 latent (4096 numbers).
    Attributes (training):
        epochs, batch_size, lr: Adam training of the VAE (one epoch = one pass over the
            samples). At 69 × 32 × 64 with 363 NMC samples the defaults take ≈ 5–10 min on 2
            CPU cores.
        recon_sigma: σ of the Gaussian likelihood p(e | z) in scaled units (2.0 in their
            code); larger values weight the KL term more and give a smoother decoder.
            σ = 0.5 / 4 reconstruct to 0.50 / 0.74 and check at 1.009 / 1.003 and
            1.033 / 0.980 (see ``lam``): neither helps.
        training_samples: "nmc" (default) or "truth_minus_forecast" (24 h lead).
        sample_stride: 6-hourly frames between the starts of the training samples (4 = one
            sample a day, 363 from the built-in world's training year; 1 = every 6 h, 1451).
            Four times the samples (stride 1, 15 epochs: the same number of optimiser steps)
            reconstructed no better (0.61 vs 0.59 mean squared error, scaled units) and
            checked no better (1.022 / 0.985 vs 1.011 / 0.970, see ``lam``).
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
        analysis_dtype: "float64" (default: the decoder is copied to float64 for the analysis,
            because L-BFGS with a strong-Wolfe line search sometimes stalls in float32, see
            FACTS.md) or "float32" (faster on GPUs).
    """

    latent_channels: int = 32
    widths: tuple[int, ...] = (32, 64, 64)
    downsamplings: int = 2
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    recon_sigma: float = 2.0
    training_samples: str = "nmc"
    sample_stride: int = 4
    lam: float = 4000.0
    outer_iterations: int = 2
    inner_iterations: int = 10
    min_obs_error: float = 0.01
    analysis_dtype: str = "float64"
    subtract_offset: bool = True
    odd_decoder: bool = True

    trains = True
    analysis_fields = ("lam", "outer_iterations", "inner_iterations", "min_obs_error",
                       "analysis_dtype", "subtract_offset", "odd_decoder")

    def __post_init__(self):
        # a config read back from JSON holds a list; keep the field hashable and comparable
        object.__setattr__(self, "widths", tuple(int(v) for v in self.widths))
        checks = (
            ("latent_channels", self.latent_channels >= 1, "an integer ≥ 1"),
            ("widths", len(self.widths) >= 1 and min(self.widths) >= 1, "positive integers"),
            ("downsamplings", 0 <= self.downsamplings < len(self.widths),
             "in [0, len(widths))"),
            ("epochs", self.epochs >= 1, "an integer ≥ 1"),
            ("batch_size", self.batch_size >= 1, "an integer ≥ 1"),
            ("lr", self.lr > 0, "> 0"),
            ("recon_sigma", self.recon_sigma > 0, "> 0"),
            ("training_samples", self.training_samples in TRAINING_SAMPLES,
             f"one of {TRAINING_SAMPLES}"),
            ("sample_stride", self.sample_stride >= 1, "an integer ≥ 1"),
            ("lam", self.lam > 0, "> 0"),
            ("outer_iterations", self.outer_iterations >= 1, "an integer ≥ 1"),
            ("inner_iterations", self.inner_iterations >= 1, "an integer ≥ 1"),
            ("min_obs_error", self.min_obs_error > 0, "> 0 (σ_o may be 0)"),
            ("analysis_dtype", self.analysis_dtype in ANALYSIS_DTYPES,
             f"one of {tuple(ANALYSIS_DTYPES)}"),
        )
        self.check_fields(checks)

    @classmethod
    def for_tests(cls, **overrides) -> VAEVar:
        """A tiny configuration that trains in about a second on small grids."""
        settings = dict(latent_channels=4, widths=(8, 8), downsamplings=1, epochs=3,
                        batch_size=16, lr=3e-3, sample_stride=1)
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------------------- training
    def prepare(self, ctx: TrainingContext) -> None:
        """Train the VAE on ctx's background-error samples, or reload it from ctx.cache_dir.

        Stores the analysis decoder (a float64 or float32 copy, on ctx.device) and the scale
        s (C, 1, 1) in normalised units.
        """
        path = Path(ctx.cache_dir) / CACHE_FILE
        shape = tuple(int(v) for v in ctx.spec.shape)
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        if saved is not None and tuple(saved["shape"]) == shape:
            vae = self._build(shape, ctx.seed)
            vae.load_state_dict(saved["state"])
        else:
            if self.training_samples == "nmc":
                samples = ctx.samples("nmc", start_stride=self.sample_stride)
            else:
                samples = ctx.samples("truth_minus_forecast", lead_hours=24,
                                      start_stride=self.sample_stride)
            samples = samples.to(torch.float32)
            # s: per-channel std of the samples; the VAE models ε / s (all channels ~ unit size)
            scale = samples.std(dim=(0, 2, 3)).clamp_min(1e-8)
            vae = self._build(shape, ctx.seed).to(ctx.device)
            start = time.perf_counter()
            history = train_vae(vae, samples / scale[:, None, None], epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr,
                                recon_sigma=self.recon_sigma, seed=ctx.seed,
                                progress=ctx.progress)
            saved = {"state": {k: v.cpu() for k, v in vae.state_dict().items()},
                     "scale": scale, "shape": list(shape),
                     "history": [dataclasses.asdict(h) for h in history],
                     "train_seconds": time.perf_counter() - start,
                     "n_samples": int(samples.shape[0])}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(saved, tmp)
            tmp.replace(path)  # atomic: a killed run never leaves half a file
        self.set_vae(vae, saved["scale"], ctx.device,
                     training={k: saved[k] for k in ("history", "train_seconds", "n_samples")})

    def set_vae(self, vae: VAE, scale: torch.Tensor, device: torch.device | str = "cpu",
                training: dict | None = None) -> None:
        """Use ``vae``'s decoder and the per-channel scale s (C,) for the analysis.

        What prepare() does after training or loading; also the way to analyse with a VAE
        trained elsewhere, or a random one of the configured size for timing. The decoder is
        copied (to the analysis dtype and ``device``), so later changes to ``vae`` have no
        effect.
        """
        if scale.shape != (vae.shape[0],):
            raise ValueError(f"scale must have shape ({vae.shape[0]},) for a VAE of "
                             f"{vae.shape[0]} channels, got {tuple(scale.shape)}")
        dtype = ANALYSIS_DTYPES[self.analysis_dtype]
        decoder = copy.deepcopy(vae.decoder).to(device=device, dtype=dtype)
        object.__setattr__(self, "_decoder", decoder.eval().requires_grad_(False))
        object.__setattr__(self, "_scale", scale.to(device, dtype)[:, None, None])
        object.__setattr__(self, "_latent_shape", vae.latent_shape)
        object.__setattr__(self, "_shape", vae.shape)
        object.__setattr__(self, "_training", training or {"history": [], "train_seconds": 0.0,
                                                            "n_samples": 0})
        object.__setattr__(self, "_diagnostics", {})

    def _build(self, shape: tuple[int, int, int], seed: int) -> VAE:
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            return VAE(shape, self.latent_channels, self.widths, self.downsamplings)

    @property
    def decoder(self) -> torch.nn.Module:
        """D, the decoder the analysis uses (after prepare)."""
        self._require_prepared()
        return self._decoder

    @property
    def scale(self) -> torch.Tensor:
        """s, (C, 1, 1): per-channel std of the training samples, normalised units."""
        self._require_prepared()
        return self._scale

    @property
    def training(self) -> dict:
        """{"history": per-epoch recon_mse/kl/loss, "train_seconds", "n_samples"} of the VAE."""
        self._require_prepared()
        return self._training

    def _require_prepared(self) -> None:
        if getattr(self, "_decoder", None) is None:
            raise RuntimeError("VAEVar needs a trained VAE: call prepare(ctx) first")

    def diagnostics(self) -> dict[str, float]:
        """Of the last analysis: L-BFGS iterations and cost evaluations, J(0) and J(w*), and
        the final observation term J_o (the part of J divided by λ)."""
        return dict(getattr(self, "_diagnostics", {}))

    # ------------------------------------------------------------------------------- analysis
    def cost_function(self, background: Background, obs: Observations,
                      increment: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """J as a function of w (1, *latent_shape) in the analysis dtype: w -> (J, J_o).
        ``increment``: δ from increment_function() (built here when None)."""
        scale = self.scale
        dtype, device = scale.dtype, scale.device
        x_b = background.x_b.to(device=device, dtype=dtype)
        if tuple(x_b.shape) != self._shape or tuple(obs.grid_shape) != self._shape:
            raise ValueError(f"x_b {tuple(x_b.shape)} or the observations' grid "
                             f"{tuple(obs.grid_shape)} differ from the (C, H, W) = {self._shape} "
                             "the VAE was trained on")
        obs = obs.to(device)
        y = obs.values.to(dtype)
        # floor on σ_o: the noise-free protocol has σ_o = 0
        sigma = obs.error_std.to(dtype).clamp_min(self.min_obs_error)
        inv_lam = 1.0 / self.lam
        increment = increment or self.increment_function()

        def cost(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = x_b + scale * increment(w)
            j_o = inv_lam * 0.5 * ((obs.operator(x) - y) / sigma).square().sum()
            return 0.5 * w.square().sum() + j_o, j_o

        return cost

    def increment_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """w (1, *latent_shape) -> the scaled increment δ(w) (C, H, W), x = x_b + s ⊙ δ(w):
        ½ (D(w) − D(−w)) with odd_decoder, D(w) − D(0) with subtract_offset, else D(w)."""
        decoder = self.decoder
        if self.odd_decoder:
            def odd(w: torch.Tensor) -> torch.Tensor:
                both = decoder(torch.cat([w, -w]))  # one batched call for D(w) and D(−w)
                return 0.5 * (both[0] - both[1])
            return odd
        offset = 0.0
        if self.subtract_offset:  # o = D(0): w = 0 is then x_b itself
            with torch.no_grad():
                offset = decoder(torch.zeros(1, *self._latent_shape, dtype=self.scale.dtype,
                                             device=self.scale.device))[0]
        return lambda w: decoder(w)[0] - offset

    def analyse(self, background: Background, obs: Observations) -> torch.Tensor:
        """x_a = x_b + s ⊙ δ(w*) (δ: increment_function), w* = argmin J(w) by L-BFGS from 0.

        Notation (code → paper, Xiao et al. 2025):
            background.x_b   x_b, (C, H, W) normalised
            scale            s, (C, 1, 1): per-channel std of the training errors (the VAE
                             models δ = (x − x_b) / s)
            decoder          D, the VAE decoder: w (1, latent, H/2^k, W/2^k) -> (1, C, H, W)
            w                z, the latent; prior N(0, I), so J_b = ½ ‖w‖²
            obs.values       y (N,);  obs.operator = H (linear, grid-point or bilinear)
            sigma            σ_o (R = diag σ_o²), floored at ``min_obs_error``
            lam              λ: J_o = (1/λ) ½ Σ ((H(x) − y) / σ_o)², i.e. R inflated to λ R

        Returns:
            (C, H, W) analysis, same dtype and device as ``background.x_b``.
        """
        increment = self.increment_function()  # built once: with subtract_offset it decodes D(0)
        cost = self.cost_function(background, obs, increment)
        scale = self.scale
        w = torch.zeros(1, *self._latent_shape, dtype=scale.dtype, device=scale.device,
                        requires_grad=True)
        with torch.no_grad():
            j_initial = float(cost(w)[0])
        iterations = evaluations = 0

        def closure() -> torch.Tensor:
            optimiser.zero_grad(set_to_none=False)
            j, _ = cost(w)
            j.backward()
            return j

        for _ in range(self.outer_iterations):
            optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=self.inner_iterations,
                                          history_size=10, line_search_fn="strong_wolfe")
            optimiser.step(closure)
            state = optimiser.state[w]
            iterations += int(state.get("n_iter", 0))
            evaluations += int(state.get("func_evals", 0))
        with torch.no_grad():
            j_final, j_o = cost(w)
            x_a = background.x_b.to(scale) + scale * increment(w)
        object.__setattr__(self, "_diagnostics", {
            "iterations": float(iterations), "cost_evaluations": float(evaluations),
            "cost_initial": j_initial, "cost_final": float(j_final),
            "cost_obs_final": float(j_o),
        })
        return x_a.to(dtype=background.x_b.dtype, device=background.x_b.device)
