"""What a method tells the timing harness about its cost, so the harness never needs its name:
its memory (``MemoryEstimate``, before anything is built) and its dominant kernel (``Kernel``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Rough memory (bytes) of one method at one grid; the harness adds the states it holds.

    Attributes:
        model: what loading the method keeps resident (weights, SHT tables, statistics).
        analysis: what one analysis adds on top (compare with the measured peak).
    """

    model: float
    analysis: float

    @property
    def total(self) -> float:
        return self.model + self.analysis


@dataclasses.dataclass(frozen=True)
class Kernel:
    """The dominant kernel of an analysis: ``fn()`` does one call on the analysis's data.

    ``unit`` is "FLOP" (compared with the measured matmul peak of ``dtype``; FLOPs are counted
    by torch.utils.flop_counter) or "B" (bytes moved, ``work`` per call, compared with the
    measured copy rate).
    """

    label: str
    fn: Callable[[], object]
    unit: str
    dtype: str = "float32"
    work: float | None = None

    def __post_init__(self):
        if self.unit not in ("FLOP", "B"):
            raise ValueError(f"Kernel.unit must be 'FLOP' or 'B', got {self.unit!r}")
        if self.unit == "B" and self.work is None:
            raise ValueError("a bytes kernel needs work= (bytes moved per call)")
