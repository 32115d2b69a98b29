"""Strong-constraint incremental 4DVar through the forecast model's autograd.

    x₀ = x_b + U w,   J(w) = ½ ‖w‖² + ½ Σ_t ‖(H_t M_{0→t}(x₀) − y_t) / σ_t‖²

over the window's observation times t (offsets 0, every, … ≤ window_hours; ObservationWindow),
σ_t = max(σ_o, min_obs_error) as 3DVar's (plus an optional model-error term, ``model_error``),
with 3DVar's static covariance model B = U Uᵀ (methods/common/covariance, fitted exactly as
3DVar fits it) and the model's input frames moved by the increment U w on every frame (the
harness's "increment" history update). cost.py has J, ∇J and the Gauss–Newton Hessian.

Minimisation: incremental Gauss–Newton (Courtier, Thépaut & Hollingsworth 1994), not L-BFGS on
the non-linear J. Outer loop k runs the non-linear model from x_b + U w_k (keeping its autograd
graph) and linearises M there; the inner loop solves the quadratic

    A δw = −∇J(w_k),   A = I + Σ_t Uᵀ M'_tᵀ H_tᵀ R_t⁻¹ H_t M'_t U,   w_{k+1} = w_k + δw

by conjugate gradients (methods/common/krylov.py), the tangent-linear H M' v and the adjoint
M'ᵀ Hᵀ r taken from the kept graph by autograd (cost.py). Why:
- cost per iteration: one CG iteration is one tangent-linear and one adjoint pass (≈ 35 + 15 ms
  per 6-h step of the 32 × 64 × 69 emulator on one CPU thread) plus U and Uᵀ; an L-BFGS
  iteration is a forward and a backward pass (≈ 12 + 20 ms) but its strong-Wolfe line search
  spends more than one evaluation per iteration, and each evaluation redoes the forward pass.
  Per iteration the two are about even; CG also needs no line search.
- float32: the model runs in float32. L-BFGS's line search compares costs of nearby non-linear
  trajectories whose float32 round-off is of the size of the decreases it looks for late in
  the minimisation (3DVar's L-BFGS stalls in float32, FACTS.md); CG on the quadratic inner
  problem never compares costs: the model's round-off only perturbs A slightly (the CG
  iterates live in float64).
- practice: operational 4DVar (ECMWF, Météo-France, the Met Office) is incremental with a few
  outer loops and CG/Lanczos inner loops; GRAPES measured CG 40 % cheaper than a quasi-Newton
  minimiser for the same analysis (Liu et al. 2018). FengWu-4DVar (Xiao et al. 2023) takes
  the gradient of the full non-linear cost by back-propagation through FengWu; autograd gives
  us the same gradient, and the tangent-linear too.
- a window with observations at offset 0 only is 3DVar with solver="cg", operation for
  operation (one outer loop gives the same numbers).

Refuses a window without a differentiable model (FengWu's ONNX graph) with a one-line error.
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
    ObservationWindow,
    TrainingContext,
)
from methods.common import covariance
from methods.common.covariance import BMatrix
from methods.common.krylov import conjugate_gradients
from methods.fourdvar.cost import STEP_HOURS, WindowCost

#: Bytes per grid point that one 6-h emulator step keeps for the backward passes (its forward
#: graph plus the double-backward graph of the tangent-linear): ≈ A + B × channels, measured
#: with torch.autograd.graph.saved_tensors_hooks on the default EmulatorConfig (width 64,
#: 4 blocks, history 2): 10 460 B at 9 channels and 12 690 B at 69 (32 × 64), 12 140 B at 69
#: (64 × 128); rounded up. A method never sees the model before it analyses, so
#: memory_estimate assumes the built-in emulator of the default size.
SAVED_BYTES_PER_POINT = 10_500
SAVED_BYTES_PER_POINT_CHANNEL = 40


def refusal(window, kernel: bool = False) -> str | None:
    """Why 4DVar cannot analyse ``window`` (one line), or None. A window without a model is
    refused when it has times after the analysis (every window of a run) or for the dominant
    kernel (``kernel``); one of offset 0 alone needs no model (the static ``check``)."""
    if not isinstance(window, ObservationWindow):
        return (f"4DVar analyses an ObservationWindow, got {type(window).__name__}: it needs "
                "window_hours > 0 and the harness's window of observations")
    if window.model is None and (kernel or window.offsets_hours[-1] > 0):
        return ("4DVar needs a differentiable forecast model (the built-in emulator) to step "
                "through its window; this window has none (FengWu's ONNX graph is not "
                "differentiable): run 4DVar with --model emulator")
    return None


@dataclasses.dataclass(frozen=True)
class FourDVar(Assimilator):
    """Incremental 4DVar with 3DVar's static B, through the model's autograd.

    Attributes:
        window_hours: length of the window (a multiple of 6 h; ≥ 6). The harness hands the
            observations at every ``--window-every`` hours of it and the model.
        variance_scale, eof_fraction, ridge, balance: the covariance model's statistics, as
            ThreeDVar's fields of the same names and defaults (the same fitted state).
        min_obs_error: floor on σ_o (normalised), as ThreeDVar's.
        model_error: σ_q, a model-error std per 6-h step (normalised) added to the error of
            observations s steps into the window: σ² = max(σ_o, min_obs_error)² + s σ_q².
            0 (default) is strong-constraint 4DVar as written above. With the default 1 %
            observation noise the model's error dominates later misfits: one analysis on the
            built-in world (1 % density, 6 starts, analysis / background RMSE, mean over
            channels; 3DVar 0.993 from 12-h forecasts, 0.965 from 48-h ones) gave, from 12-h
            forecasts, 1.017 (6-h window) and 1.079 (12 h) with σ_q = 0, 1.002 and 1.025 with
            0.03, 0.992 and 0.995 with 0.09 (the emulator's 6-h error from the truth); from
            48-h forecasts 0.938 and 0.920 with σ_q = 0, 0.938 and 0.918 with 0.03, 0.947 and
            0.935 with 0.09.
        outer_loops: Gauss–Newton outer loops (re-linearisations of the model); operational
            systems use 2–3. Same single analyses: 6-h window 1 × 24, 2 × 12 and 3 × 8
            iterations gave 0.9380, 0.9379, 0.9381 (48-h forecasts); 12-h window 1 × 24 and
            2 × 12 gave 0.921 and 0.920.
        inner_iterations: CG iterations per outer loop (at most). 2 × 12 took 1.7 s per
            analysis at 32 × 64 × 69, 1 % density, 6-h window, one CPU thread (3DVar's 25
            L-BFGS iterations take about 0.4 s).
        tolerance: an inner loop stops when its residual's 2-norm has shrunk by this factor;
            the outer loops stop early when ‖∇J(w_k)‖ has shrunk by it from ‖∇J(0)‖.
    """

    window_hours: int = 6
    variance_scale: float = 0.25
    eof_fraction: float = 0.999
    ridge: float = 1e-3
    balance: bool = True
    min_obs_error: float = 1e-3
    model_error: float = 0.0
    outer_loops: int = 2
    inner_iterations: int = 12
    tolerance: float = 1e-4

    analysis_fields = ("window_hours", "min_obs_error", "model_error", "outer_loops",
                       "inner_iterations", "tolerance")
    #: ``python -m bench tune``'s grid: the model-error std σ_q (0: strong constraint; 0.09 is
    #: the emulator's 6-h error, see above) and the inner-loop budget.
    tuning_grid = {"model_error": (0.0, 0.03, 0.09), "inner_iterations": (12, 24)}

    def __post_init__(self):
        self.check_fields((
            ("window_hours", isinstance(self.window_hours, int) and
             self.window_hours >= STEP_HOURS and self.window_hours % STEP_HOURS == 0,
             f"a positive multiple of {STEP_HOURS}"),
            ("variance_scale", self.variance_scale > 0, "> 0"),
            ("eof_fraction", 0 < self.eof_fraction <= 1, "in (0, 1]"),
            ("ridge", self.ridge >= 0, ">= 0"),
            ("min_obs_error", self.min_obs_error > 0, "> 0"),
            ("model_error", self.model_error >= 0, ">= 0"),
            ("outer_loops", self.outer_loops >= 1, ">= 1"),
            ("inner_iterations", self.inner_iterations >= 1, ">= 1"),
            ("tolerance", 0 < self.tolerance < 1, "in (0, 1)"),
        ))

    @classmethod
    def for_tests(cls) -> FourDVar:
        """A fast configuration for the method contract (6 h window, few iterations)."""
        return cls(outer_loops=2, inner_iterations=10, tolerance=1e-3)

    # ----------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> dict:
        """The covariance statistics from ctx.samples("nmc") on the CPU (as ThreeDVar.fit),
        with the spec's "shape" and "names"."""
        stats = covariance.estimate(ctx.spec, ctx.samples("nmc"), self.variance_scale,
                                    self.eof_fraction, self.ridge, "cpu", self.balance)
        return {**stats, "shape": list(ctx.spec.shape), "names": list(ctx.spec.names)}

    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """Synthetic statistics of the right shapes (covariance.synthetic_statistics)."""
        stats = covariance.synthetic_statistics(spec, self.variance_scale, self.eof_fraction,
                                                seed)
        return {**stats, "shape": list(spec.shape), "names": list(spec.names)}

    def load(self, state: dict, spec: StateSpec, device: torch.device | str
             ) -> FourDVarAnalyser:
        """B = U Uᵀ from ``state`` built once on ``device``; its grid must be ``spec``'s."""
        if state.get("shape") is not None and (list(state["shape"]), list(state["names"])) != (
                list(spec.shape), list(spec.names)):
            raise ValueError(f"the 4DVar statistics are for (C, H, W) = {tuple(state['shape'])}"
                             f"; the spec is {spec.shape}: fit on this world")
        return FourDVarAnalyser(self, BMatrix(spec, state, device))

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: U's Legendre tables (8 B × mmax × lmax × nlat × 6 + 8 B × mmax × nlat² × 2,
        as 3DVar). Analysis: 24 float64 states and 12 control vectors (CG's, the gradient's),
        plus what the model's steps keep for the backward passes: steps × H × W ×
        (SAVED_BYTES_PER_POINT + SAVED_BYTES_PER_POINT_CHANNEL × C), steps = window_hours / 6
        (the built-in emulator of the default size; no model is needed to estimate)."""
        c, h, w = spec.shape
        lmax, mmax = spec.truncation
        groups, _, _ = covariance.layout(spec)
        w_bytes = 8.0 * sum(g.size for g in groups) * 2 * lmax * mmax
        steps = self.window_hours // STEP_HOURS
        saved = steps * h * w * (SAVED_BYTES_PER_POINT + SAVED_BYTES_PER_POINT_CHANNEL * c)
        return MemoryEstimate(8.0 * mmax * lmax * h * 6 + 8.0 * mmax * h * h * 2,
                              24 * 8.0 * c * h * w + 12 * w_bytes + saved)


class FourDVarAnalyser(Analyser):
    """4DVar with its covariance model on one device.

    Attributes:
        method: the FourDVar (loop settings).
        b: the BMatrix (U and Uᵀ) on the analysis device.
    """

    def __init__(self, method: FourDVar, b: BMatrix):
        self.method, self.b = method, b

    def analyse(self, background: Background, window: ObservationWindow) -> Analysis:
        """x_a = x₀ = x_b + U w_a, w_a from ``outer_loops`` Gauss–Newton loops (module doc).

        Notation (code → symbol):
            window.observations   ((offset t, y_t with H_t, σ_o), …), t = 0, every, …
            window.model          M: step_differentiable, one 6-h step, through autograd
            background.history    the model's input frames ending in x_b; all move by U w
            cost                  WindowCost: J(w), x₀; ``linearise(w)`` -> ∇J(w), A v
            w                     control vector (K, n_coef) float64, 0 at the start
            rhs, dw               −∇J(w_k), the inner loop's solution δw of A δw = rhs

        Returns:
            Analysis: x_a in x_b's dtype and device. Diagnostics: ``evaluations`` (model
            passes: forward + tangent-linear + adjoint steps), ``model_steps``,
            ``tangent_steps``, ``adjoint_steps``, ``iterations`` (CG iterations, all outer
            loops), ``outer_iterations``, ``j_min`` (= ``cost_final``: the non-linear J at
            x_a), ``cost_initial`` (J at w = 0), ``seconds_minimise``.

        Raises:
            TypeError: the window has no differentiable model, or is not a window.
        """
        problem = refusal(window)
        if problem:
            raise TypeError(problem)
        m, b = self.method, self.b
        start = time.perf_counter()
        x_b = background.x_b
        cost = WindowCost(b, window, background, m.min_obs_error, m.model_error)
        if len(cost) == 0:
            return Analysis(x_b.clone(), diagnostics={"iterations": 0.0, "evaluations": 0.0,
                                                      "j_min": 0.0, "outer_iterations": 0.0})
        w = torch.zeros(b.shape_w, dtype=torch.float64, device=b.device)
        iterations = outer = 0
        for k in range(m.outer_loops):
            lin = cost.linearise(w)
            rhs = -lin.gradient
            norm = float(rhs.norm())
            if k == 0:
                j0, norm0 = lin.cost, norm
            if norm == 0 or (k > 0 and norm <= m.tolerance * norm0):
                break
            dw, n = conjugate_gradients(lin.hessian, rhs, max_iterations=m.inner_iterations,
                                        tolerance=m.tolerance)
            del lin  # frees the linearisation's graphs before the next forward pass
            w, iterations, outer = w + dw, iterations + n, outer + 1
        j_final, x_a = cost.evaluate(w)
        passes = cost.passes
        return Analysis(x_a.to(device=x_b.device, dtype=x_b.dtype), diagnostics={
            "iterations": float(iterations), "outer_iterations": float(outer),
            "evaluations": float(sum(passes.values())), "model_steps": float(passes["forward"]),
            "tangent_steps": float(passes["tangent"]),
            "adjoint_steps": float(passes["adjoint"]), "j_min": j_final, "cost_initial": j0,
            "cost_final": j_final, "seconds_minimise": time.perf_counter() - start})

    def dominant_kernel(self, background: Background, window: ObservationWindow) -> Kernel:
        """One forward and one backward pass of a model step (from the background's frames):
        what every outer loop, tangent-linear and adjoint pass repeats."""
        problem = refusal(window, kernel=True)
        if problem:
            raise TypeError(problem)
        model, frames = window.model, background.history[None]

        def step_and_adjoint():  # .backward, not autograd.grad: FlopCounterMode's module
            inputs = frames.detach().requires_grad_(True)  # hooks refuse the latter
            model.step_differentiable(inputs).sum().backward()
            return inputs.grad

        return Kernel("model step forward + backward", step_and_adjoint, "FLOP",
                      str(frames.dtype).removeprefix("torch."))
