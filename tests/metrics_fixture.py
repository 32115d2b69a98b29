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
ensembles (``NEW_VARIABLES``) and everything newer.

Observation-space diagnostics and free forecasts with known answers (``with_diagnostics``,
``make_metrics(diagnostics=True)``; ``before_diagnostics`` drops them again, as in a metrics.nc
written before they existed):

- Innovations of a linear-Gaussian toy: per observation d_b = ε_o − ε_b, ε_o ~ N(0, σ_o²) (the
  same for every method: observations do not depend on it), ε_b ~ N(0, σ_b²) (per method),
  σ_b the channel's RMSE scale and σ_o = ``OBS_ERROR_FRACTION`` σ_b; each method's analysis is
  the exact Kalman update in observation space with the variances it assumes
  (``ASSUMED``: factors on σ_b² and σ_o²): K = a_b σ_b² / (a_b σ_b² + a_o σ_o²),
  H x_a − H x_b = K d_b, d_a = (1 − K) d_b; ``obs_error_var`` is the σ_o² it is given. Where
  the method's assumptions are right, Desroziers' E[d_a d_b] = σ_o² and E[(Hx_a − Hx_b) d_b] =
  σ_b². ``UNOBSERVED`` has no observations (count 0, NaN). ``diag_j_min`` (variational
  methods only) is ½ d_bᵀ (a_b HBHᵀ + a_o R)⁻¹ d_b over every observation of the cycle, so
  2 J_min / n_obs ≈ 1 when the assumptions are right; ``n_obs`` counts the observed channels.
- ``omb_histogram``, ``oma_histogram``: numpy.histogram of those d_b and d_a over
  ``norm_std`` with the edges −∞, ``HISTOGRAM_EDGES``, ∞, summed over the cycles
  ≥ ``SPINUP_CYCLES`` (the diverged cell: up to its diverged cycle); ``before_histograms``
  drops them (a metrics.nc written after the per-cycle diagnostics but before histograms).
- Free forecasts at starts ``FORECAST_STARTS``, leads 6..``FORECAST_HOURS`` h: from the truth
  RMSE σ_b · g(L) (g increasing), from the analysis σ_b · g(L + A), from the background
  σ_b · g(L + A + 6) (``none``: + 0), A = ``ANALYSIS_AGE`` hours, each start's three curves
  scaled by one random factor. The last start lacks the leads past the end of the period.
- ``norm_std``: the per-channel normalisation std (coordinate on channel).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import xarray as xr

from bench.innovations import HISTOGRAM_EDGES, histogram_bins
from bench.scorer import CELL_DIMS, PHASES

METHODS = ("3dvar", "vaevar", "none", "letkf")
DENSITIES = (0.01, 0.05)
#: density -> (obs_columns, obs_spacing_km): the coordinates a run records (bench/obs_regime.py);
#: legacy() drops them, as in a metrics.nc written before they existed.
REGIMES = {0.01: (20.0, 4861.4), 0.05: (102.0, 2152.7)}
REGIME_COORDS = ("obs_columns", "obs_spacing_km")
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

#: Observation-space diagnostics and free forecasts (``with_diagnostics``).
OBS_STATISTICS = ("obs_count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "desroziers_r",
                  "desroziers_hbh", "obs_error_var")
#: The innovation histograms and their bin coordinates.
HISTOGRAM_VARIABLES = ("omb_histogram", "oma_histogram", "innovation_bin",
                       "innovation_bin_lower", "innovation_bin_upper")
DIAGNOSTIC_VARIABLES = (*OBS_STATISTICS, "diag_j_min", "forecast_rmse",
                        "background_forecast_rmse", "truth_forecast_rmse", "norm_std",
                        *HISTOGRAM_VARIABLES)
