"""The prior a method starts from (``Background``) and what it returns (``Analysis``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

#: Diagnostics keys with one meaning across methods (the harness reads them; methods add more).
STANDARD_DIAGNOSTICS = {
    "evaluations": "expensive evaluations of the analysis: cost functions (variational), "
                   "denoiser calls (diffusion), model steps (4D)",
    "iterations": "iterations of the minimiser or sampler",
    "j_min": "the cost function at the analysis (variational methods)",
}


@dataclasses.dataclass(frozen=True)
class Background:
    """The prior of one cycle.

    Attributes:
        x_b: (C, H, W) the background (the forecast valid at ``valid_time``), normalised; for an
            ensemble method the ensemble mean of the members' backgrounds.
        history: (history, C, H, W) the frames the forecast model will start from after this
            cycle, oldest first, ending in x_b; the harness updates them with the analysis
            (``CycleSettings.history_update``: x_a − x_b added to every frame by default).
        valid_time: numpy datetime64 of the analysis.
        lead_hours: forecast lead of x_b (e.g. 48 for the time-lagged first cycle, then 6).
        cycle: index of the cycle in the run (0-based).
        members: (N, history, C, H, W) each member's input frames, its background last; only
            for methods that declare ``members > 0`` (None otherwise).
    """

    x_b: torch.Tensor
    history: torch.Tensor
    valid_time: np.datetime64
    lead_hours: int
    cycle: int
    members: torch.Tensor | None = None

    @property
    def member_backgrounds(self) -> torch.Tensor:
        """(N, C, H, W): each member's background (the last frame of its history)."""
        if self.members is None:
            raise ValueError("this background has no ensemble members (a deterministic cycle)")
        return self.members[:, -1]


@dataclasses.dataclass(frozen=True, eq=False)
class Analysis:
    """What ``Analyser.analyse`` returns.

    Attributes:
        x_a: (C, H, W) the analysis, normalised, same dtype and device as ``background.x_b``;
            for an ensemble method the ensemble mean (the state that is scored).
        members: (N, C, H, W) the analysed members (ensemble methods only, N = the method's
            ``members``); the harness forecasts each and scores their spread.
        diagnostics: numbers about this analysis; ``STANDARD_DIAGNOSTICS`` keys where they
            apply, anything else is free. Recorded per cycle as ``diag_<key>`` in metrics.nc.
    """

    x_a: torch.Tensor
    members: torch.Tensor | None = None
    diagnostics: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.x_a, torch.Tensor):
            raise TypeError(f"Analysis.x_a must be a tensor, got {type(self.x_a).__name__}")
        if self.members is not None and (self.members.ndim != self.x_a.ndim + 1 or
                                         self.members.shape[1:] != self.x_a.shape):
            raise ValueError(f"Analysis.members must be (N, {', '.join(map(str, self.x_a.shape))})"
                             f", got {tuple(self.members.shape)}")
        bad = [k for k, v in self.diagnostics.items()
               if not isinstance(v, int | float) or isinstance(v, bool)]
        if bad:
            raise TypeError(f"Analysis.diagnostics values must be numbers; {bad} are not")
