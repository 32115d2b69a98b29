"""Paper tables: one compact table per metric, for a two-column paper.

``tables/paper_rmse_<phase>.{tex,md,csv}`` (phase: analysis, background — the 6-h forecast
from the previous analysis): methods as rows, densities as column groups, and in each group
the channel-mean normalised RMSE and three headline channels (``PAPER_CHANNELS``; the full
skill table keeps all seven). A cell is the time-mean of the per-cycle RMSE after spin-up,
seeds pooled (bench/report/pooling.py), ± the half-width of its 95 % interval
(bench/report/statistics.py: with ≥ 3 seeds the between-seed t interval of the per-seed means,
else the AR(1)-corrected t), so the ± is the uncertainty of the mean, not the spread of cycles
that the skill table's ± 1σ shows. Per column the best method (lowest mean) is in bold and a †
marks a method that is not significantly worse than it: the same kind of 95 % interval of the
paired per-cycle difference (bench/report/paired.py) includes 0. The notes say which interval
decided; the CSV has the AR(1) one always.

The LaTeX is a ``table*`` float (spans both columns of a two-column page; ``\\small``, narrow
column separation) written by pandas' ``Styler.to_latex`` with booktabs rules; its caption says
what the numbers are. The CSV is long (one row per method, density and column) and carries
both RMSE conventions, the interval and the paired comparison with the best.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.formatting import (
    channel_label,
    channel_units,
    display_scale,
    diverged_text,
    format_columns,
    format_density,
    format_km,
    format_mean_std,
    latex_escape,
)
from bench.report.paired import (
    INTERVAL_NAMES,
    decisive_kind,
    drift_note,
    interval_note,
    method_series,
    not_worse,
    versus_best,
)
from bench.report.pooling import (
    CHANNEL_MEAN,
    CONVENTIONS,
    DEFAULT_CONVENTION,
    channel_mean_note,
    convention_note,
    cycle_series,
    pool,
)
from bench.report.render import provenance, styler_latex
from bench.report.selection import (
    diverged_seeds,
    headline_channels,
    method_label,
    observation_regimes,
    regime_note,
    settings_kind,
    spinup_of,
    tuned_note,
    tuned_of,
)
from bench.report.statistics import mean_interval

#: The headline channels of a paper table (those present), after the channel mean.
PAPER_CHANNELS = ("z500", "t850", "q700")
#: The phases that get a paper table.
PAPER_PHASES = ("analysis", "background")
DAGGER = "†"


def paper_columns(ds: xr.Dataset) -> list[str]:
    return [CHANNEL_MEAN, *headline_channels(ds, PAPER_CHANNELS)]


def paper_numbers(ds: xr.Dataset, phase: str = "analysis",
                  spinup_cycles: int | None = None) -> pd.DataFrame:
    """The paper table as numbers (the CSV): one row per (method, density, column).

    Columns: method, density, column (``channel_mean`` or a channel), units ("1" for the
    channel mean), status, diverged_cycle, mean_rmse (default), interval (the kind shown and
    deciding: "seeds" from 3 seeds on, else "ar1"), ci_low, ci_high (that 95 % interval),
    ar1_low, ar1_high, phi, n_eff (the AR(1)-corrected t interval, always), root_mean_mse
    (WeatherBench2's convention), best, not_worse (the deciding paired interval with the best
    includes 0; true for the best), diff_low, diff_high (that interval of method − best),
    diff_ar1_low, diff_ar1_high, diff_phi (its AR(1) interval and the φ of the difference);
    settings ("tuned" or "default") last when the run tuned any method.
    """
    spinup = spinup_of(ds, spinup_cycles)
    rows = []
    for column in paper_columns(ds):
        series = cycle_series(ds, column, phase, spinup)
        units = "1" if column == CHANNEL_MEAN else channel_units(ds, column)
        for density in (float(d) for d in ds["density"].values):
            by_method = method_series(ds, series, density)
            best, paired = versus_best(by_method)
            for method, values in by_method.items():
                diverged = diverged_seeds(ds, method, density)
                row = {"method": method, "density": density, "column": column, "units": units,
                       "status": "ok" if values is not None else "diverged",
                       "diverged_cycle": min((c for _, c, _ in diverged), default=-1)}
                if values is not None:
                    own, ar1 = mean_interval(values), mean_interval(values, "ar1")
                    diff = paired[method]
                    diff_ar1 = mean_interval(values - by_method[best], "ar1")
                    row.update(mean_rmse=own.mean, interval=own.kind, ci_low=own.low,
                               ci_high=own.high, ar1_low=ar1.low, ar1_high=ar1.high,
                               phi=ar1.phi, n_eff=ar1.n_eff,
                               root_mean_mse=pool(values, "root_mean_mse"),
                               best=method == best, not_worse=not_worse(diff),
                               diff_low=diff.low, diff_high=diff.high,
                               diff_ar1_low=diff_ar1.low, diff_ar1_high=diff_ar1.high,
                               diff_phi=diff_ar1.phi)
                rows.append(row)
    columns = ["method", "density", "column", "units", "status", "diverged_cycle", "mean_rmse",
               "interval", "ci_low", "ci_high", "ar1_low", "ar1_high", "phi", "n_eff",
               "root_mean_mse", "best", "not_worse", "diff_low", "diff_high", "diff_ar1_low",
               "diff_ar1_high", "diff_phi"]
    table = pd.DataFrame(rows, columns=columns)
    if tuned_of(ds):
        table["settings"] = [settings_kind(ds, m, d) for m, d in zip(
            table["method"], table["density"], strict=True)]
    return table


def _label(ds: xr.Dataset, column: str, style: str = "unicode") -> str:
    return "channel mean" if column == CHANNEL_MEAN else channel_label(ds, column, style)


def _cell(ds: xr.Dataset, row) -> str:
    if row.status != "ok":
        return diverged_text(int(row.diverged_cycle))
    scale = 1.0 if row.column == CHANNEL_MEAN else display_scale(ds, row.column)
    text = format_mean_std(scale * row.mean_rmse, scale * 0.5 * (row.ci_high - row.ci_low))
    return text + (DAGGER if row.not_worse and not row.best else "")


def paper_display(ds: xr.Dataset, phase: str = "analysis", spinup_cycles: int | None = None,
                  style: str = "unicode") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table for reading, a boolean frame of its bold cells): index method, columns
    (density, column label)."""
    numbers = paper_numbers(ds, phase, spinup_cycles)
    methods = [str(m) for m in ds["method"].values]
    keys = [(format_density(float(d)), c) for d in ds["density"].values
            for c in paper_columns(ds)]
    table = pd.DataFrame(index=pd.Index(methods, name="method"),
                         columns=pd.MultiIndex.from_tuples(keys), dtype=object)
    bold = pd.DataFrame(False, index=table.index, columns=table.columns)
    for row in numbers.itertuples():
        key = (format_density(row.density), row.column)
        table.loc[row.method, key] = _cell(ds, row)
        bold.loc[row.method, key] = row.status == "ok" and bool(row.best)
    labels = pd.MultiIndex.from_tuples([(_density_label(ds, d), _label(ds, c, style))
                                        for d, c in keys], names=["", "method"])
    table.columns, bold.columns = labels, labels
    table.index = bold.index = pd.Index([method_label(ds, m) for m in methods])
    table.index.name = bold.index.name = None
    return table, bold


