"""Will it fit? Each method's memory estimate plus the harness's states, against the memory the
device has available now: the refusal ``python -m bench timing`` and ``python -m bench run``'s
preflight share, so that a run too big for the machine is refused in one line before anything is
built, instead of being killed for memory hours later.

An estimate is the method's own ``memory_estimate(spec, n_obs, members)`` (methods/base
MemoryEstimate: what loading keeps resident plus what one analysis adds) plus ``harness_bytes``
(the interpreter, the truth, the background history, the observations and, for an ensemble,
every member's frames). Methods run one after another and are freed in between, so each must
fit on its own. Not counted: the forecast model (the emulator, FengWu's ONNX session) and a
truth window small enough to be preloaded (bench/cycle.py, at most 1.2 GB). Estimates are rough
(not measurements); they exist to catch the orders of magnitude (3DVar's Legendre tables at
0.25° are tens of GiB), not a few percent. All sizes are bytes; the messages show GiB (2³⁰).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch

from bench.obs_regime import columns_for_density
from bench.peak_memory import proc_bytes
from bench.state import StateSpec
from methods.base import Assimilator, MemoryEstimate

GIB = 2.0**30

__all__ = ["GIB", "available_bytes", "exceeding", "harness_bytes", "needed_bytes",
           "observation_count", "shortfall"]


def harness_bytes(spec: StateSpec, members: int = 0) -> float:
    """Memory the harness holds besides the method: the interpreter and libraries (~300 MB),
    the truth, the background history, the observations (4 float32 states) and, for an
    ensemble, every member's two frames and analysis (3 float32 states each)."""
    f32 = 4.0 * math.prod(spec.shape)
    return 300e6 + 4 * f32 + 3 * f32 * members


def available_bytes(device: torch.device) -> float:
    """Memory a run may use now: free GPU memory, or the kernel's MemAvailable (RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    available = proc_bytes("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def observation_count(sampling: str, channels: int, points: int, density: float) -> int:
    """Observations of one analysis time, as bench/observations.observe draws them.

    Args:
        sampling: "columns" (every observed channel at max(1, round(density · points)) points,
            bench/obs_regime.columns_for_density) or "elements" (max(1, round(density ·
            channels · points)) (channel, point) elements).
        channels: C', the observed channels.
        points: H · W, the grid's points.
        density: the fraction observed, in (0, 1].
    """
    if sampling == "columns":
        return channels * columns_for_density(density, points)
    return max(1, round(density * channels * points))


def needed_bytes(method: Assimilator, spec: StateSpec, n_obs: int) -> tuple[MemoryEstimate, float]:
    """(the method's own estimate, the bytes its run needs in all: the estimate plus the
    harness's states for its ``members``) at ``spec`` with ``n_obs`` observations per analysis."""
    estimate = method.memory_estimate(spec, n_obs, method.members)
    return estimate, estimate.total + harness_bytes(spec, method.members)


def exceeding(needed: Mapping[str, float], available: float) -> dict[str, float]:
    """{method: bytes} of the methods that need more than ``available`` bytes, in order."""
    return {name: b for name, b in needed.items() if b > available}


def shortfall(too_big: Mapping[str, float], available: float, device: torch.device) -> str:
    """"3dvar ≈ 27.3 GiB exceeds the 15.8 GiB of RAM available": the words both refusals use
    (GPU: the memory free on the device now; CPU: the kernel's MemAvailable)."""
    worst = ", ".join(f"{name} ≈ {b / GIB:.1f} GiB" for name, b in too_big.items())
    where = "GPU memory free" if torch.device(device).type == "cuda" else "RAM available"
    verb = "exceeds" if len(too_big) == 1 else "each exceed"
    return f"{worst} {verb} the {available / GIB:.1f} GiB of {where}"
