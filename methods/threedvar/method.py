"""3DVar in control-variable space, minimised by L-BFGS or conjugate gradients.

    x = x_b + U w,    J(w) = ½ ‖w‖² + ½ Σ_n ((H(x_b + U w) − y)_n / σ_n)²,
    σ_n = max(σ_o,n, min_obs_error)

with U = U_p U_v S U_h the static covariance model (methods/common/covariance: bmatrix.py)
whose statistics ``fit`` estimates from NMC samples (statistics.py). J is evaluated in float64
(L-BFGS with a strong-Wolfe line search stalls in float32, FACTS.md), its gradient with the
explicit adjoints (solvers.cost_and_gradient), not autograd. For a linear H, J is quadratic
with Hessian A = I + Uᵀ Hᵀ R⁻¹ H U and gradient ∇J(w) = A w − b, b = Uᵀ Hᵀ R⁻¹ d,
d = y − H(x_b); ``solver="cg"`` solves A w = b with explicit adjoints (solvers.py).

Lifecycle: ``fit`` returns the statistics (the dict of ``covariance.estimate``, plus the spec's
"shape" and "names"), ``load`` builds B on the device once, and the ``ThreeDVarAnalyser`` holds
it (``.b``).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from bench.state import StateSpec
from methods.base import (
    Analyser,
    Analysis,
    Assimilator,
    Background,
    Kernel,
    MemoryEstimate,
    Observations,
    TrainingContext,
)
from methods.common import covariance
from methods.common.covariance import BMatrix
from methods.threedvar.solvers import (
    conjugate_gradients,
    cost_and_gradient,
    cost_function,
    lbfgs,
)

SOLVERS = ("cg", "lbfgs")
#: ``ThreeDVar.tolerance`` when None, per solver (its docstring says how CG's was chosen).
SOLVER_TOLERANCE = {"cg": 0.03, "lbfgs": 1e-4}
#: Valid values of ``ThreeDVar.training_samples`` (bench/samples.py kinds).
TRAINING_SAMPLES = ("nmc", "known_prior")
#: CG settings of ``with_covariance``: the exact minimum of J (residual / initial ≤ 1e-8).
EXACT_TOLERANCE, EXACT_ITERATIONS = 1e-8, 10_000


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
        solver: "cg" (conjugate gradients on A = I + Uᵀ Hᵀ R⁻¹ H U: J is quadratic in w) or
            "lbfgs" (torch.optim.LBFGS, strong Wolfe; the default before CG). On the
            validation period (15 days, seed 0; channel-mean normalised analysis RMSE,
            cost evaluations per analysis) at 0.1 / 1 / 5 / 20 / 50 %: L-BFGS 25 gave
            0.712 / 0.542 / 0.302 / 0.191 / 0.112 with 30 evaluations; CG to a residual of
            0.03 gave 0.714 / 0.537 / 0.302 with 9 / 14 / 22.5 but went on to 37 and 65
            iterations at 20 / 50 %, where the better-converged analysis is worse (0.282;
            diverged): with ~10⁴–7·10⁴ observations the static B and R do not describe the
            6 h errors, and the truncated minimiser is what regularises (L-BFGS on a quadratic
            with exact line searches makes CG's iterates). Capped at 25 iterations (the
            default) CG gives 0.199 / 0.117 there, 4 % behind L-BFGS 25: at 20–50 % choose
            the solver settings per density (``bench tune``; CG to 0.1 gave 0.180 / 0.124).
        max_iterations: iteration cap of either solver (25). With σ_o ≈ 0.01 σ_clim the
            Hessian's condition number is ~1e4 and full convergence takes hundreds of
            iterations; the cap binds only at dense networks (CG to 0.03 needed at most 11 /
            17 / 24 iterations at 0.1 / 1 / 5 %).
        tolerance: stop when the residual's 2-norm (CG) or the gradient's max-norm (L-BFGS)
            has shrunk by this factor from its value at w = 0; None: the solver's default
            (``SOLVER_TOLERANCE``: 0.03 for CG, chosen above on the validation period; 1e-4
            for L-BFGS, whose 25 iterations stop first).
        history_size: L-BFGS memory.
        training_samples: what ``fit`` estimates U from: "nmc" (default) or "known_prior"
            (``known_prior_count`` draws from the known B of bench/samples.py: 3DVar's
            learning curve on the known-answer check).
        known_prior_count: the number N of known-prior draws (with "known_prior" only).
            Both sample fields are ``keyed_when_set``: at their defaults they are left out of
            the cache key, so the NMC fits cached before them keep their entries.
        nmc_period, nmc_days, nmc_max_samples: which NMC samples ``fit`` estimates U from
            (bench/samples.py ``SampleSettings.period``, ``days``, ``max_samples``): a part
            ``START..END`` of the training period ("" = all of it), its last ``nmc_days`` days
            (365, a year of pairs as NMC practice uses; 0 = all), at most ``nmc_max_samples``
            daily starts (0 = all). The defaults select the built-in world's whole training
            year and the last year of ERA5's; ``keyed_when_set`` as the sample fields above.
    """

    variance_scale: float = 0.25
    eof_fraction: float = 0.999
    ridge: float = 1e-3
    balance: bool = True
    min_obs_error: float = 1e-3
    solver: str = "cg"
    max_iterations: int = 25
    tolerance: float | None = None
    history_size: int = 20
    training_samples: str = "nmc"
    known_prior_count: int = 363
    nmc_period: str = ""
    nmc_days: int = 365
    nmc_max_samples: int = 0

    analysis_fields = ("min_obs_error", "solver", "max_iterations", "tolerance", "history_size")
    keyed_when_set = ("training_samples", "known_prior_count", "nmc_period", "nmc_days",
                      "nmc_max_samples")
    #: ``python -m bench tune``'s grid, analysis fields only (no refit): the σ_o floor acts as
    #: an R inflation (σ_o is 1 % of the std by default, so the analysis fits the observations
    #: almost exactly; a floor of 0.03–0.3 weighs the background more, as a smaller
    #: variance_scale would, which is a fit field) and the iteration budget (denser networks
    #: make J harder to minimise).
    tuning_grid = {"min_obs_error": (1e-3, 0.03, 0.1, 0.3), "max_iterations": (25, 100)}

    def __post_init__(self):
        checks = (
            ("variance_scale", self.variance_scale > 0, "> 0"),
            ("eof_fraction", 0 < self.eof_fraction <= 1, "in (0, 1]"),
            ("ridge", self.ridge >= 0, ">= 0"),
            ("min_obs_error", self.min_obs_error > 0, "> 0"),
            ("solver", self.solver in SOLVERS, f"one of {SOLVERS}"),
            ("max_iterations", self.max_iterations >= 1, ">= 1"),
            ("tolerance", self.tolerance is None or 0 < self.tolerance < 1,
             "in (0, 1), or None for the solver's default"),
            ("history_size", self.history_size >= 1, ">= 1"),
            ("training_samples", self.training_samples in TRAINING_SAMPLES,
             f"one of {TRAINING_SAMPLES}"),
            ("known_prior_count", self.known_prior_count >= 1, ">= 1"),
            ("nmc_period", self.nmc_period == "" or ".." in self.nmc_period,
             "START..END (ISO dates, inside the training period) or \"\""),
            ("nmc_days", self.nmc_days >= 0, ">= 0 (0: the whole period)"),
            ("nmc_max_samples", self.nmc_max_samples >= 0, ">= 0 (0: no cap)"),
        )
        self.check_fields(checks)

    @property
    def stop_tolerance(self) -> float:
        """``tolerance``, or the solver's default (``SOLVER_TOLERANCE``) when it is None."""
        return SOLVER_TOLERANCE[self.solver] if self.tolerance is None else self.tolerance

    @classmethod
    def for_tests(cls) -> ThreeDVar:
        """A fast configuration for the method contract (small grids, few iterations)."""
        return cls(max_iterations=30, tolerance=1e-3)

    # ----------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> dict:
        """The statistics of U estimated from ctx.samples("nmc") (or the known-prior draws)
        on the CPU, with the spec's "shape" and "names" (what ``load`` checks the grid
        against)."""
        samples = (ctx.samples("known_prior", count=self.known_prior_count)
                   if self.training_samples == "known_prior" else
                   ctx.samples("nmc", period=self.nmc_period, days=self.nmc_days,
                               max_samples=self.nmc_max_samples))
        stats = covariance.estimate(ctx.spec, samples, self.variance_scale,
                                    self.eof_fraction, self.ridge, "cpu", self.balance)
        return with_layout(stats, ctx.spec)

    def with_covariance(self, stats: dict, spec: StateSpec) -> tuple[ThreeDVar, dict]:
        """This 3DVar with B = U Uᵀ of ``stats`` as its state, minimised by CG to a residual
        of 1e-8 of the initial one (J is quadratic for a linear H: the exact analysis
        x_b + B Hᵀ (H B Hᵀ + R)⁻¹ d up to that tolerance)."""
        exact = dataclasses.replace(self, solver="cg", tolerance=EXACT_TOLERANCE,
                                    max_iterations=max(self.max_iterations, EXACT_ITERATIONS))
        return exact, with_layout(stats, spec)

    def load(self, state: dict, spec: StateSpec, device: torch.device | str
             ) -> ThreeDVarAnalyser:
        """B = U Uᵀ from ``state`` (fit's, untrained's or any ``covariance.estimate`` dict)
        built once on ``device``, where the analysis runs."""
        shape, names = state.get("shape"), state.get("names")
        if shape is not None and (list(shape) != list(spec.shape) or
                                  list(names) != list(spec.names)):
            raise ValueError(f"the 3DVar statistics are for (C, H, W) = {tuple(shape)} with "
                             f"channels {list(names)[:3]}…; the spec is {spec.shape} with "
                             f"{list(spec.names)[:3]}…: fit on this world")
        return ThreeDVarAnalyser(self, BMatrix(spec, state, device))

    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """Synthetic statistics of the right shapes (covariance.synthetic_statistics)."""
        return with_layout(covariance.synthetic_statistics(
            spec, self.variance_scale, self.eof_fraction, seed), spec)

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the four SHTs' Legendre tables, 8 B × mmax × lmax × nlat × 6, and the two
        fused wind tables of legendre.Winds, 8 B × mmax × nlat² × 2. Analysis: 24 float64
        states (the cost's autograd graph) + (2 × history_size + 6) control vectors w in
        float64 (L-BFGS memory). Multipliers checked against CPU measurements at 32 × 64 and
        91 × 180 and rounded up."""
        c, h, w = spec.shape
        f64 = 8.0 * c * h * w
        lmax, mmax = spec.truncation
        groups, _, _ = covariance.layout(spec)
        n_coef = 2 * lmax * mmax  # upper bound on the real spectral coefficients
        w_bytes = 8.0 * sum(g.size for g in groups) * n_coef
        return MemoryEstimate(8.0 * mmax * lmax * h * 6 + 8.0 * mmax * h * h * 2,
                              24 * f64 + (2 * self.history_size + 6) * w_bytes)


def with_layout(stats: dict, spec: StateSpec) -> dict:
    """``stats`` with the spec's "shape" and "names" added (checked by ``load``)."""
    return {**stats, "shape": list(spec.shape), "names": list(spec.names)}


class ThreeDVarAnalyser(Analyser):
    """3DVar with its covariance model on one device.

    Attributes:
        method: the ThreeDVar (solver settings).
        b: the BMatrix (U and Uᵀ) on the analysis device.
    """

    def __init__(self, method: ThreeDVar, b: BMatrix):
        self.method, self.b = method, b

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a = x_b + U w_a with w_a = argmin J(w), on B's device.

        Notation (code → symbol):
            x_b            background x_b (C, H, W), normalised
            b.u, b.u_adjoint   U and Uᵀ (methods/common/covariance/bmatrix.py)
            obs.operator, obs.adjoint, obs.values   H, Hᵀ, y (N,)
            sigma          σ_n = max(σ_o,n, min_obs_error), R = diag(σ²)
            d              innovations d = y − H(x_b)
            w              control vector (K, n_coef), float64, w = 0 at the start
            cost           J(w) = ½ wᵀw + ½ Σ ((H(U w) − d) / σ)²

        Returns:
            Analysis: x_a (C, H, W) in the dtype and on the device of ``background.x_b``;
            diagnostics ``iterations``, ``evaluations`` (cost and gradient evaluations:
            L-BFGS's func_evals, or CG iterations + 1 for the right-hand side), ``j_min``
            (= ``cost_final``, J at the analysis), ``cost_initial`` (J at w = 0),
            ``seconds_minimise``.
        """
        m, b = self.method, self.b
        x_b = background.x_b
        start = time.perf_counter()
        if len(obs) == 0:
            return Analysis(x_b.clone(), diagnostics={"iterations": 0.0, "evaluations": 0.0,
                                                      "j_min": 0.0})
        obs = obs.to(b.device)
        xb64 = x_b.to(device=b.device, dtype=torch.float64)
        sigma = obs.error_std.to(torch.float64).clamp_min(m.min_obs_error)
        d = obs.values.to(torch.float64) - obs.operator(xb64)  # d = y − H(x_b)

        cost = cost_function(b, obs, d, sigma)
        j0 = 0.5 * float((d / sigma).square().sum())
        if m.solver == "cg":
            w, iterations = conjugate_gradients(b, obs, d, sigma, tolerance=m.stop_tolerance,
                                                max_iterations=m.max_iterations)
            evaluations = iterations + 1
        else:
            w, iterations, evaluations = lbfgs(
                b.shape_w, cost_and_gradient(b, obs, d, sigma), b.device,
                max_iterations=m.max_iterations, history_size=m.history_size,
                tolerance=m.stop_tolerance)
        with torch.no_grad():
            j_final = float(cost(w))
            x_a = xb64 + b.u(w)  # x = x_b + U w
        return Analysis(x_a.to(device=x_b.device, dtype=x_b.dtype), diagnostics={
            "iterations": float(iterations), "evaluations": float(evaluations),
            "j_min": j_final, "cost_initial": j0, "cost_final": j_final,
            "seconds_minimise": time.perf_counter() - start})

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """U then Uᵀ on a random control vector: the SHT pair of every cost evaluation."""
        b = self.b
        g = torch.Generator().manual_seed(0)
        w = torch.randn(b.shape_w, generator=g, dtype=torch.float64).to(b.device)
        return Kernel("U and Uᵀ (SHT pair)", lambda: b.u_adjoint(b.u(w)), "FLOP", "float64")
