"""4DVar's cost over one window, its gradient and its Gauss–Newton Hessian, through autograd.

    δx = U w,   x₀ = x_b + δx,   frames₀ = history + δx     (the increment on every frame)
    x_t = M_{0→t}(frames₀): t / 6 h steps of the model, each output fed back as the newest frame
    J(w) = ½ ‖w‖² + ½ Σ_t ‖(H_t x_t − y_t) / σ_t‖²,   σ_t² = max(σ_o, min_obs_error)² + s σ_q²
                                          (s = t / 6 h; σ_q = model_error, default 0)
    ∇J(w) = w − Uᵀ Σ_t M'_tᵀ H_tᵀ R_t⁻¹ d_t,   d_t = y_t − H_t x_t,   M'_0 = I
    A v = v + Uᵀ Σ_t M'_tᵀ H_tᵀ R_t⁻¹ H_t M'_t U v     (Gauss–Newton: M' frozen at x₀)

M'_t is the Jacobian of x_t with respect to δx (every input frame moves with δx, as the
harness's "increment" history update moves them). Offset 0 needs no model: its terms are
float64 and the same operations as 3DVar's (methods/threedvar/solvers.py), so a window with
observations at offset 0 only gives 3DVar's analysis. Later offsets run the model in the
history's dtype (float32 in the harness; float64 histories stay float64 for the tests) and
return to float64 for the sums.

No hand-written adjoint. With g(u) = M'ᵀ Hᵀ u, built once per linearisation by a backward
pass with ``create_graph=True``:
    adjoint    M'ᵀ Hᵀ r = backward of H M(δx) with r   (the forward graph is kept)
    tangent    H M' v   = backward of g with v         (g is linear in u, ∂g/∂u = M'ᵀ Hᵀ:
                                                        its vector–Jacobian product is H M' v)
g is built at u = R⁻¹ d, so the same pass gives the gradient's model part M'ᵀ Hᵀ R⁻¹ d.
Forward-mode AD (torch.func.jvp) is not an option: torch-harmonics' SHT (the emulator's
truncation) has a custom autograd Function without a jvp rule.
"""

from __future__ import annotations

import torch

from methods.base import Background, Observations, ObservationWindow
from methods.common.covariance import BMatrix

#: Hours per model step (the forecast models' 6-hour step; bench/config.py STEP_HOURS).
STEP_HOURS = 6


