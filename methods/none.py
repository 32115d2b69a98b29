"""No assimilation: the analysis is the background (the skill every method must beat)."""

from __future__ import annotations

import dataclasses

from methods.base import Analyser, Analysis, Assimilator, Background, Observations


@dataclasses.dataclass(frozen=True)
class NoAssimilation(Assimilator, Analyser):
    """The analysis is the background: the skill every method must beat.

    It learns nothing, so the frozen method is its own analyser.
    """

    def load(self, state, spec, device) -> NoAssimilation:
        return self

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        return Analysis(background.x_b.clone())
