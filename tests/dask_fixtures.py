"""Setup factories that dask worker processes import (an in-memory Setup cannot be sent cheaply).

``tiny_setup`` builds the same small synthetic Setup as tests/test_runner.py's ``prepared``;
with ``kill_marker`` it also registers ``kill_once``, a method whose first analyse() on any
dask worker SIGKILLs that worker (the marker file says it already happened, so the retried
cell succeeds).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import torch
from forecast_fixtures import persistence_setup

from bench.config import RunConfig
from bench.setup import Setup
from methods.base import Analyser, Analysis, Assimilator

#: where KillOnce records that it has killed a worker (set by tiny_setup in each process)
KILL_MARKER: Path | None = None


@dataclasses.dataclass(frozen=True)
class KillOnce(Assimilator, Analyser):
    """No assimilation; the first analyse() on a dask worker kills that worker's process."""

    def load(self, state, spec, device):
        return self

    def analyse(self, background, obs):
        if KILL_MARKER is not None and _on_dask_worker():
            try:
                with open(KILL_MARKER, "x"):  # exactly one process wins, even two at once
                    pass
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return Analysis(background.x_b.clone())


def _on_dask_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def tiny_setup(cfg: RunConfig, kill_marker: str | None = None) -> Setup:
    """The small synthetic world with a persistence model (deterministic, a second to build)."""
    global KILL_MARKER
    if kill_marker is not None:
        import methods

        KILL_MARKER = Path(kill_marker)
        methods.METHODS.setdefault("kill_once", KillOnce)
    torch.set_num_threads(1)
    return persistence_setup(cfg)
