"""The skill table: latitude-weighted RMSE after spin-up per (method, density), in physical units,
and for ensemble methods the analysis spread next to it.

The table exists twice:
- numbers (``skill_numbers``): one row per (method, density), numeric columns in the Dataset's
  SI units. This is the CSV.
- display (``skill_table``, ``skill_latex``, ``format_skill_for_terminal``): the same rows as
  readable strings ("152 ± 23") with units in the headers (bench/report/formatting.py).

Ensembles. When any method of the run is an ensemble (``members`` > 0), each headline channel
gets a third column, "analysis spread", after its background and analysis RMSE: the ensemble's
own estimate of the analysis error, pooled exactly like the RMSE (mean ± 1σ over the same cycles
and seeds) so that the two adjacent numbers compare directly. This is the spread–skill check a
DA paper prints for an ensemble filter: spread ≈ RMSE for a well-calibrated ensemble, spread
well below RMSE for an under-dispersive one (the classic warning of filter divergence).
Deterministic methods show "—" there. Only the analysis spread is displayed, to keep the paper
table at three columns per channel; the CSV also keeps the background (forecast) spread. A run
without ensembles — and any metrics.nc written before ``spread`` existed — gives exactly the
two-column-per-channel table it always did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.formatting import (
    DISPLAY_UNITS,
    NOT_APPLICABLE,
    channel_label,
    channel_units,
    display_scale,
    display_units,
    diverged_text,
    format_columns,
    format_density,
    format_km,
    format_mean_std,
    format_number,
    latex_escape,
    pretty_units,
    units_label,
)
from bench.report.pooling import convention_note
from bench.report.render import provenance, tabular
from bench.report.selection import (
    after_spinup,
    cells,
    diverged_seeds,
    has_ensembles,
    headline_channels,
    members_of,
    method_label,
    observation_regimes,
    regime_note,
    settings_kind,
    spinup_of,
    tuned_note,
    tuned_of,
)
from bench.scorer import PHASES, select_cell

#: Suffix of the spread columns in the numbers ("z500_analysis_spread_mean").
SPREAD = "_spread"
#: Columns of the displayed table before its per-channel skill columns.
ROW_COLUMNS = ("method", "density", "obs columns", "spacing [km]")


def skill_columns(ds: xr.Dataset, channels: list[str]) -> list[tuple[str, str, str]]:
    """(channel, key, label) of each displayed skill column, channel by channel: the background
    and analysis RMSE, then the analysis spread when any method is an ensemble. ``key`` names
    the numbers' columns ``<channel>_<key>_mean`` and ``_std``."""
    keys = [(phase, phase) for phase in PHASES]
    if has_ensembles(ds):
        keys.append((f"{PHASES[-1]}{SPREAD}", f"{PHASES[-1]} spread"))
    return [(channel, key, label) for channel in channels for key, label in keys]