class WindowCost:
    """J of one window for a BMatrix ``b``; counts the model passes it makes.

    Attributes:
        obs0, sigma0: the observations at offset 0 (on b's device) and their floored σ.
        later: [(steps, Observations)] at later offsets with observations, steps = offset / 6 h.
        y, sigma: the later observations' values and floored σ, concatenated, float64.
        steps: model steps to the last later observation (0: no model needed).
        passes: {"forward", "tangent", "adjoint"} model steps run so far, each kind.
    """

    def __init__(self, b: BMatrix, window: ObservationWindow, background: Background,
                 min_obs_error: float, model_error: float = 0.0):
        self.b, self.model = b, window.model
        f64 = dict(device=b.device, dtype=torch.float64)
        self.x_b = background.x_b.to(**f64)
        self.history = background.history.to(b.device)
        self.obs0 = window.at(0).to(b.device)
        self.sigma0 = self.obs0.error_std.to(**f64).clamp_min(min_obs_error)
        self.later: list[tuple[int, Observations]] = []
        for offset, obs in window.observations[1:]:
            if offset % STEP_HOURS:
                raise ValueError(f"4DVar steps the model by {STEP_HOURS} h; the window has "
                                 f"observations at +{offset} h")
            if len(obs):
                self.later.append((offset // STEP_HOURS, obs.to(b.device)))
        self.steps = self.later[-1][0] if self.later else 0
        later = [obs for _, obs in self.later]
        self.y = torch.cat([o.values for o in later]).to(**f64) if later else None
        self.sigma = None
        if later:
            steps = torch.cat([torch.full((len(o),), float(n), **f64) for n, o in self.later])
            sigma_o = torch.cat([o.error_std for o in later]).to(**f64).clamp_min(min_obs_error)
            self.sigma = (sigma_o.square() + steps * model_error**2).sqrt()
        self.passes = {"forward": 0, "tangent": 0, "adjoint": 0}

    def __len__(self) -> int:
        return len(self.obs0) + (len(self.y) if self.later else 0)

    def observed_trajectory(self, delta: torch.Tensor) -> torch.Tensor:
        """(H_t x_t for the later offsets) concatenated, (N_later,), from the increment
        ``delta`` (C, H, W) in the history's dtype; differentiable."""
        frames, out, step = (self.history + delta)[None], [], 0
        for steps, obs in self.later:
            while step < steps:
                nxt = self.model.step_differentiable(frames)
                frames = torch.cat([frames[:, 1:], nxt[:, None]], dim=1)
                step += 1
            out.append(obs.operator(frames[0, -1]))
        self.passes["forward"] += self.steps
        return torch.cat(out)

    def evaluate(self, w: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(J(w), x₀ = x_b + U w float64) with the non-linear model, no autograd graph."""
        with torch.no_grad():
            delta = self.b.u(w)
            x0 = self.x_b + delta
            r0 = (self.obs0.operator(x0) - self.obs0.values.to(x0.dtype)) / self.sigma0
            j = 0.5 * float(w.square().sum()) + 0.5 * float(r0.square().sum())
            if self.later:
                hx = self.observed_trajectory(delta.to(self.history.dtype)).to(torch.float64)
                j += 0.5 * float(((hx - self.y) / self.sigma).square().sum())
        return j, x0

    def linearise(self, w: torch.Tensor) -> Linearisation:
        """The model linearised around the trajectory from x_b + U w (see Linearisation)."""
        return Linearisation(self, w)


class Linearisation:
    """J, ∇J and the Gauss–Newton Hessian at w, with M' frozen around the trajectory from
    x₀ = x_b + U w (module docstring).

    Attributes:
        cost: J(w), float.
        gradient: ∇J(w), (K, n_coef) float64.
    """

    def __init__(self, window: WindowCost, w: torch.Tensor):
        self.window = c = window
        b = c.b
        with torch.no_grad():
            delta64 = b.u(w)
            d0 = c.obs0.values.to(torch.float64) - c.obs0.operator(c.x_b + delta64)
        forcing = c.obs0.adjoint(d0 / c.sigma0.square())  # H₀ᵀ R₀⁻¹ d₀
        j = 0.5 * float(w.square().sum()) + 0.5 * float((d0 / c.sigma0).square().sum())
        if c.later:
            self.delta = delta64.to(c.history.dtype).requires_grad_(True)
            self.hx = c.observed_trajectory(self.delta)
            d = c.y - self.hx.detach().to(torch.float64)  # innovations of the later offsets
            j += 0.5 * float((d / c.sigma).square().sum())
            # g(u) = M'ᵀ Hᵀ u at u = R⁻¹ d: the gradient's model part, and the graph of the TL
            self.u = (d / c.sigma.square()).to(self.hx.dtype).requires_grad_(True)
            self.g = self._backward(self.hx, self.delta, self.u, create_graph=True)
            c.passes["adjoint"] += c.steps
            forcing = forcing + self.g.detach().to(torch.float64)
        self.cost = j
        self.gradient = w - b.u_adjoint(forcing)

    @staticmethod
    def _backward(output, wrt, cotangent, create_graph=False) -> torch.Tensor:
        (grad,) = torch.autograd.grad(output, wrt, cotangent, retain_graph=True,
                                      create_graph=create_graph, allow_unused=True)
        return torch.zeros_like(wrt) if grad is None else grad

    def tangent(self, dx: torch.Tensor) -> torch.Tensor:
        """H M' δx: (C, H, W) float64 -> (N_later,) float64."""
        self.window.passes["tangent"] += self.window.steps
        return self._backward(self.g, self.u, dx.to(self.delta.dtype)).to(torch.float64)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """M'ᵀ Hᵀ r: (N_later,) float64 -> (C, H, W) float64."""
        self.window.passes["adjoint"] += self.window.steps
        return self._backward(self.hx, self.delta, r.to(self.hx.dtype)).to(torch.float64)

    def hessian(self, v: torch.Tensor) -> torch.Tensor:
        """A v = v + Uᵀ (H₀ᵀ R₀⁻¹ H₀ U v + M'ᵀ Hᵀ R⁻¹ H M' U v), v (K, n_coef) float64."""
        c, b = self.window, self.window.b
        dx = b.u(v)
        forcing = c.obs0.adjoint(c.obs0.operator(dx) / c.sigma0.square())
        if c.later:
            forcing = forcing + self.adjoint(self.tangent(dx) / c.sigma.square())
        return v + b.u_adjoint(forcing)
