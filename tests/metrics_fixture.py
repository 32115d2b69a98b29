"""A small synthetic ``metrics.nc`` Dataset in the results schema of the cycling harness.

Layout (the schema of DESIGN.md §6):

    dims    method (3), density (2), seed (2), cycle (12), phase (2), channel (8)
    rmse, bias, acc            (method, density, seed, cycle, phase, channel)  physical units
    analysis_seconds, peak_memory_bytes, n_obs, n_points   (method, density, seed, cycle)
    status, diverged_cycle, diverged_reason                (method, density, seed)

The channels are the seven headline channels plus ``v10``, in FengWu's order (not the headline
order), so tests see that tables follow ``HEADLINE``. Errors start large and decay over the first
cycles, so including the spin-up changes the means. One cell diverges (``DIVERGED``): its
analysis blows up at the diverged cycle and every later cycle is NaN. ``none`` has no memory
figure (NaN, "unknown").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

METHODS = ("3dvar", "vaevar", "none")
DENSITIES = (0.01, 0.05)
SEEDS = (0, 1)
N_CYCLES = 12
SPINUP_CYCLES = 4
PHASES = ("background", "analysis")
DEVICE = "cpu (synthetic fixture)"

#: channel -> (units, typical background RMSE in those units)
CHANNELS: dict[str, tuple[str, float]] = {
    "u10": ("m s-1", 1.8),
    "v10": ("m s-1", 1.7),
    "t2m": ("K", 1.2),
    "msl": ("Pa", 150.0),
    "z500": ("m2 s-2", 300.0),
    "q700": ("kg kg-1", 6e-4),
    "u850": ("m s-1", 2.5),
    "t850": ("K", 1.5),
}

#: The one diverged (method, density, seed) and the cycle at which it diverged.
DIVERGED = {"method": "vaevar", "density": 0.01, "seed": 1, "cycle": 9}

#: analysis RMSE / background RMSE per (method, density): denser observations help more.
_GAIN = {"3dvar": (0.6, 0.4), "vaevar": (0.55, 0.35), "none": (1.0, 1.0)}
#: typical seconds per analysis and peak bytes (NaN: unknown)
_COST = {"3dvar": (0.05, 200 * 2**20), "vaevar": (2.0, 1536 * 2**20), "none": (1e-4, np.nan)}
_GRID_POINTS = 32 * 64


def make_metrics(seed: int = 0) -> xr.Dataset:
    """The synthetic results Dataset; the same ``seed`` gives the same numbers."""
    rng = np.random.default_rng(seed)
    shape = (len(METHODS), len(DENSITIES), len(SEEDS), N_CYCLES)
    scale = np.array([s for _, s in CHANNELS.values()])
    # Spin-up: the first backgrounds are a 48 h forecast, so errors start ~3x larger and decay.
    decay = 1.0 + 2.0 * np.exp(-np.arange(N_CYCLES) / 2.0)
    background = scale * decay[:, None] * rng.lognormal(0.0, 0.2, (*shape, len(scale)))
    gain = np.array([_GAIN[m] for m in METHODS])[:, :, None, None, None]
    analysis = background * gain * rng.lognormal(0.0, 0.05, background.shape)
    rmse = np.stack([background, analysis], axis=-2)  # (..., phase, channel)
    bias = rmse * rng.uniform(-0.3, 0.3, rmse.shape)
    acc = np.clip(1.0 - 0.1 * rmse / scale, -1.0, 1.0)

    base_seconds = np.array([_COST[m][0] for m in METHODS])[:, None, None, None]
    seconds = base_seconds * rng.lognormal(0.0, 0.3, shape)
    peak = np.broadcast_to(np.array([_COST[m][1] for m in METHODS])[:, None, None, None],
                           shape).copy()
    peak *= 1.0 + 0.01 * rng.random(shape)
    # Observations depend on (seed, density, cycle) only, never on the method.
    expected = np.array(DENSITIES)[:, None, None] * _GRID_POINTS
    n_points = rng.poisson(expected, (len(DENSITIES), len(SEEDS), N_CYCLES))
    n_points = np.broadcast_to(n_points, shape).astype(np.int64)
    n_obs = n_points * len(CHANNELS)

    status = np.full(shape[:3], "ok", dtype=object)
    diverged_cycle = np.full(shape[:3], -1, dtype=np.int64)
    reason = np.full(shape[:3], "", dtype=object)
    cell = _diverged_index()
    k = DIVERGED["cycle"]
    status[cell], diverged_cycle[cell], reason[cell] = "diverged", k, "analysis RMSE > 10 x clim."
    rmse[cell][k, 1] *= 1e4  # the analysis that blew up
    for field in (rmse, bias, acc):
        field[cell][k + 1:] = np.nan
    seconds[cell][k + 1:] = np.nan
    peak[cell][k + 1:] = np.nan

    cell_dims = ("method", "density", "seed")
    cycle_dims = (*cell_dims, "cycle")
    score_dims = (*cycle_dims, "phase", "channel")
    coords = {
        "method": list(METHODS), "density": list(DENSITIES), "seed": list(SEEDS),
        "cycle": np.arange(N_CYCLES), "phase": list(PHASES), "channel": list(CHANNELS),
        "valid_time": ("cycle", pd.date_range("2020-01-10", periods=N_CYCLES, freq="6h").values),
        "units": ("channel", [u for u, _ in CHANNELS.values()]),
    }
    data = {
        "rmse": (score_dims, rmse), "bias": (score_dims, bias), "acc": (score_dims, acc),
        "analysis_seconds": (cycle_dims, seconds), "peak_memory_bytes": (cycle_dims, peak),
        "n_obs": (cycle_dims, n_obs), "n_points": (cycle_dims, n_points),
        "status": (cell_dims, status.astype(str)),
        "diverged_cycle": (cell_dims, diverged_cycle),
        "diverged_reason": (cell_dims, reason.astype(str)),
    }
    attrs = {
        "device": DEVICE, "world": "nature-t31", "model": "emulator",
        "spinup_cycles": SPINUP_CYCLES, "command": "python -m bench run --synthetic",
        "config": '{"cycles": 12}',
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _diverged_index() -> tuple[int, int, int]:
    return (METHODS.index(DIVERGED["method"]), DENSITIES.index(DIVERGED["density"]),
            SEEDS.index(DIVERGED["seed"]))
