"""No assimilation, as an ensemble: the control that ensemble methods must beat.

The harness's initial ensemble (the same seeded members every ensemble method starts from)
is forecast freely: each member's analysis is its background, and the scored analysis is the
members' mean,

    x_a⁽ⁿ⁾ = x_b⁽ⁿ⁾,   x_a = (1/N) Σ_n x_b⁽ⁿ⁾.

Why it is needed: an ensemble mean is smoother than any member, and the mean of diverging
free forecasts tends towards climatology, whose RMSE is below a single forecast's once the
forecasts have lost their skill (by √2 for independent draws from the climate). An ensemble
method scored by its mean therefore has an advantage over ``none`` that owes nothing to its
observations; this control measures it, under identical cycles.
"""

from __future__ import annotations

import dataclasses

from bench.state import StateSpec
from methods.base import (
    Analyser,
    Analysis,
    Assimilator,
    Background,
    MemoryEstimate,
    Observations,
)


@dataclasses.dataclass(frozen=True)
class NoAssimilationEnsemble(Assimilator, Analyser):
    """Free ensemble forecasts from the harness's initial ensemble (module docstring).

    Attributes:
        members: N, the ensemble size: compare with an ensemble method of the same N (20 is
            the LETKF's and EnVar's default).
    """

    members: int = 20

    def __post_init__(self):
        self.check_fields((
            ("members", isinstance(self.members, int) and self.members >= 2, "an integer ≥ 2"),
        ))

    @classmethod
    def for_tests(cls) -> NoAssimilationEnsemble:
        """A small ensemble for the method contract."""
        return cls(members=4)

    def load(self, state, spec, device) -> NoAssimilationEnsemble:
        return self

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a⁽ⁿ⁾ = x_b⁽ⁿ⁾ (N, C, H, W); x_a their mean (C, H, W) = ``background.x_b``
        recomputed from the members, so a harness that hands over another mean is not
        trusted."""
        members = background.member_backgrounds.clone()
        return Analysis(members.mean(0), members=members)

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """No model; an analysis holds the N cloned members and their mean (float32)."""
        c, h, w = spec.shape
        return MemoryEstimate(0.0, 4.0 * c * h * w * ((members or self.members) + 1))