def skill_numbers(
    ds: xr.Dataset, spinup_cycles: int | None = None, channels: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Skill as numbers: the CSV table.

    One row per (method, density) in the Dataset's order, columns::

        method, density, [settings,] obs_columns, obs_spacing_km, [members,] obs_points, status,
        diverged_cycle, n_values,
        <channel>_background_mean, <channel>_background_std,
        <channel>_analysis_mean, <channel>_analysis_std, ...   (each headline channel)
        [<channel>_background_spread_mean, ..._std, <channel>_analysis_spread_mean, ..._std]

    mean and std are over all cycles ``>= spinup_cycles`` of all seeds pooled (``n_values`` of
    them; std is the sample standard deviation, ddof=1) of the latitude-weighted RMSE, in the
    Dataset's units. ``obs_columns`` and ``obs_spacing_km`` [km]: the density's observed
    columns per cycle and their mean spacing (``selection.observation_regimes``; NaN when
    unknown). ``settings`` ("tuned" or "default", bench/tuned.py) appears when the run tuned
    any method. ``obs_points`` is the median number of observed grid points per cycle (all
    cycles and seeds). A row whose cell diverged for any seed has status "diverged",
    ``diverged_cycle`` the earliest cycle at which one did, and NaN skill: surviving seeds alone
    would compare methods on different samples. ``members`` (ensemble size, 0: deterministic)
    appears when the metrics record it; the ``_spread`` columns, pooled like the RMSE, when any
    method is an ensemble (NaN for deterministic methods).
    """
    spinup = spinup_of(ds, spinup_cycles)
    chans = headline_channels(ds, channels)
    scores = {"": after_spinup(ds["rmse"].sel(channel=chans), spinup)}
    if has_ensembles(ds):
        scores[SPREAD] = after_spinup(ds["spread"].sel(channel=chans), spinup)
    regimes, _ = observation_regimes(ds)
    tuned = bool(tuned_of(ds))
    rows = []
    for method, density in cells(ds):
        diverged = diverged_seeds(ds, method, density)
        row: dict = {"method": method, "density": density}
        if tuned:
            row["settings"] = settings_kind(ds, method, density)
        row.update(obs_columns=regimes[density][0], obs_spacing_km=regimes[density][1])
        if "members" in ds:
            row["members"] = members_of(ds, method, density)
        row.update({
            "obs_points": float(np.nanmedian(select_cell(ds["n_points"], method, density).values)),
            "status": "diverged" if diverged else "ok",
            "diverged_cycle": min((c for _, c, _ in diverged), default=-1),
        })
        for suffix, score in scores.items():
            values = select_cell(score, method, density).transpose("phase", "channel", "seed",
                                                                   "cycle")
            row.setdefault("n_values", values.sizes["seed"] * values.sizes["cycle"])
            for channel in chans:
                for phase in PHASES:
                    pooled = values.sel(phase=phase, channel=channel).values.ravel()
                    mean, std = ((np.nan, np.nan) if diverged
                                 else (pooled.mean(), pooled.std(ddof=1)))
                    row[f"{channel}_{phase}{suffix}_mean"] = float(mean)
                    row[f"{channel}_{phase}{suffix}_std"] = float(std)
        rows.append(row)
    return pd.DataFrame(rows)


def _shown(row: pd.Series, channel: str, key: str, scale: float) -> str:
    if row.status != "ok":
        return diverged_text(row.diverged_cycle)
    if key.endswith(SPREAD) and row.members == 0:
        return NOT_APPLICABLE
    return format_mean_std(scale * row[f"{channel}_{key}_mean"],
                           scale * row[f"{channel}_{key}_std"])


def skill_table(
    ds: xr.Dataset, spinup_cycles: int | None = None, channels: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Skill for reading: the Markdown table.

    One row per (method, density), columns::

        method | density | obs columns | spacing [km] | z500 background [m² s⁻²]
               | z500 analysis [m² s⁻²]
               | [z500 analysis spread [m² s⁻²]] | ...

    each skill cell "mean ± 1σ" (see ``skill_numbers``) in the displayed units, "diverged
    (cycle k)" for a cell that diverged, "—" for a deterministic method's spread.
    """
    numbers = skill_numbers(ds, spinup_cycles, channels)
    labels = [method_label(ds, m, d) for m, d in zip(numbers["method"], numbers["density"],
                                                     strict=True)]
    table = pd.DataFrame(dict(zip(ROW_COLUMNS, (
        labels, [format_density(d) for d in numbers["density"]],
        [format_columns(v) for v in numbers["obs_columns"]],
        [format_km(v) for v in numbers["obs_spacing_km"]]), strict=True)))
    for channel, key, label in skill_columns(ds, headline_channels(ds, channels)):
        scale = display_scale(ds, channel)
        table[f"{channel} {label} {units_label(ds, channel)}"] = [
            _shown(row, channel, key, scale) for _, row in numbers.iterrows()]
    return table


def skill_latex(ds: xr.Dataset, spinup_cycles: int | None = None,
                channels: tuple[str, ...] | None = None) -> str:
    """The skill table as a booktabs ``tabular``: a channel [units] header spanning its
    background and analysis (and spread) columns; a diverged row is one spanning
    "diverged (cycle k)"."""
    numbers = skill_numbers(ds, spinup_cycles, channels)
    display = skill_table(ds, spinup_cycles, channels)
    chans = headline_channels(ds, channels)
    columns = skill_columns(ds, chans)
    per, first = len(columns) // len(chans), len(ROW_COLUMNS) + 1
    top = [""] * len(ROW_COLUMNS) + [
        rf"\multicolumn{{{per}}}{{c}}{{{channel_label(ds, c, 'latex')}}}" for c in chans]
    rules = " ".join(rf"\cmidrule(lr){{{first + per * i}-{first - 1 + per * (i + 1)}}}"
                     for i in range(len(chans)))
    header = [*ROW_COLUMNS, *(latex_escape(label) for _, _, label in columns)]
    body = []
    for (_, nums), (_, shown) in zip(numbers.iterrows(), display.iterrows(), strict=True):
        row_cells = [latex_escape(str(v)) for v in shown.iloc[:len(ROW_COLUMNS)]]
        if nums.status != "ok":
            span = latex_escape(diverged_text(nums.diverged_cycle))
            row_cells.append(rf"\multicolumn{{{len(columns)}}}{{c}}{{{span}}}")
        else:
            row_cells += [latex_escape(str(v)) for v in shown.iloc[len(ROW_COLUMNS):]]
        body.append(row_cells)
    row_spec = "ll" + "r" * (len(ROW_COLUMNS) - 2)
    return tabular(row_spec + "r" * len(columns), [top, rules, header], body)


def skill_notes(ds: xr.Dataset, spinup_cycles: int | None = None, channels=None) -> str:
    """The Markdown notes above the skill table: what is averaged, units, ensembles, diverged
    runs."""
    spinup = spinup_of(ds, spinup_cycles)
    kept = ds["cycle"].values[ds["cycle"].values >= spinup]
    seeds = ", ".join(str(int(s)) for s in ds["seed"].values)
    lines = [
        f"Latitude-weighted RMSE of the background and the analysis, in physical units, "
        f"mean ± 1σ (sample standard deviation) over cycles {kept.min()}–{kept.max()} after a "
        f"spin-up of {spinup} cycles, pooled over seeds {seeds}. The CSV's obs_points: median "
        f"number of observed grid points per cycle.",
        regime_note(ds),
        convention_note("the paper tables' CSVs (tables/paper_rmse_*.csv) have it as "
                        "root_mean_mse"),
    ]
    if has_ensembles(ds):
        sizes = {m: members_of(ds, m, d) for m, d in cells(ds)}
        lines.append(
            "analysis spread: the ensemble's spread about its mean (√ of the latitude-weighted "
            "mean of the members' variance), pooled like the RMSE; about equal to the analysis "
            "RMSE for a well-calibrated ensemble, smaller for an under-dispersive one. "
            f"{NOT_APPLICABLE}: deterministic method. The CSV also has the background spread. "
            "Ensemble sizes: " + ", ".join(f"{m} {n} members" for m, n in sizes.items() if n)
            + ".")
    stored = {channel_units(ds, c) for c in headline_channels(ds, channels)}
    for units in sorted(stored & DISPLAY_UNITS.keys()):
        shown = pretty_units(display_units(units)[0])
        lines.append(f"Channels stored in {pretty_units(units)} are shown in {shown} "
                     f"(the CSV keeps {units}).")
    lines += [line for line in (tuned_note(ds), provenance(ds)) if line]
    diverged = [(m, d, *s) for m, d in cells(ds) for s in diverged_seeds(ds, m, d)]
    if diverged:
        runs = [f"- {m}, density {d:g}, seed {s}: cycle {k}" + (f" ({r})" if r else "")
                for m, d, s, k, r in diverged]
        lines.append("A row shows “diverged (cycle k)” when any of its seeds diverged (k: the "
                     "earliest); diverged runs:\n" + "\n".join(runs))
    return "\n\n".join(lines)


def units_comment(ds: xr.Dataset, channels=None) -> str:
    """"units: z500=m2 s-2; ...": the CSV's comment line naming each channel's stored units."""
    return "units: " + "; ".join(f"{c}={channel_units(ds, c)}"
                                 for c in headline_channels(ds, channels))


def format_skill_for_terminal(ds: xr.Dataset, spinup_cycles: int | None = None,
                              channels: tuple[str, ...] | None = None) -> str:
    """A compact summary for the end of a run: analysis RMSE (background) per headline channel.

    One row per (method, density), each cell "analysis mean (background mean)" after spin-up.
    """
    numbers = skill_numbers(ds, spinup_cycles, channels)
    chans = headline_channels(ds, channels)
    table = pd.DataFrame({"method": [method_label(ds, m, d) for m, d in zip(
                              numbers["method"], numbers["density"], strict=True)],
                          "density": [format_density(d) for d in numbers["density"]]})
    background, analysis = PHASES
    for channel in chans:
        scale = display_scale(ds, channel)
        table[channel_label(ds, channel)] = [
            diverged_text(row.diverged_cycle) if row.status != "ok" else
            f"{format_number(scale * row[f'{channel}_{analysis}_mean'])} "
            f"({format_number(scale * row[f'{channel}_{background}_mean'])})"
            for _, row in numbers.iterrows()
        ]
    title = (f"Analysis RMSE (background RMSE), mean over cycles >= "
             f"{spinup_of(ds, spinup_cycles)} and {ds.sizes['seed']} seed(s); "
             f"device: {ds.attrs.get('device', 'unknown')}")
    return title + "\n" + table.to_markdown(index=False, tablefmt="simple",
                                            disable_numparse=True) + "\n"
