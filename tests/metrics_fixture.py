"""A small synthetic ``metrics.nc`` Dataset in the results schema of the cycling harness.

Layout (the schema of bench/scorer.py):

    dims    method (4), density (2), seed (2), cycle (12), phase (2), channel (8)
    rmse, bias, acc, spread    (method, density, seed, cycle, phase, channel)  physical units
    analysis_seconds, peak_memory_bytes, forecast_seconds, n_obs, n_points
                                                           (method, density, seed, cycle)
    members, window_hours, status, diverged_cycle, diverged_reason   (method, density, seed)

The channels are the seven headline channels plus ``v10``, in FengWu's order (not the headline
order), so tests see that tables follow ``HEADLINE``. Errors start large and decay over the first
cycles, so including the spin-up changes the means. One cell diverges (``DIVERGED``): its
analysis blows up at the diverged cycle and every later cycle is NaN. ``none`` has no memory
figure (NaN, "unknown"). ``letkf`` is an ensemble (``ENSEMBLE_MEMBERS`` members): its spread
is a little smaller than its RMSE (under-dispersive) and its forecast, of every member, takes
longer; the spread of the deterministic methods is NaN. The forecast after the last cycle (and
after a divergence) is NaN. ``legacy`` drops the variables metrics.nc files did not have before
ensembles (``NEW_VARIABLES``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.scorer import CELL_DIMS, PHASES

METHODS = ("3dvar", "vaevar", "none", "letkf")
DENSITIES = (0.01, 0.05)
SEEDS = (0, 1)
N_CYCLES = 12
SPINUP_CYCLES = 4
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

#: The ensemble method and its size.
ENSEMBLE, ENSEMBLE_MEMBERS = "letkf", 8
#: Variables added to metrics.nc with ensembles; files written before lack them.
NEW_VARIABLES = ("spread", "forecast_seconds", "members", "window_hours")

#: The one diverged (method, density, seed) and the cycle at which it diverged.
DIVERGED = {"method": "vaevar", "density": 0.01, "seed": 1, "cycle": 9}

#: analysis RMSE / background RMSE per (method, density): denser observations help more.
_GAIN = {"3dvar": (0.6, 0.4), "vaevar": (0.55, 0.35), "none": (1.0, 1.0),
         "letkf": (0.5, 0.3)}
#: typical seconds per analysis, peak bytes (NaN: unknown) and seconds of the forecast after it
_COST = {"3dvar": (0.05, 200 * 2**20, 0.01), "vaevar": (2.0, 1536 * 2**20, 0.01),
         "none": (1e-4, np.nan, 0.01), "letkf": (0.3, 400 * 2**20, 0.06)}
#: the ensemble's spread / its RMSE
_SPREAD_RATIO = 0.8
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
    ensemble = np.array([m == ENSEMBLE for m in METHODS])
    spread = rmse * _SPREAD_RATIO * rng.lognormal(0.0, 0.1, rmse.shape)
    spread[~ensemble] = np.nan
    forecast = (np.array([_COST[m][2] for m in METHODS])[:, None, None, None]
                * rng.lognormal(0.0, 0.2, shape))
    forecast[..., -1] = np.nan  # no forecast after the last cycle
    members = np.broadcast_to(np.where(ensemble, ENSEMBLE_MEMBERS, 0)[:, None, None],
                              shape[:3]).astype(np.int64)

    status = np.full(shape[:3], "ok", dtype=object)
    diverged_cycle = np.full(shape[:3], -1, dtype=np.int64)
    reason = np.full(shape[:3], "", dtype=object)
    cell = _diverged_index()
    k = DIVERGED["cycle"]
    status[cell], diverged_cycle[cell], reason[cell] = "diverged", k, "analysis RMSE > 10 x clim."
    rmse[cell][k, 1] *= 1e4  # the analysis that blew up
    for field in (rmse, bias, acc, spread):
        field[cell][k + 1:] = np.nan
    seconds[cell][k + 1:] = np.nan
    peak[cell][k + 1:] = np.nan
    forecast[cell][k:] = np.nan  # the cell stopped at k: no forecast after its analysis

    cell_dims = CELL_DIMS
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
        "spread": (score_dims, spread),
        "analysis_seconds": (cycle_dims, seconds), "peak_memory_bytes": (cycle_dims, peak),
        "forecast_seconds": (cycle_dims, forecast),
        "members": (cell_dims, members), "window_hours": (cell_dims, np.zeros_like(members)),
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


def legacy(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as a metrics.nc written before ensembles: without ``NEW_VARIABLES``."""
    return ds.drop_vars(list(NEW_VARIABLES))


def _diverged_index() -> tuple[int, int, int]:
    return (METHODS.index(DIVERGED["method"]), DENSITIES.index(DIVERGED["density"]),
            SEEDS.index(DIVERGED["seed"]))
