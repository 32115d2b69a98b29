"""No assimilation: the analysis is the background (the skill every method must beat)."""

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
class NoAssimilation(Assimilator, Analyser):
    """The analysis is the background: the skill every method must beat.

    It learns nothing, so the frozen method is its own analyser.
    """

    def load(self, state, spec, device) -> NoAssimilation:
        return self

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        return Analysis(background.x_b.clone())

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """No model; an analysis holds one float32 state (the clone)."""
        c, h, w = spec.shape
        return MemoryEstimate(0.0, 4.0 * c * h * w)
