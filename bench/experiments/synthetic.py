"""Any grid without a world: synthetic states for timing, and methods with random internals.

The cost of an analysis depends on the grid, the channels, the observation count and the size
of the networks and statistics, not on their values. ``python -m bench timing`` therefore
builds each method at any grid without a world or a training period:

- the state: ``synthetic_spec(nlat, nlon, n_channels)``; odd nlat gives an ``equiangular`` grid
  with both poles (ERA5/FengWu: 721 × 1440, 1°: 181 × 360), even nlat a Gauss–Legendre grid
  (the built-in world: 32 × 64). Fewer than 69 channels are a subset of FengWu's (see
  ``timing_channels``).
- the method: its own ``untrained(spec, seed)`` state (methods/base: random networks of the
  configured size, synthetic statistics), loaded like a fitted one. The harness never needs a
  method's name. All sizes here are bytes.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.memory_check import available_bytes, harness_bytes
from bench.state import FENGWU_CHANNELS, StateSpec
from methods.base import Analyser, Assimilator

#: Order in which whole levels join a channel subset: the headline levels first.
LEVEL_PRIORITY = (500, 850, 250, 700, 925, 100, 300, 600, 1000, 200, 400, 150, 50)
#: Order of the variables within a level: winds first, so a partial level keeps a (u, v) pair
#: (3DVar's vector SHT, the most expensive part of U_p, stays in the timing).
LEVEL_VARIABLES = ("u", "v", "z", "t", "q")
#: Where to stop: FengWu's layout.
MAX_CHANNELS = len(FENGWU_CHANNELS)


# ----------------------------------------------------------------------------- the state
def timing_channels(n: int) -> tuple[str, ...]:
    """``n`` of FengWu's channels, in FengWu's order.

    The subset is the 4 surface channels (u10, v10, t2m, msl, in that order), then whole levels
    in ``LEVEL_PRIORITY`` order, each level's variables in ``LEVEL_VARIABLES`` order; the last
    level may be partial. n = 69 is FengWu's layout; n = 9 is the surface plus u, v, z, t, q at
    500 hPa; n = 8 drops q500.
    """
    if not 1 <= n <= MAX_CHANNELS:
        raise ValueError(f"channels {n} is outside 1..{MAX_CHANNELS}")
    order = ["u10", "v10", "t2m", "msl"]
    order += [f"{v}{lev}" for lev in LEVEL_PRIORITY for v in LEVEL_VARIABLES]
    chosen = set(order[:n])
    return tuple(name for name in FENGWU_CHANNELS if name in chosen)


def grid_coordinates(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(lat (H,) north→south, lon (W,) from 0, grid type), degrees.

    Odd nlat: equiangular with both poles (lat = 90 … −90), as ERA5 (721) and 1° (181) grids.
    Even nlat: Gauss–Legendre nodes, as the built-in 32 × 64 world (exact SHT round trips).
    """
    if nlat < 2 or nlon < 4:
        raise ValueError(f"grid {nlat}x{nlon} is too small: need at least 2 x 4")
    lon = np.arange(nlon) * 360.0 / nlon
    if nlat % 2:
        return np.linspace(90.0, -90.0, nlat), lon, "equiangular"
    nodes, _ = np.polynomial.legendre.leggauss(nlat)
    return np.degrees(np.arcsin(-nodes)), lon, "legendre-gauss"


def synthetic_spec(nlat: int, nlon: int, n_channels: int = MAX_CHANNELS) -> StateSpec:
    """A StateSpec of ``timing_channels(n_channels)`` on an nlat × nlon grid, identity
    normalisation (mean 0, std 1: tensors are already in normalised units)."""
    lat, lon, grid = grid_coordinates(nlat, nlon)
    return StateSpec.create(timing_channels(n_channels), lat, lon, grid)


# ----------------------------------------------------------------------------- methods
def untrained(method: Assimilator, spec: StateSpec, device: torch.device | str = "cpu",
              seed: int = 0) -> Analyser:
    """``method`` (its configured hyper-parameters) ready to analyse (C, H, W) states of
    ``spec`` on ``device``, with random internals of the configured size: its own
    ``untrained(spec, seed)`` state, loaded. No world, no training."""
    return method.load(method.untrained(spec, seed), spec, torch.device(device))


__all__ = ["available_bytes", "grid_coordinates", "harness_bytes", "synthetic_spec",
           "timing_channels", "untrained"]