def _density_label(ds: xr.Dataset, density: str) -> str:
    """A column group's header: "density 0.01 (20 col., 4861 km)", its observed columns and
    their mean spacing (bench/obs_regime.py) where known."""
    regimes, _ = observation_regimes(ds)
    columns, spacing = next(v for d, v in regimes.items() if format_density(d) == density)
    if not (math.isfinite(columns) and math.isfinite(spacing)):
        return f"density {density}"
    return f"density {density} ({format_columns(columns)} col., {format_km(spacing)} km)"


def regimes_sentence(ds: xr.Dataset) -> str:
    """"Observation regimes: density 0.01: 20 columns, mean spacing 4861 km; …." ("" when
    unknown)."""
    regimes, _ = observation_regimes(ds)
    known = [(d, n, k) for d, (n, k) in regimes.items() if math.isfinite(n) and math.isfinite(k)]
    if not known:
        return ""
    return "Observation regimes: " + "; ".join(
        f"density {format_density(d)}: {format_columns(n)} columns, mean spacing "
        f"{format_km(k)} km" for d, n, k in known) + "."


def _interval_words(ds: xr.Dataset) -> str:
    if decisive_kind(ds) == "seeds":
        return f"between seeds: t over the {ds.sizes['seed']} seed means"
    return INTERVAL_NAMES["ar1"]


