"""Several runs -> one skill/cost table: sweeps over a method's settings (``--set``).

A sweep is a set of run directories that differ in a method's hyper-parameters, e.g. DiffDA's
sampling steps. Each (run, method, density) becomes one row labelled with the run's
``--set`` values for that method, with the analysis RMSE after spin-up of the headline
channels (mean over cycles and seeds, as the skill table computes it) next to the median time
per analysis and of the forecast after it — the trade-off a reader wants in one table. Reads
metrics.nc and config.json only, like bench/report/tables.py; runs written before metrics.nc
recorded forecast times have NaN there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import xarray as xr

from bench import store
from bench.report.selection import HEADLINE, headline_channels
from bench.report.skill import skill_numbers
from bench.report.timing import timing_numbers
from bench.tuned import settings_at


def settings_label(config: dict, method: str, density: float | None = None) -> str:
    """The run's non-default settings of ``method`` as ``a=1, b=2`` ("defaults" if none);
    "tuned: a=1" for a method the run tuned at ``density`` (``run --tuned``, bench/tuned.py)."""
    tuned = None if density is None else settings_at(config.get("tuned", {}), method, density)
    settings = config.get("method_settings", {}).get(method, {}) | (tuned or {})
    text = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return f"tuned: {text}" if tuned is not None else text or "defaults"


def compare_runs(runs: list[str | Path], channels: tuple[str, ...] = HEADLINE) -> pd.DataFrame:
    """One row per (run, method, density): settings, status, RMSE per channel, time.

    Columns: run, method, settings, density, status, diverged_cycle, <channel>_analysis (mean
    analysis RMSE after spin-up, the Dataset's units; NaN when diverged), median_seconds,
    p90_seconds, median_forecast_seconds (the forecast after each analysis; NaN for a run
    whose metrics do not record it).
    """
    rows = []
    for run in runs:
        run = Path(run)
        metrics, config_path = run / "metrics.nc", run / "config.json"
        if not metrics.exists() or not config_path.exists():
            raise ValueError(f"{run} is not a finished run directory (no metrics.nc or "
                             f"config.json); pass directories written by `python -m bench run`")
        config = json.loads(config_path.read_text())
        with xr.open_dataset(metrics) as ds:
            chans = tuple(headline_channels(ds, channels))
            skill = skill_numbers(ds.load(), channels=chans)
            timing = timing_numbers(ds)
        merged = skill.merge(timing, on=["method", "density"])
        for _, r in merged.iterrows():
            row = {"run": run.name, "method": r["method"],
                   "settings": settings_label(config, r["method"], r["density"]),
                   "density": r["density"],
                   "status": r["status"], "diverged_cycle": r["diverged_cycle"]}
            row.update({f"{c}_analysis": r[f"{c}_analysis_mean"] for c in chans})
            row.update(median_seconds=r["median_seconds"], p90_seconds=r["p90_seconds"],
                       median_forecast_seconds=r.get("median_forecast_seconds", float("nan")))
            rows.append(row)
    return pd.DataFrame(rows)


def write_comparison(runs: list[str | Path], out: str | Path, command: str,
                     channels: tuple[str, ...] = HEADLINE) -> list[Path]:
    """compare_runs as ``comparison.{md,csv,tex}`` in ``out``."""
    table = compare_runs(runs, channels)
    notes = ("One row per run, method and density: mean analysis RMSE after each run's "
             "spin-up (the skill table's numbers: time-mean of per-cycle RMSE, not "
             "WeatherBench2's √(time-mean MSE); in the metrics' units; q in kg kg⁻¹), the "
             "median and 90th percentile of the time per analysis and the median time of the "
             "forecast after it. `settings` are the run's `--set` values for the method. "
             "Runs: " + ", ".join(Path(r).name for r in runs))
    return store.write_table(table, out, "comparison", "Settings sweep: skill and cost",
                             command, notes)
