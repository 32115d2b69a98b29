"""3DVar in control-variable space, minimised with autograd (L-BFGS) or conjugate gradients.

    x = x_b + U w,    J(w) = ½ ‖w‖² + ½ Σ_n ((H(x_b + U w) − y)_n / σ_n)²,
    σ_n = max(σ_o,n, min_obs_error)

with U = U_p U_v S U_h (b_matrix.py) estimated from NMC samples (statistics.py). J is evaluated
in float64 (L-BFGS with a strong-Wolfe line search stalls in float32, FACTS.md), its gradient
with the explicit adjoints (cost_and_gradient), not autograd. For a linear H, J
is quadratic with Hessian A = I + Uᵀ Hᵀ R⁻¹ H U and gradient ∇J(w) = A w − b,
b = Uᵀ Hᵀ R⁻¹ d, d = y − H(x_b); ``solver="cg"`` solves A w = b with explicit adjoints.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from methods.base import Assimilator, Background, Observations, TrainingContext
from methods.threedvar import statistics
from methods.threedvar.b_matrix import BMatrix

SOLVERS = ("lbfgs", "cg")


def cost_function(b: BMatrix, obs: Observations, d: torch.Tensor, sigma: torch.Tensor):
    """J as a function of w (K, n_coef) float64 -> scalar, for innovations d = y − H(x_b) (N,).

    J(w) = ½ wᵀw + ½ Σ ((H(U w) − d) / σ)²  (H linear, so H(x_b + U w) − y = H(U w) − d).
    """
    def cost(w: torch.Tensor) -> torch.Tensor:
        r = (obs.operator(b.u(w)) - d) / sigma  # R^{-1/2} (H U w − d)
        return 0.5 * w.square().sum() + 0.5 * r.square().sum()

    return cost


def cost_and_gradient(b: BMatrix, obs: Observations, d: torch.Tensor, sigma: torch.Tensor):
    """w -> (J(w), ∇J(w)) with the hand-written adjoints instead of autograd:

        ∇J(w) = w + Uᵀ Hᵀ R⁻¹ (H U w − d).

    Two to three times faster than autograd's backward through U at 32 × 64 × 69 (no graph is
    recorded); the Taylor test checks it, and that it equals autograd's gradient.
    """
    def evaluate(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (obs.operator(b.u(w)) - d) / sigma
        j = 0.5 * w.square().sum() + 0.5 * r.square().sum()
        return j, w + b.u_adjoint(obs.adjoint(r / sigma))

    return evaluate


@dataclasses.dataclass(frozen=True)
class ThreeDVar(Assimilator):
    """Variational analysis with a static, balanced, spectral background-error covariance.

    Attributes:
        variance_scale: multiplies the NMC sample variances (B = variance_scale × the NMC
            covariance model). 48 h − 24 h forecast differences measure errors of day-1–2
            forecasts (their variance is roughly var(e48) + var(e24)); a cycled 6 h background
            is better, and NMC practice scales them down (Parrish & Derber 1992 tuned a similar
            factor). Default 0.25 (std halved). With precise observations (σ_o ≪ σ_b, the
            default protocol's 1 % of the climatological std) the analysis barely depends on it:
            increments are B's correlations times the innovations.
        eof_fraction: vertical EOFs kept per control variable: the leading ones explaining this
            fraction of its vertical variance.
        ridge: regularisation of the balance regressions, × the mean predictor variance.
        balance: regress z, t (msl, t2m) on ψ̃ (U_p's mass–wind coupling); False: univariate
            mass fields (winds still from ψ̃, χ̃). On held-out NMC-like errors balance improves a
            single analysis (z500 RMSE 125 vs 137 m² s⁻² at 1 % density). In 5-day cycling on the
            built-in world at 5 % density it helps winds and msl (u850 4.52 vs 5.37 m/s, msl
            324 vs 381 Pa) but not z500 (438 vs 397); at 1 % it made cycling worse than no
            assimilation (z500 935 vs none 764 m² s⁻²; without balance 694).
        min_obs_error: floor on σ_o (normalised units): σ_o = 0 (the noise-free protocol) would
            make R⁻¹ infinite; 1e-3 of a climatological std is far below any background error,
            so the analysis still fits noise-free observations almost exactly.
        solver: "lbfgs" (torch.optim.LBFGS, strong Wolfe) or "cg" (conjugate gradients on A).
        max_iterations: iteration cap of either solver. With σ_o ≈ 0.01 σ_clim the Hessian's
            condition number is ~1e4 and full convergence takes hundreds of iterations; on the
            built-in world 25 and 100 L-BFGS iterations gave the same cycled skill (3 days, 1 %),
            and 30 iterations took 1.1 s per analysis at 32 × 64 × 69 on 2 CPU cores; 25
            aim at ≤ 1 s.
        tolerance: stop when the gradient's max-norm (L-BFGS) or the residual's 2-norm (CG)
            has shrunk by this factor from its value at w = 0.
        history_size: L-BFGS memory.
    """

    variance_scale: float = 0.25
    eof_fraction: float = 0.999
    ridge: float = 1e-3
    balance: bool = True
    min_obs_error: float = 1e-3
    solver: str = "lbfgs"
    max_iterations: int = 25
    tolerance: float = 1e-4
    history_size: int = 20

    analysis_fields = ("min_obs_error", "solver", "max_iterations", "tolerance", "history_size")

    def __post_init__(self):
        checks = (
            ("variance_scale", self.variance_scale > 0, "> 0"),
            ("eof_fraction", 0 < self.eof_fraction <= 1, "in (0, 1]"),
            ("ridge", self.ridge >= 0, ">= 0"),
            ("min_obs_error", self.min_obs_error > 0, "> 0"),
            ("solver", self.solver in SOLVERS, f"one of {SOLVERS}"),
            ("max_iterations", self.max_iterations >= 1, ">= 1"),
            ("tolerance", 0 < self.tolerance < 1, "in (0, 1)"),
            ("history_size", self.history_size >= 1, ">= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"ThreeDVar.{name} = {getattr(self, name)!r} is invalid: "
                                 f"expected {expected}")

    @classmethod
    def for_tests(cls) -> ThreeDVar:
        """A fast configuration for the method contract (small grids, few iterations)."""
        return cls(max_iterations=30, tolerance=1e-3)

    # ----------------------------------------------------------------------------- prepare
    def prepare(self, ctx: TrainingContext) -> None:
        """Estimate the statistics from ctx.samples("nmc") (cached in ctx.cache_dir)."""
        path = ctx.cache_dir / "threedvar_statistics.pt"
        stats = None
        if path.exists():
            stats = torch.load(path, map_location="cpu", weights_only=True)
            if stats.get("shape") != list(ctx.spec.shape) or \
                    stats.get("names") != list(ctx.spec.names):
                stats = None  # a cache of another layout: re-estimate
        if stats is None:
            samples = ctx.samples("nmc")
            stats = statistics.estimate(ctx.spec, samples, self.variance_scale,
                                        self.eof_fraction, self.ridge, "cpu", self.balance)
            stats["shape"], stats["names"] = list(ctx.spec.shape), list(ctx.spec.names)
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            torch.save(stats, path)
        self.set_statistics(ctx.spec, stats, ctx.device)

    def set_statistics(self, spec, stats: dict, device: torch.device | str = "cpu") -> None:
        """Use given statistics (statistics.estimate's dict): for tests and prepare()."""
        object.__setattr__(self, "_b", BMatrix(spec, stats, device))
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_stats", stats)
        object.__setattr__(self, "_diagnostics", {})

    @property
    def b_matrix(self) -> BMatrix:
        b = getattr(self, "_b", None)
        if b is None:
            raise RuntimeError("ThreeDVar.analyse needs statistics: call prepare(ctx) first")
        return b

    def diagnostics(self) -> dict[str, float]:
        """Iterations, J at w = 0 and at the analysis, seconds of the minimisation."""
        return dict(getattr(self, "_diagnostics", {}))

    # ----------------------------------------------------------------------------- analyse
    def analyse(self, background: Background, obs: Observations) -> torch.Tensor:
        """x_a = x_b + U w_a with w_a = argmin J(w).

        Notation (code → symbol):
            x_b            background x_b (C, H, W), normalised
            b.u, b.u_adjoint   U and Uᵀ (b_matrix.py)
            obs.operator, obs.adjoint, obs.values   H, Hᵀ, y (N,)
            sigma          σ_n = max(σ_o,n, min_obs_error), R = diag(σ²)
            d              innovations d = y − H(x_b)
            w              control vector (K, n_coef), float64, w = 0 at the start
            cost           J(w) = ½ wᵀw + ½ Σ ((H(U w) − d) / σ)²

        Returns:
            (C, H, W) analysis, dtype and device of ``background.x_b``.
        """
        x_b = background.x_b
        b = self.b_matrix
        if b.device != x_b.device:  # prepare() saw another device: move B once
            self.set_statistics(self._spec, self._stats, x_b.device)
            b = self.b_matrix
        start = time.perf_counter()
        if len(obs) == 0:
            object.__setattr__(self, "_diagnostics", {"iterations": 0.0})
            return x_b.clone()
        obs = obs.to(x_b.device)
        xb64 = x_b.to(torch.float64)
        sigma = obs.error_std.to(torch.float64).clamp_min(self.min_obs_error)
        d = obs.values.to(torch.float64) - obs.operator(xb64)  # d = y − H(x_b)

        cost = cost_function(b, obs, d, sigma)
        j0 = 0.5 * float((d / sigma).square().sum())
        if self.solver == "cg":
            w, iterations = self._cg(b, obs, d, sigma)
        else:
            w, iterations = self._lbfgs(b.shape_w, cost_and_gradient(b, obs, d, sigma),
                                        x_b.device)
        with torch.no_grad():
            j_final = float(cost(w))
            x_a = xb64 + b.u(w)  # x = x_b + U w
        object.__setattr__(self, "_diagnostics", {
            "iterations": float(iterations), "cost_initial": j0, "cost_final": j_final,
            "seconds_minimise": time.perf_counter() - start})
        return x_a.to(x_b.dtype)

    def _lbfgs(self, shape, evaluate, device) -> tuple[torch.Tensor, int]:
        """argmin J by torch.optim.LBFGS (strong Wolfe), stopping on a relative gradient.

        ``evaluate(w) -> (J, ∇J)`` (cost_and_gradient): the closure hands LBFGS the explicit
        gradient through ``w.grad``, so no autograd graph is built.
        """
        w = torch.zeros(shape, dtype=torch.float64, device=device, requires_grad=True)
        with torch.no_grad():
            _, g0 = evaluate(w)
        g0_max = float(g0.abs().max())
        if g0_max == 0:
            return w.detach(), 0
        optimiser = torch.optim.LBFGS(
            [w], lr=1.0, max_iter=self.max_iterations, history_size=self.history_size,
            tolerance_grad=self.tolerance * g0_max, tolerance_change=1e-14,
            line_search_fn="strong_wolfe")

        def closure():
            with torch.no_grad():
                j, grad = evaluate(w)
            w.grad = grad
            return j

        optimiser.step(closure)
        return w.detach(), int(optimiser.state[optimiser._params[0]].get("n_iter", 0))

    def _cg(self, b: BMatrix, obs: Observations, d, sigma) -> tuple[torch.Tensor, int]:
        """Conjugate gradients on A w = rhs, A = I + Uᵀ Hᵀ R⁻¹ H U, rhs = Uᵀ Hᵀ R⁻¹ d."""
        def hessian(v):
            return v + b.u_adjoint(obs.adjoint(obs.operator(b.u(v)) / sigma.square()))

        rhs = b.u_adjoint(obs.adjoint(d / sigma.square()))
        w = torch.zeros_like(rhs)
        r, p = rhs.clone(), rhs.clone()
        rr = float(r.square().sum())
        stop = self.tolerance**2 * rr
        k = 0
        while k < self.max_iterations and rr > stop:
            ap = hessian(p)
            alpha = rr / float((p * ap).sum())
            w = w + alpha * p
            r = r - alpha * ap
            rr_new = float(r.square().sum())
            p = r + (rr_new / rr) * p
            rr, k = rr_new, k + 1
        return w, k