#: σ_o / σ_b of every channel.
OBS_ERROR_FRACTION = 0.5
#: The channel without observations.
UNOBSERVED = "u10"
#: Per method, the factors on the true σ_b² and σ_o² it assumes (none: no analysis, K = 0).
ASSUMED = {"3dvar": (1.0, 1.0), "vaevar": (1.0, 4.0), "none": (0.0, 1.0), "letkf": (1.0, 1.0)}
#: Methods that report J at the analysis.
VARIATIONAL = ("3dvar", "vaevar")
#: The analysis-equivalent age of each method's analyses [h] (forecasts, module docstring).
ANALYSIS_AGE = {"3dvar": 18, "vaevar": 12, "none": 60, "letkf": 6}
FORECAST_STARTS = np.array([0, 4, 8])
FORECAST_HOURS = 120
#: norm_std / σ_b per channel.
NORM_STD_FACTOR = 4.0

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


def make_metrics(seed: int = 0, diagnostics: bool = False) -> xr.Dataset:
    """The synthetic results Dataset; the same ``seed`` gives the same numbers. With
    ``diagnostics``, also the observation-space diagnostics, free forecasts and ``norm_std``
    (``with_diagnostics``; the other numbers are the same either way)."""
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
        "obs_columns": ("density", [REGIMES[d][0] for d in DENSITIES]),
        "obs_spacing_km": ("density", [REGIMES[d][1] for d in DENSITIES]),
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
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    return with_diagnostics(ds, seed) if diagnostics else ds