def paper_caption(ds: xr.Dataset, phase: str = "analysis",
                  spinup_cycles: int | None = None) -> str:
    """What the numbers are (the LaTeX caption and the Markdown notes' first paragraph)."""
    what = ("Analysis RMSE" if phase == "analysis"
            else "Background RMSE (the 6-h forecast from the previous analysis)")
    return (f"{what} after a spin-up of {spinup_of(ds, spinup_cycles)} cycles, "
            f"{ds.sizes['seed']} seed(s) pooled: {CONVENTIONS[DEFAULT_CONVENTION]} ± the "
            f"half-width of its 95 % interval ({_interval_words(ds)}). Bold: the lowest in its "
            f"column; {DAGGER}: not significantly worse than it (the 95 % interval of the paired "
            f"per-cycle difference, {_interval_words(ds)}, includes 0). channel mean: "
            f"normalised, dimensionless. {regimes_sentence(ds)}{_tuned_words(ds)}").strip()


def _tuned_words(ds: xr.Dataset) -> str:
    """The caption's sentence on "(tuned)" rows ("" for an untuned run)."""
    if not tuned_of(ds):
        return ""
    return (" (tuned): settings chosen per density on the validation period (python -m bench "
            "tune); the other rows use default settings.")


def _same_for_every_seed(numbers: pd.DataFrame) -> list[str]:
    """The methods whose between-seed interval has zero width in every column (their runs do
    not depend on the seed, e.g. ``none``, which uses no observations)."""
    ok = numbers[(numbers["status"] == "ok") & (numbers["interval"] == "seeds")]
    zero = (ok["ci_high"] == ok["ci_low"]).groupby(ok["method"], sort=False).all()
    return [str(m) for m in zero.index[zero.to_numpy()]]


def paper_notes(ds: xr.Dataset, phase: str = "analysis",
                spinup_cycles: int | None = None) -> str:
    shown = headline_channels(ds, PAPER_CHANNELS)
    numbers = paper_numbers(ds, phase, spinup_cycles)
    others = numbers[(numbers["status"] == "ok") & ~numbers["best"].astype(bool)]
    same = _same_for_every_seed(numbers)
    return "\n\n".join(line for line in [
        paper_caption(ds, phase, spinup_cycles).replace("Bold:", "**Bold**:"),
        interval_note(ds.sizes["seed"], f"The ± and {DAGGER}",
                      "in the CSV (ar1_low, ar1_high; of the difference with the best: "
                      "diff_ar1_low, diff_ar1_high)"),
        f"± 0 ({', '.join(same)}): the run is the same for every seed (it does not depend on "
        f"the observation draws), so the between-seed interval has zero width." if same else "",
        channel_mean_note(ds) + f" Channels: {', '.join(shown)} of the headline set; "
        "tables/skill.md has all of them.",
        drift_note(others["diff_phi"], "comparisons with the best", ds.sizes["seed"]),
        regime_note(ds),
        tuned_note(ds),
        convention_note("the CSV has it as root_mean_mse"),
        provenance(ds),
    ] if line)


def paper_markdown_table(ds: xr.Dataset, phase: str = "analysis",
                         spinup_cycles: int | None = None) -> pd.DataFrame:
    """The display table flattened for Markdown: "method", then "0.01: z500 [m² s⁻²]", ...;
    bold cells as **…**."""
    table, bold = paper_display(ds, phase, spinup_cycles)
    flat = table.where(~bold, "**" + table.astype(str) + "**")
    # the key is the density alone ("0.01: z500"): the regime is in the notes
    flat.columns = [f"{format_density(float(d))}: {c[1]}" for d, c in zip(
        np.repeat(ds["density"].values, len(paper_columns(ds))), table.columns, strict=True)]
    flat.insert(0, "method", table.index)
    return flat.reset_index(drop=True)


def paper_latex(ds: xr.Dataset, phase: str = "analysis",
                spinup_cycles: int | None = None) -> str:
    """The paper table as a booktabs ``table*`` float (Styler.to_latex), ``\\small`` with a
    narrow column gap so that it fits the width of a two-column page."""
    table, bold = paper_display(ds, phase, spinup_cycles, style="latex")
    return styler_latex(
        table, "l" + "r" * table.shape[1], bold, latex_columns=True, index=True,
        commands=(("small", ""), ("setlength", r"{\tabcolsep}{3pt}")),
        caption=latex_escape(paper_caption(ds, phase, spinup_cycles)), environment="table*",
        label=f"tab:paper-rmse-{phase}", position_float="centering")
