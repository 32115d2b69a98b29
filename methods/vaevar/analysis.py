"""VAE-Var's analysis: L-BFGS in the VAE's latent space (notation in method.py's docstring).

    x(w) = x_b + s ⊙ δ(w),   J(w) = ½ ‖w‖² + (1/λ) · ½ Σ_n ((H(x(w))_n − y_n) / σ_o,n)²

with δ(w) = ½ (D(w) − D(−w)) (odd_decoder), D(w) − D(0) (subtract_offset) or D(w). With
``lam_per_channel`` ≠ "off", λ is per observation: λ_n = lam · (1 + s_c² v_c / σ_o,n²)
(``obs_weight``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from methods.base import Analyser, Analysis, Background, Kernel, Observations

if TYPE_CHECKING:
    from methods.vaevar.method import VAEVar

#: Valid values of ``VAEVar.analysis_dtype``: the dtype of w, s, x and J (L-BFGS works in it)...
ANALYSIS_DTYPES = {"float64": torch.float64, "float32": torch.float32, "mixed": torch.float64}
#: ... and of the decoder's weights and activations ("mixed": the decoder, ~all the cost, in
#: float32; its output is cast to float64 before x and J are formed, and the gradient back).
DECODER_DTYPES = {"float64": torch.float64, "float32": torch.float32, "mixed": torch.float32}
#: Valid values of ``VAEVar.lam_per_channel``.
LAM_PER_CHANNEL = ("off", "recon_sigma", "measured")


class VAEVarAnalyser(Analyser):
    """A trained VAE-Var on one device.

    Attributes:
        method: the VAEVar (λ, iterations, σ_o floor, the increment's form).
        decoder: D, the decoder the analysis uses (a copy in the analysis dtype, frozen).
        scale: s, (C, 1, 1): per-channel std of the training samples, normalised units, in the
            analysis dtype on the analysis device.
        latent_shape: (latent channels, H / 2^k, W / 2^k) of w.
        shape: (C, H, W) the VAE was trained on.
        training: {"history": per-epoch recon_mse/kl/loss, "train_seconds", "n_samples",
            "recon_mse_channel": (C,) per-channel reconstruction error, scaled units, or None}.
    """

    def __init__(self, method: VAEVar, decoder: torch.nn.Module, scale: torch.Tensor,
                 latent_shape: tuple[int, int, int], shape: tuple[int, int, int],
                 training: dict):
        self.method, self.decoder, self.scale = method, decoder, scale
        self.latent_shape, self.shape, self.training = tuple(latent_shape), shape, training
        if method.lam_per_channel == "measured" and training.get("recon_mse_channel") is None:
            raise ValueError("VAEVar.lam_per_channel = 'measured' needs the state's "
                             "recon_mse_channel, which this state lacks (fitted before it was "
                             "measured, or built by state_from without it): refit, or use "
                             "'recon_sigma'")

    def representation_variance(self) -> torch.Tensor | None:
        """v_c s_c², (C,) normalised units² in the analysis dtype: the variance of the part of
        the background error the decoder cannot represent (None with lam_per_channel "off").
        v_c = recon_sigma² (the VAE's Gaussian likelihood, scaled units) or the measured
        reconstruction error mse_c (scaled units); s_c converts to normalised units."""
        mode = self.method.lam_per_channel
        if mode == "off":
            return None
        s2 = self.scale.flatten().square()
        if mode == "recon_sigma":
            return self.method.recon_sigma ** 2 * s2
        mse = torch.as_tensor(self.training["recon_mse_channel"])
        return mse.to(dtype=s2.dtype, device=s2.device) * s2

    def obs_weight(self, obs: Observations, sigma: torch.Tensor) -> float | torch.Tensor:
        """1/λ_n, the weight of ½ ((H(x) − y)_n / σ_o,n)² in J_o: 1/lam (a float) with
        lam_per_channel "off"; else (N,) in σ's dtype,

            1/λ_n = 1 / (lam · (1 + v_c s_c² / σ_o,n²)) = σ_o,n² / (lam · R_eff,n),
            R_eff,n = σ_o,n² + v_c s_c²,   c = obs.channel[n],

        σ (N,) the floored σ_o (normalised units); ``representation_variance`` gives v_c s_c²."""
        variance = self.representation_variance()
        if variance is None:
            return 1.0 / self.method.lam
        extra = variance.to(sigma)[obs.channel.to(sigma.device)]
        return 1.0 / (self.method.lam * (1.0 + extra / sigma.square()))

    def cost_function(self, background: Background, obs: Observations,
                      increment: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """J as a function of w (1, *latent_shape) in the analysis dtype: w -> (J, J_o).
        ``increment``: δ from increment_function() (built here when None)."""
        scale = self.scale
        dtype, device = scale.dtype, scale.device
        x_b = background.x_b.to(device=device, dtype=dtype)
        if tuple(x_b.shape) != self.shape or tuple(obs.grid_shape) != self.shape:
            raise ValueError(f"x_b {tuple(x_b.shape)} or the observations' grid "
                             f"{tuple(obs.grid_shape)} differ from the (C, H, W) = {self.shape} "
                             "the VAE was trained on")
        obs = obs.to(device)
        y = obs.values.to(dtype)
        # floor on σ_o: the noise-free protocol has σ_o = 0
        sigma = obs.error_std.to(dtype).clamp_min(self.method.min_obs_error)
        inv_lam = self.obs_weight(obs, sigma)  # 1/λ: a float ("off") or (N,) per observation
        increment = increment or self.increment_function()

        def cost(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = x_b + scale * increment(w)
            misfit = ((obs.operator(x) - y) / sigma).square()
            if isinstance(inv_lam, float):  # "off": the expression as it always was, bit for bit
                j_o = inv_lam * 0.5 * misfit.sum()
            else:  # J_o = ½ Σ_n (1/λ_n) ((H(x) − y)_n / σ_o,n)²
                j_o = 0.5 * (inv_lam * misfit).sum()
            return 0.5 * w.square().sum() + j_o, j_o

        return cost

    def increment_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """w (1, *latent_shape) -> the scaled increment δ(w) (C, H, W), x = x_b + s ⊙ δ(w):
        ½ (D(w) − D(−w)) with odd_decoder, D(w) − D(0) with subtract_offset, else D(w)."""
        decoder = self._decoder_in_analysis_dtype()
        if self.method.odd_decoder:
            def odd(w: torch.Tensor) -> torch.Tensor:
                both = decoder(torch.cat([w, -w]))  # one batched call for D(w) and D(−w)
                return 0.5 * (both[0] - both[1])
            return odd
        offset = 0.0
        if self.method.subtract_offset:  # o = D(0): w = 0 is then x_b itself
            with torch.no_grad():
                offset = decoder(torch.zeros(1, *self.latent_shape, dtype=self.scale.dtype,
                                             device=self.scale.device))[0]
        return lambda w: decoder(w)[0] - offset

    def _decoder_in_analysis_dtype(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as a function of w in the analysis dtype: the decoder itself, or (a float32
        decoder under "mixed") w cast to the dtype of the decoder's weights and D(w) cast
        back (a decoder without weights is called as it is)."""
        decoder, inner = self.decoder, self.decoder_dtype
        if inner == self.scale.dtype:
            return decoder
        return lambda w: decoder(w.to(inner)).to(w.dtype)

    @property
    def decoder_dtype(self) -> torch.dtype:
        """The dtype of the decoder's weights (float32 under "mixed"); the analysis dtype for a
        decoder without weights."""
        return next((p.dtype for p in self.decoder.parameters()), self.scale.dtype)

    def analyse(self, background: Background, obs: Observations) -> Analysis:
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
                             (per observation with lam_per_channel: ``obs_weight``)

        Returns:
            Analysis: x_a (C, H, W), same dtype and device as ``background.x_b``; diagnostics
            ``iterations`` (L-BFGS), ``evaluations`` (= ``cost_evaluations``, L-BFGS's
            func_evals), ``j_min`` (= ``cost_final``), ``cost_initial`` (J(0)) and
            ``cost_obs_final`` (J_o at the analysis, the part divided by λ).
        """
        method = self.method
        increment = self.increment_function()  # built once: with subtract_offset it decodes D(0)
        cost = self.cost_function(background, obs, increment)
        scale = self.scale
        w = torch.zeros(1, *self.latent_shape, dtype=scale.dtype, device=scale.device,
                        requires_grad=True)
        with torch.no_grad():
            j_initial = float(cost(w)[0])
        iterations = evaluations = 0

        def closure() -> torch.Tensor:
            optimiser.zero_grad(set_to_none=False)
            j, _ = cost(w)
            j.backward()
            return j

        for _ in range(method.outer_iterations):
            optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=method.inner_iterations,
                                          history_size=10, line_search_fn="strong_wolfe")
            optimiser.step(closure)
            state = optimiser.state[w]
            iterations += int(state.get("n_iter", 0))
            evaluations += int(state.get("func_evals", 0))
        with torch.no_grad():
            j_final, j_o = cost(w)
            x_a = background.x_b.to(scale) + scale * increment(w)
        return Analysis(x_a.to(dtype=background.x_b.dtype, device=background.x_b.device),
                        diagnostics={
                            "iterations": float(iterations), "evaluations": float(evaluations),
                            "cost_evaluations": float(evaluations), "j_min": float(j_final),
                            "cost_initial": j_initial, "cost_final": float(j_final),
                            "cost_obs_final": float(j_o)})

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """One decoder call D(w) and its gradient (what each cost evaluation does)."""
        decoder, dtype = self.decoder, self.decoder_dtype  # the kernel runs in the decoder's dtype
        g = torch.Generator().manual_seed(0)
        w = torch.randn(1, *self.latent_shape, generator=g, dtype=dtype).to(self.scale.device)
        w.requires_grad_(True)

        def decode_and_gradient():
            # backward(), not autograd.grad: the FLOP counter's module hooks reject the latter
            w.grad = None
            with torch.enable_grad():
                decoder(w).square().sum().backward()
            return w.grad

        return Kernel("decoder D(w) + gradient", decode_and_gradient, "FLOP",
                      str(dtype).removeprefix("torch."))
