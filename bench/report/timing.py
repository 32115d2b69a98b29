"""The timing table: wall time and peak memory of one analysis per (method, density), and the
time of the forecast that follows it.

As numbers (``timing_numbers``, the CSV, seconds and MiB) and for reading (``timing_table``,
``timing_latex``: "51.2 ms"). The rows are ``bench.scorer.timing_frame``'s analyses (timing.csv)
grouped by cell. The forecast column (the 6-hour forecast after each analysis: every member of
an ensemble, in batches) appears when the metrics record ``forecast_seconds``; a metrics.nc
written before that variable existed gives the table it always did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.formatting import (
    format_columns,
    format_density,
    format_km,
    format_number,
    format_seconds,
)
from bench.report.render import latex_table, provenance
from bench.report.selection import cells, observation_regimes, regime_note
from bench.scorer import timing_frame

#: The per-cycle variable of the forecast after each analysis (absent from older files).
FORECAST = "forecast_seconds"


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else np.nan


def timing_numbers(ds: xr.Dataset) -> pd.DataFrame:
    """Timing as numbers: the CSV table.

    One row per (method, density), columns::

        method, density, obs_columns, obs_spacing_km, n_analyses, median_seconds, p90_seconds,
        [median_forecast_seconds,] peak_memory_mib, device

    over every timed analysis of all cycles and seeds (NaN cycles after a divergence are left
    out; spin-up cycles count: timing does not depend on skill). p90 is numpy's linear
    percentile; peak memory the largest over the cell (MiB = 2**20 bytes, NaN if unknown).
    ``obs_columns``, ``obs_spacing_km`` [km]: the density's observed columns per cycle and
    their mean spacing (``selection.observation_regimes``). ``median_forecast_seconds``
    (when the metrics have ``forecast_seconds``): the median over the same analyses of the
    forecast after each (none after the last cycle).
    """
    device = str(ds.attrs.get("device", "unknown"))
    frame = timing_frame(ds)
    regimes, _ = observation_regimes(ds)
    rows = []
    for method, density in cells(ds):
        cell = frame[(frame["method"] == method) & (frame["density"] == density)]
        seconds = cell["analysis_seconds"].to_numpy()
        peak = cell["peak_memory_bytes"].to_numpy()
        peak = peak[np.isfinite(peak)]
        row = {
            "method": method, "density": density, "obs_columns": regimes[density][0],
            "obs_spacing_km": regimes[density][1], "n_analyses": seconds.size,
            "median_seconds": _median(seconds),
            "p90_seconds": float(np.percentile(seconds, 90)) if seconds.size else np.nan,
        }
        if FORECAST in ds:
            row["median_forecast_seconds"] = _median(cell[FORECAST].to_numpy())
        row.update(peak_memory_mib=float(peak.max() / 2**20) if peak.size else np.nan,
                   device=device)
        rows.append(row)
    return pd.DataFrame(rows)


def timing_table(ds: xr.Dataset) -> pd.DataFrame:
    """Timing for reading: the Markdown table.

    One row per (method, density), columns::

        method | density | obs columns | spacing [km] | analyses | median time | p90 time
        | [median forecast time |] peak memory [MiB] | device
    """
    numbers = timing_numbers(ds)
    table = {
        "method": numbers["method"],
        "density": [format_density(d) for d in numbers["density"]],
        "obs columns": [format_columns(v) for v in numbers["obs_columns"]],
        "spacing [km]": [format_km(v) for v in numbers["obs_spacing_km"]],
        "analyses": [str(n) for n in numbers["n_analyses"]],
        "median time": [format_seconds(s) for s in numbers["median_seconds"]],
        "p90 time": [format_seconds(s) for s in numbers["p90_seconds"]],
    }
    if "median_forecast_seconds" in numbers:
        table["median forecast time"] = [format_seconds(s)
                                         for s in numbers["median_forecast_seconds"]]
    table["peak memory [MiB]"] = [format_number(m) for m in numbers["peak_memory_mib"]]
    table["device"] = numbers["device"]
    return pd.DataFrame(table)


def timing_latex(ds: xr.Dataset) -> str:
    """The timing table as a booktabs ``tabular``."""
    display = timing_table(ds)
    return latex_table(display, "ll" + "r" * (display.shape[1] - 3) + "l")


def timing_notes(ds: xr.Dataset) -> str:
    """The Markdown notes above the timing table."""
    forecast = (" median forecast time: the 6-hour forecast after each analysis (every member "
                "of an ensemble, in batches), not part of the analysis time; median over the "
                "same cycles and seeds." if FORECAST in ds else "")
    return (f"Wall time of one analysis (`analyse`), median and 90th percentile over every "
            f"cycle and seed; peak memory: the largest over the cell.{forecast} "
            f"{regime_note(ds)} {provenance(ds)}")