def legacy(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as a metrics.nc written before ensembles: without ``NEW_VARIABLES`` (nor the
    observation-space diagnostics and forecasts that came later)."""
    return before_diagnostics(ds).drop_vars([*NEW_VARIABLES, *REGIME_COORDS])


def before_diagnostics(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as a metrics.nc written before ``DIAGNOSTIC_VARIABLES`` existed."""
    return ds.drop_vars([v for v in DIAGNOSTIC_VARIABLES if v in ds.variables])


def before_histograms(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as a metrics.nc with the per-cycle diagnostics but without the histograms."""
    return ds.drop_vars([v for v in HISTOGRAM_VARIABLES if v in ds.variables])


def with_diagnostics(ds: xr.Dataset, seed: int = 0) -> xr.Dataset:
    """``ds`` with the observation-space diagnostics, ``diag_j_min``, free forecasts and
    ``norm_std`` of the module docstring (its own random stream: ``ds``'s numbers stay)."""
    rng = np.random.default_rng([seed, 1])
    sigma_b = np.array([s for _, s in CHANNELS.values()])
    sigma_o = OBS_ERROR_FRACTION * sigma_b
    observed = np.array([c != UNOBSERVED for c in CHANNELS])
    a_b, a_o = (np.array([ASSUMED[m][i] for m in METHODS])[:, None] for i in (0, 1))
    gain = a_b * sigma_b**2 / (a_b * sigma_b**2 + a_o * sigma_o**2)  # (method, channel)
    n_points = ds["n_points"].values  # (method, density, seed, cycle), equal over methods
    shape = (*n_points.shape, len(CHANNELS))
    stats = {name: np.full(shape, np.nan) for name in OBS_STATISTICS}
    stats["obs_count"] = np.where(observed, n_points[..., None], 0).astype(float)
    j_min = np.full(n_points.shape, np.nan)
    norm_std = NORM_STD_FACTOR * sigma_b
    edges = np.concatenate([[-np.inf], HISTOGRAM_EDGES, [np.inf]])
    histograms = {name: np.zeros((*n_points.shape[:3], len(CHANNELS), len(edges) - 1),
                                 dtype=np.int64) for name in ("omb_histogram", "oma_histogram")}
    for j, s, k in np.ndindex(*n_points.shape[1:]):
        n = int(n_points[0, j, s, k])
        eps_o = rng.normal(size=(len(CHANNELS), n)) * sigma_o[:, None]
        eps_b = rng.normal(size=(len(METHODS), len(CHANNELS), n)) * sigma_b[:, None]
        d_b = (eps_o[None] - eps_b)[:, observed]
        g = gain[:, observed, None]
        d_a, d_ab = (1 - g) * d_b, g * d_b
        cell = (slice(None), j, s, k, observed)
        for name, values in (("omb_mean", d_b.mean(-1)), ("omb_rms", np.sqrt((d_b**2).mean(-1))),
                             ("oma_mean", d_a.mean(-1)), ("oma_rms", np.sqrt((d_a**2).mean(-1))),
                             ("desroziers_r", (d_a * d_b).mean(-1)),
                             ("desroziers_hbh", (d_ab * d_b).mean(-1)),
                             ("obs_error_var", a_o * sigma_o[observed] ** 2)):
            stats[name][cell] = values
        for i, (name, d) in itertools.product(range(len(METHODS)),
                                              (("omb_histogram", d_b), ("oma_histogram", d_a))):
            if k < SPINUP_CYCLES or ((i, j, s) == _diverged_index() and k > DIVERGED["cycle"]):
                continue
            for c, values in zip(np.flatnonzero(observed), d[i] / norm_std[observed, None],
                                 strict=True):
                histograms[name][i, j, s, c] += np.histogram(values, edges)[0]
        total = (a_b * sigma_b**2 + a_o * sigma_o**2)[:, observed, None]
        j_min[:, j, s, k] = 0.5 * (d_b**2 / total).sum(axis=(1, 2))
    variational = np.array([m in VARIATIONAL for m in METHODS])
    j_min[~variational] = np.nan
    cell, k = _diverged_index(), DIVERGED["cycle"]
    for values in (*stats.values(), j_min):
        values[cell][k + 1:] = np.nan
    dims = (*CELL_DIMS, "cycle")
    out = ds.assign({name: ((*dims, "channel"), v) for name, v in stats.items()})
    out = out.assign(diag_j_min=(dims, j_min),
                     n_obs=(dims, n_points * int(observed.sum())))
    out = out.assign_coords(norm_std=("channel", norm_std))
    centre, lower, upper = histogram_bins()
    out = out.assign_coords(innovation_bin=centre,
                            innovation_bin_lower=("innovation_bin", lower),
                            innovation_bin_upper=("innovation_bin", upper))
    out = out.assign({name: ((*CELL_DIMS, "channel", "innovation_bin"), v)
                      for name, v in histograms.items()})
    return out.assign(_forecasts(rng, sigma_b, out))


def _forecasts(rng: np.random.Generator, sigma_b: np.ndarray, ds: xr.Dataset) -> dict:
    """forecast_rmse, background_forecast_rmse and truth_forecast_rmse (module docstring)."""
    leads = np.arange(6, FORECAST_HOURS + 1, 6)
    ages = np.array([ANALYSIS_AGE[m] for m in METHODS], dtype=float)
    extra = np.array([0.0 if m == "none" else 6.0 for m in METHODS])
    factor = rng.lognormal(0.0, 0.1, (len(METHODS), len(DENSITIES), len(SEEDS),
                                      len(FORECAST_STARTS)))[..., None, None]

    def curve(shift: np.ndarray) -> np.ndarray:
        lead = leads[None, :] + shift[:, None]  # (method, lead)
        values = growth(lead)[:, None, None, None, :, None] * sigma_b
        return factor * values

    out = {"forecast_rmse": curve(ages), "background_forecast_rmse": curve(ages + extra),
           "truth_forecast_rmse": curve(np.zeros(len(METHODS)))}
    # the last start: the test period ends before its longer leads
    last = int(FORECAST_STARTS[-1])
    available = (N_CYCLES - 1 - last)
    dims = (*CELL_DIMS, "forecast_start", "lead_hours", "channel")
    for values in out.values():
        values[..., -1, available:, :] = np.nan
    coords = {"forecast_start": FORECAST_STARTS, "lead_hours": leads}
    return {name: xr.DataArray(v, dims=dims, coords=coords) for name, v in out.items()}


def growth(lead_hours) -> np.ndarray:
    """The truth-started forecast's RMSE in units of σ_b at a lead [h]: increasing, concave."""
    return 0.2 * (np.asarray(lead_hours, dtype=float) / 6.0) ** 0.7


def _diverged_index() -> tuple[int, int, int]:
    return (METHODS.index(DIVERGED["method"]), DENSITIES.index(DIVERGED["density"]),
            SEEDS.index(DIVERGED["seed"]))
