"""How per-cycle RMSE becomes one number: the two RMSE conventions, the normalisation of the
channel mean, and the per-cycle series that the paired comparisons and paper tables pool.

RMSE conventions (metrics.nc stores each cycle's latitude-weighted RMSE, ``rmse``):

- ``mean_rmse`` — the time-mean of the per-cycle RMSE, (1/n) Σ_k RMSE_k. **The default**, shown
  in every table: it is what the skill table has always shown (no number changes), the
  convention of the cycled-DA literature (DAPPER's time-averaged ``rmse.a``), and it is linear,
  so the mean of the per-cycle paired differences of two methods is exactly the difference of
  their table entries and its autocorrelation-corrected interval (bench/report/statistics.py)
  applies to the number in the table.
- ``root_mean_mse`` — √((1/n) Σ_k RMSE_k²), WeatherBench2's headline RMSE (the time-mean MSE,
  then the root). Exact from the stored per-cycle RMSE, because every cycle's RMSE is over the
  same weighted grid: RMSE_k² is that cycle's weighted MSE. It is ≥ ``mean_rmse`` (by the
  spread of RMSE over cycles) and weighs bad cycles more. The paper tables' CSVs carry it next
  to the default.

Both are applied to a series pooled over the cycles after spin-up of every seed.

Channel mean. One number per cycle summarises all channels: the mean over every channel of
metrics.nc of RMSE / σ_c — the normalised RMSE the harness's divergence test uses
(``bench.scorer.CellScores.analysis_error``). σ_c is the per-channel standard deviation the run
normalises its state by (``StateSpec.std``), read from the ``norm_std`` coordinate (channel) of
metrics.nc. Files that do not record it (all written before it existed) fall back to the RMSE
of the shared first background (cycle 0, identical for every method by the protocol, DESIGN.md
§4; averaged over methods, densities and seeds): a method-independent scale per channel, so
paired differences stay paired; the notes of every table say which scale was used.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bench.report.selection import after_spinup

#: The coordinate (channel) with the per-channel normalisation std [channel units].
NORM_STD = "norm_std"
#: The column key of the channel-mean normalised RMSE (next to channel names).
CHANNEL_MEAN = "channel_mean"
#: Convention name -> how a table names it.
CONVENTIONS = {"mean_rmse": "time-mean of per-cycle RMSE",
               "root_mean_mse": "√(time-mean MSE)"}
DEFAULT_CONVENTION = "mean_rmse"


def normaliser(ds: xr.Dataset) -> tuple[xr.DataArray, str]:
    """(σ per channel, what it is): ``norm_std`` if recorded, else the first background's RMSE.
    Channels whose σ is not finite and positive are NaN (left out of the channel mean)."""
    if NORM_STD in ds.variables:
        scale, what = ds[NORM_STD], "the run's normalisation std per channel (norm_std)"
    else:
        first = ds["rmse"].sel(phase="background").isel(cycle=0)
        scale = mean_over(first, [d for d in first.dims if d != "channel"], skipna=True)
        what = ("the RMSE of the shared first background per channel (this metrics.nc records "
                "no norm_std)")
    scale = scale.astype(float)
    return scale.where(np.isfinite(scale) & (scale > 0)), what


def mean_over(da: xr.DataArray, dims: list[str], skipna: bool = False) -> xr.DataArray:
    """``da`` averaged over ``dims`` in a fixed summation order: on a C-contiguous copy with
    ``dims`` last, so the result does not depend on how the array lies in memory (an array read
    from metrics.nc and the same array built in memory give the same bits: tables regenerate
    byte-identically)."""
    keep = [d for d in da.dims if d not in dims]
    t = da.transpose(*keep, *dims)
    flat = np.ascontiguousarray(t.values).reshape(*t.shape[:len(keep)], -1)
    values = np.nanmean(flat, axis=-1) if skipna else flat.mean(axis=-1)
    coords = {name: c for name, c in t.coords.items() if not set(c.dims) & set(dims)}
    return xr.DataArray(values, dims=keep, coords=coords)


def channel_mean_normalised(rmse: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """Mean over channels of rmse / σ (``normaliser``); NaN where any used channel is NaN (a
    diverged cycle stays NaN)."""
    scale, _ = normaliser(ds)
    used = scale["channel"].values[np.isfinite(scale.values)]
    return mean_over(rmse.sel(channel=used) / scale.sel(channel=used), ["channel"])


def cycle_series(ds: xr.Dataset, column: str, phase: str, spinup: int) -> xr.DataArray:
    """Per-cycle RMSE after spin-up, dims (method, density, seed, cycle): the channel-mean
    normalised RMSE for ``CHANNEL_MEAN``, else the channel's RMSE in its units."""
    rmse = after_spinup(ds["rmse"].sel(phase=phase), spinup)
    if column == CHANNEL_MEAN:
        series = channel_mean_normalised(rmse, ds)
    else:
        series = rmse.sel(channel=column)
    return series.transpose("method", "density", "seed", "cycle")


def pool(values, convention: str = DEFAULT_CONVENTION) -> float:
    """One number from per-cycle RMSE values (any shape, all pooled) by ``convention``."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    if convention == "mean_rmse":
        return float(x.mean())
    if convention == "root_mean_mse":
        return float(np.sqrt((x**2).mean()))
    raise ValueError(f"unknown RMSE convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


def convention_note(where_other: str) -> str:
    """The sentence every RMSE table's notes carry: the convention shown, the other and where."""
    shown = CONVENTIONS[DEFAULT_CONVENTION]
    other = CONVENTIONS["root_mean_mse"]
    return (f"RMSE convention: the {shown} (the DA literature's, e.g. DAPPER's; linear, so a "
            f"paired difference of two entries is the mean of the per-cycle differences). "
            f"WeatherBench2's headline convention, {other}, is ≥ it (the more so the more RMSE "
            f"varies between cycles); "
            f"{where_other}.")


def channel_mean_note(ds: xr.Dataset) -> str:
    """What "channel mean" is in this Dataset."""
    scale, what = normaliser(ds)
    used = int(np.isfinite(scale.values).sum())
    return (f"channel mean: the mean over {used} channels of RMSE / σ (dimensionless), σ being "
            f"{what}.")
