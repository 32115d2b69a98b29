"""Hybrid 3DEnVar (Lorenc 2003; Buehner 2005): 3DVar's static B blended with the localised
covariance of the cycled ensemble, in one variational analysis; the ensemble itself is
updated by the LETKF and recentred on that analysis.

    B = β_s² B_static + β_e² (X' X'ᵀ) ∘ C_loc,      B_static = U Uᵀ (3DVar's)
    x_a = x_b + β_s U v + β_e Σ_n X'_n ∘ (Λ α_n),    X'_n = (x_n − x̄) / √(N − 1)
    J(v, α) = ½ ‖v‖² + ½ Σ_n ‖α_n‖² + ½ ‖(H x − y) / σ‖²,   σ = max(σ_o, min_obs_error)

(cost.py: the transform G, J and the CG solve; analysis.py: the analyser). The "α control
variable" form of the Schur product is Lorenc's (2003) and Buehner's (2005): each member's
perturbation is multiplied point by point by a smooth field Λ α_n with C_loc = Λ Λᵀ, so the
ensemble part of B is localised without ever forming it. Λ is a Gaussian-like spectral filter
on the sphere (cost.Localisation): the heat kernel, correlation ≈ exp(−d² / 2L²).

One cycle:
1. the LETKF (methods/letkf with its defaults: R-localisation, RTPP, additive inflation, a σ_o
   floor of 0.3) analyses the N background members;
2. the variational analysis above gives the mean x_a, with X' from the same background members
   (the forecasts, before the LETKF's additive draw);
3. the LETKF's members are recentred on x_a: x_a⁽ⁿ⁾ = x_LETKF⁽ⁿ⁾ − mean x_LETKF + x_a, as
   operational hybrids recentre their EnKF members on the hybrid-variational analysis (NCEP's
   GSI hybrid: Wang et al. 2013; Kleist & Ide 2015).
The Analysis carries x_a and the recentred members; the harness forecasts every member.

Layering: B_static is fitted exactly as 3DVar fits it, through methods/common/covariance
(``covariance.estimate`` on the NMC samples, 3DVar's defaults), so 3DVar's cache is not
shared but its numbers are. The LETKF step imports methods/letkf — the one place where a method
imports another method (DESIGN.md §2 says methods never import each other), so that the
members get the LETKF's analysis from its one implementation, settings and all; moving
letkf/analysis.py and additive.py to methods/common/ would restore the rule.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bench.state import StateSpec
from methods.base import Assimilator, MemoryEstimate, TrainingContext
from methods.common import covariance
from methods.common.covariance import BMatrix
from methods.envar.analysis import EnVarAnalyser
from methods.letkf import LETKF

CHANNEL_GROUPS = ("all", "variable")


@dataclasses.dataclass(frozen=True)
class EnVar(Assimilator):
    """Hybrid 3DEnVar with 3DVar's static B and an LETKF-updated ensemble (module docstring).

    Attributes:
        members: N, the ensemble size (the harness forecasts each member). 20, the LETKF's.
        beta_static: β_s², the weight of B_static = U Uᵀ in B (≥ 0). 0.8.
        beta_ensemble: β_e², the weight of the localised ensemble covariance (≥ 0). 0.2.
            β_s² + β_e² = 1 keeps B's total variance at 3DVar's when the ensemble spread
            matches B_static's; β_e² = 0, β_s² = 1 is 3DVar with ``solver="cg"``
            (tests/test_envar.py). Chosen on the validation period, never on the test period:
            15-day ``--period valid`` runs (seed 0, channel-mean normalised analysis RMSE after
            8 spin-up cycles, 1 % | 5 % density) gave 0.530 | 0.406 for the usual half-and-half
            start (0.5 / 0.5) and 0.502 | 0.347 for 0.8 / 0.2 (3DVar 0.542 | 0.302 on the same
            period, LETKF's docstring): the 20-member covariances help at 1 % and cost at 5 %,
            where near-perfect observations are fitted through sampled covariances.
        localisation_km: L, the Gaussian length of the localisation correlation
            exp(−d² / 2L²) in km (cost.Localisation); ``math.inf``: none (C_loc = 1). 550 km,
            the Gaussian equivalent of the LETKF's 2000 km Gaspari–Cohn cut-off 2c
            (σ ≈ c / √(10/3)), so the two analyses of a cycle localise alike. On the
            validation period (as for the β's) 1100 km was worse: 0.541 | 0.400 against
            0.502 | 0.347 at 550 km (β_s² = 0.8).
        channel_groups: which channels share an α field: "all" (one α_n per member for every
            channel: the ensemble's multivariate covariances, and so its balance between mass
            and wind, are kept in full, as in Lorenc's and Buehner's formulations where one α
            field multiplies every variable — theirs are 3D, localising vertically too; here α
            is 2D, so the ensemble part has no vertical localisation; control vector
            N × n_coef) or "variable" (one α field per variable, e.g. all levels of z: no
            cross-variable covariance from the ensemble, G times the control vector). "all"
            (not compared by cycling): balance matters most where the ensemble spreads
            information away from sparse observations.
        variance_scale, eof_fraction, ridge, balance: B_static's statistics, as ThreeDVar's
            fields of the same names and defaults (the same fitted numbers).
        min_obs_error: floor on σ_o (normalised), as ThreeDVar's (1e-3). The LETKF step keeps
            its own floor (0.3, its default).
        max_iterations: CG iterations at most. 60: on the built-in world's cycles CG reaches
            it every time (σ_o = 1 % of the std makes A ill-conditioned, as for 3DVar); 0.98 s
            per analysis with the LETKF step at 32 × 64 × 69, 1 % density, one thread (median
            of 12 test-period cycles; 3DVar 0.28 s in the same run). 40 iterations on the
            validation period: 0.504 | 0.349 against 0.502 | 0.347 with 60, about a third less
            CG time (kept at 60).
        tolerance: CG stops when the residual's 2-norm has shrunk by this factor from ‖b‖.
    """

    members: int = 20
    beta_static: float = 0.8
    beta_ensemble: float = 0.2
    localisation_km: float = 550.0
    channel_groups: str = "all"
    variance_scale: float = 0.25
    eof_fraction: float = 0.999
    ridge: float = 1e-3
    balance: bool = True
    min_obs_error: float = 1e-3
    max_iterations: int = 60
    tolerance: float = 1e-4

    #: fit() learns B_static's statistics and the LETKF's additive pool: none of these change it
    analysis_fields = ("seed", "members", "beta_static", "beta_ensemble", "localisation_km",
                       "channel_groups", "min_obs_error", "max_iterations", "tolerance")
    #: ``python -m bench tune``'s grid: the ensemble part's weight β_e² (β_s² kept) and the
    #: localisation length.
    tuning_grid = {"beta_ensemble": (0.05, 0.2, 0.5), "localisation_km": (550.0, 1100.0)}

    def __post_init__(self):
        self.check_fields((
            ("members", isinstance(self.members, int) and self.members >= 2, "an integer ≥ 2"),
            ("beta_static", math.isfinite(self.beta_static) and self.beta_static >= 0,
             "a weight ≥ 0 (β_s²)"),
            ("beta_ensemble", math.isfinite(self.beta_ensemble) and self.beta_ensemble >= 0,
             "a weight ≥ 0 (β_e²)"),
            ("beta_ensemble", self.beta_static + self.beta_ensemble > 0,
             "beta_static + beta_ensemble > 0 (B = 0 would ignore every observation)"),
            ("localisation_km", self.localisation_km > 0, "a length > 0 in km (inf: none)"),
            ("channel_groups", self.channel_groups in CHANNEL_GROUPS,
             f"one of {CHANNEL_GROUPS}"),
            ("variance_scale", self.variance_scale > 0, "> 0"),
            ("eof_fraction", 0 < self.eof_fraction <= 1, "in (0, 1]"),
            ("ridge", self.ridge >= 0, ">= 0"),
            ("min_obs_error", self.min_obs_error > 0, "> 0"),
            ("max_iterations", isinstance(self.max_iterations, int) and
             self.max_iterations >= 1, "an integer ≥ 1"),
            ("tolerance", 0 < self.tolerance < 1, "in (0, 1)"),
        ))

    @classmethod
    def for_tests(cls) -> EnVar:
        """A small ensemble and a short CG for the method contract."""
        return cls(members=8, max_iterations=30, tolerance=1e-3)

    def letkf(self) -> LETKF:
        """The LETKF that updates the members: its defaults, this ensemble size and seed."""
        return LETKF(members=self.members, seed=self.seed)

    # ----------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> dict:
        """B_static's statistics from ctx.samples("nmc") on the CPU (exactly ThreeDVar.fit's),
        the LETKF's additive pool (LETKF.fit), and the spec's "shape" and "names"."""
        stats = covariance.estimate(ctx.spec, ctx.samples("nmc"), self.variance_scale,
                                    self.eof_fraction, self.ridge, "cpu", self.balance)
        return {**stats, **self.letkf().fit(ctx), "shape": list(ctx.spec.shape),
                "names": list(ctx.spec.names)}

    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """Synthetic statistics (covariance.synthetic_statistics) and the LETKF's random pool."""
        stats = covariance.synthetic_statistics(spec, self.variance_scale, self.eof_fraction,
                                                seed)
        return {**stats, **self.letkf().untrained(spec, seed), "shape": list(spec.shape),
                "names": list(spec.names)}

    def load(self, state: dict, spec: StateSpec, device: torch.device | str) -> EnVarAnalyser:
        """B_static built once on ``device``, Λ, the channel groups and the LETKF analyser."""
        if state.get("shape") is not None and (list(state["shape"]), list(state["names"])) != (
                list(spec.shape), list(spec.names)):
            raise ValueError(f"the EnVar statistics are for (C, H, W) = {tuple(state['shape'])}"
                             f"; the spec is {spec.shape}: fit on this world")
        keys = [ch.variable if self.channel_groups == "variable" else "" for ch in spec.channels]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        group = torch.tensor([index[k] for k in keys], dtype=torch.long)
        return EnVarAnalyser(self, BMatrix(spec, state, device), group,
                             self.letkf().load(state, spec, device))

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: U's Legendre tables (as ThreeDVar's) plus the LETKF's. Analysis: the LETKF's
        analysis, 24 float64 states (as 3DVar), X' and two N × C grid fields of the Schur
        products (float64), and 6 control vectors of CG (3DVar's w plus α, N × G × n_coef)."""
        c, h, w = spec.shape
        n = members or self.members
        lmax, mmax = spec.truncation
        groups, _, _ = covariance.layout(spec)
        n_coef = 2 * lmax * mmax  # upper bound on the real spectral coefficients
        n_groups = len({ch.variable for ch in spec.channels}) \
            if self.channel_groups == "variable" else 1
        z_bytes = 8.0 * (sum(g.size for g in groups) + n * n_groups) * n_coef
        letkf = self.letkf().memory_estimate(spec, n_obs, n)
        f64 = 8.0 * c * h * w
        return MemoryEstimate(8.0 * mmax * lmax * h * 6 + 8.0 * mmax * h * h * 2 + letkf.model,
                              letkf.analysis + 24 * f64 + 3 * n * f64 + 6 * z_bytes)
