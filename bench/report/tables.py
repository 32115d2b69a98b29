"""Results -> paper tables: skill (RMSE after spin-up) and timing, as Markdown, LaTeX and CSV.

Tables are pure functions of the metrics Dataset (``metrics.nc``, DESIGN.md §6): nothing here
reads the clock, the machine or the environment, so regenerating the tables from the same file
gives byte-identical files and never re-runs the cycles.

Each table exists twice:
- numbers (``skill_numbers``, ``timing_numbers``): one row per (method, density), numeric
  columns in the Dataset's SI units. This is the CSV.
- display (``skill_table``, ``timing_table``): the same rows as readable strings ("152 ± 23",
  "51.2 ms") with units in the headers. This is the Markdown, LaTeX and terminal view.

Number format (display only; the CSV keeps full precision): a mean shows 3 significant digits
and its σ the same decimal places, so "152 ± 23" and "0.412 ± 0.051"; magnitudes below 1e-3 fall
back to scientific notation. Specific humidity (stored in kg kg⁻¹, errors ~1e-4) is shown in
g kg⁻¹ so it reads as "0.412 ± 0.051" (``DISPLAY_UNITS``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bench import store

#: Channels reported in the skill table, in this order (those missing from a Dataset are skipped).
HEADLINE = ("z500", "t850", "q700", "u850", "t2m", "u10", "msl")
PHASES = ("background", "analysis")
#: Significant digits of a displayed mean.
SIGNIFICANT = 3
#: Stored units -> (displayed units, factor from stored to displayed).
DISPLAY_UNITS: dict[str, tuple[str, float]] = {"kg kg-1": ("g kg-1", 1e3)}

_CELL = ("method", "density")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "µ": r"$\mu$", "σ": r"$\sigma$",
}


# ----------------------------------------------------------------------------- selection

def headline_channels(ds: xr.Dataset, channels: tuple[str, ...] | None = None) -> list[str]:
    """The channels of ``channels`` (default ``HEADLINE``) present in ``ds``, in that order."""
    wanted = HEADLINE if channels is None else tuple(channels)
    present = [c for c in wanted if c in set(ds["channel"].values.tolist())]
    if not present:
        raise ValueError(
            f"none of the channels {', '.join(wanted)} is in the metrics (channels: "
            f"{', '.join(map(str, ds['channel'].values))}); pass channels=[...] to choose others"
        )
    return present


def spinup_of(ds: xr.Dataset, spinup_cycles: int | None = None) -> int:
    """``spinup_cycles`` if given, else the Dataset's ``spinup_cycles`` attribute."""
    if spinup_cycles is None:
        if "spinup_cycles" not in ds.attrs:
            raise ValueError("the metrics have no 'spinup_cycles' attribute; pass spinup_cycles=")
        spinup_cycles = ds.attrs["spinup_cycles"]
    spinup = int(spinup_cycles)
    if not (ds["cycle"].values >= spinup).any():
        raise ValueError(
            f"no cycle is left after a spin-up of {spinup} cycles (cycles "
            f"{int(ds['cycle'].min())}..{int(ds['cycle'].max())}); pass a smaller spinup_cycles"
        )
    return spinup


def after_spinup(da: xr.DataArray, spinup: int) -> xr.DataArray:
    """The cycles whose number is ``>= spinup`` (the cycle coordinate, not the position)."""
    return da.isel(cycle=np.flatnonzero(da["cycle"].values >= spinup))


def cells(ds: xr.Dataset) -> list[tuple[str, float]]:
    """(method, density) pairs in the Dataset's order: the rows of every table."""
    return [(str(m), float(d)) for m in ds["method"].values for d in ds["density"].values]


def _cell(da: xr.DataArray, method: str, density: float) -> xr.DataArray:
    # dict form: `method` is also a keyword of DataArray.sel, so sel(method=...) would not work.
    return da.sel({"method": method, "density": density})


def diverged_seeds(ds: xr.Dataset, method: str, density: float) -> list[tuple[int, int, str]]:
    """(seed, diverged cycle, reason) of each seed of a cell that diverged."""
    status = _cell(ds["status"], method, density)
    out = []
    for seed in ds["seed"].values:
        if str(status.sel(seed=seed).values) != "ok":
            cycle = int(_cell(ds["diverged_cycle"], method, density).sel(seed=seed))
            reason = str(_cell(ds["diverged_reason"], method, density).sel(seed=seed).values)
            out.append((int(seed), cycle, reason))
    return out


# ----------------------------------------------------------------------------- formatting

def display_units(units: str) -> tuple[str, float]:
    """Stored units -> (units shown in tables and figures, factor to multiply values by)."""
    return DISPLAY_UNITS.get(units, (units, 1.0))


def pretty_units(units: str, style: str = "unicode") -> str:
    """CF/udunits spelling -> readable: "m2 s-2" -> "m² s⁻²" (unicode) or "m$^{2}$ s$^{-2}$"."""
    def power(match: re.Match) -> str:
        base, exp = match.group(1), match.group(2)
        if style == "latex":
            return f"{base}$^{{{exp}}}$"
        return base + exp.translate(_SUPERSCRIPT)

    if style not in ("unicode", "latex"):
        raise ValueError(f"unknown units style {style!r}; valid: 'unicode', 'latex'")
    return re.sub(r"([A-Za-z]+)(-?\d+)", power, units)


def units_label(ds: xr.Dataset, channel: str, style: str = "unicode") -> str:
    """"[m² s⁻²]": a channel's displayed units, bracketed for a header or axis label."""
    return f"[{pretty_units(display_units(_units(ds, channel))[0], style)}]"


def channel_label(ds: xr.Dataset, channel: str, style: str = "unicode") -> str:
    """"z500 [m² s⁻²]": the channel with its displayed units."""
    return f"{channel} {units_label(ds, channel, style)}"


def _units(ds: xr.Dataset, channel: str) -> str:
    return str(ds["units"].sel(channel=channel).values)


def _decimals(x: float, digits: int) -> int:
    """Decimal places that show ``digits`` significant digits of ``x`` (never negative)."""
    if x == 0 or not math.isfinite(x):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def format_number(x: float, digits: int = SIGNIFICANT) -> str:
    """3 significant digits without exponent ("1234", "23.4", "0.0512"); "n/a" for NaN."""
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{_decimals(x, digits)}f}"


def format_mean_std(mean: float, std: float, digits: int = SIGNIFICANT) -> str:
    """"152 ± 23": the mean with ``digits`` significant digits, σ with the same decimals."""
    if not math.isfinite(mean):
        return "n/a"
    if mean != 0 and abs(mean) < 1e-3:
        return f"{mean:.{digits - 1}e} ± {std:.1e}"
    d = _decimals(mean, digits)
    return f"{mean:.{d}f} ± {std:.{d}f}"


def format_seconds(seconds: float) -> str:
    """A duration with a readable unit: "512 µs", "51.2 ms", "2.13 s", "1234 s"."""
    if not math.isfinite(seconds):
        return "n/a"
    unit, scale = next(((u, f) for u, f in (("s", 1.0), ("ms", 1e-3)) if seconds >= f),
                       ("µs", 1e-6))
    return f"{format_number(seconds / scale)} {unit}"


def _format_count(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; ± and µ become $\\pm$ and $\\mu$."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def diverged_text(cycle: int) -> str:
    return f"diverged (cycle {cycle})"


# ----------------------------------------------------------------------------- skill

def skill_numbers(
    ds: xr.Dataset, spinup_cycles: int | None = None, channels: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Skill as numbers: the CSV table.

    One row per (method, density) in the Dataset's order, columns::

        method, density, obs_points, status, diverged_cycle, n_values,
        <channel>_background_mean, <channel>_background_std,
        <channel>_analysis_mean, <channel>_analysis_std, ...   (each headline channel)

    mean and std are over all cycles ``>= spinup_cycles`` of all seeds pooled (``n_values`` of
    them; std is the sample standard deviation, ddof=1) of the latitude-weighted RMSE, in the
    Dataset's units. ``obs_points`` is the median number of observed grid points per cycle (all
    cycles and seeds). A row whose cell diverged for any seed has status "diverged",
    ``diverged_cycle`` the earliest cycle at which one did, and NaN skill: surviving seeds alone
    would compare methods on different samples.
    """
    spinup = spinup_of(ds, spinup_cycles)
    chans = headline_channels(ds, channels)
    rmse = after_spinup(ds["rmse"].sel(channel=chans), spinup)
    rows = []
    for method, density in cells(ds):
        diverged = diverged_seeds(ds, method, density)
        values = _cell(rmse, method, density).transpose("phase", "channel", "seed", "cycle")
        row = {
            "method": method, "density": density,
            "obs_points": float(np.nanmedian(_cell(ds["n_points"], method, density).values)),
            "status": "diverged" if diverged else "ok",
            "diverged_cycle": min((c for _, c, _ in diverged), default=-1),
            "n_values": values.sizes["seed"] * values.sizes["cycle"],
        }
        for channel in chans:
            for phase in PHASES:
                pooled = values.sel(phase=phase, channel=channel).values.ravel()
                mean, std = (np.nan, np.nan) if diverged else (pooled.mean(), pooled.std(ddof=1))
                row[f"{channel}_{phase}_mean"] = float(mean)
                row[f"{channel}_{phase}_std"] = float(std)
        rows.append(row)
    return pd.DataFrame(rows)


def skill_table(
    ds: xr.Dataset, spinup_cycles: int | None = None, channels: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Skill for reading: the Markdown table.

    One row per (method, density), columns::

        method | density | obs points | z500 background [m² s⁻²] | z500 analysis [m² s⁻²] | ...

    each skill cell "mean ± 1σ" (see ``skill_numbers``) in the displayed units, or
    "diverged (cycle k)" for a cell that diverged.
    """
    numbers = skill_numbers(ds, spinup_cycles, channels)
    chans = headline_channels(ds, channels)
    table = pd.DataFrame({
        "method": numbers["method"],
        "density": [f"{d:g}" for d in numbers["density"]],
        "obs points": [_format_count(v) for v in numbers["obs_points"]],
    })
    for channel in chans:
        scale = display_units(_units(ds, channel))[1]
        for phase in PHASES:
            table[f"{channel} {phase} {units_label(ds, channel)}"] = [
                diverged_text(row.diverged_cycle) if row.status != "ok" else format_mean_std(
                    scale * row[f"{channel}_{phase}_mean"], scale * row[f"{channel}_{phase}_std"])
                for _, row in numbers.iterrows()
            ]
    return table


def skill_latex(ds: xr.Dataset, spinup_cycles: int | None = None,
                channels: tuple[str, ...] | None = None) -> str:
    """The skill table as a booktabs ``tabular``: a channel [units] header spanning its
    background and analysis columns; a diverged row is one spanning "diverged (cycle k)"."""
    numbers = skill_numbers(ds, spinup_cycles, channels)
    display = skill_table(ds, spinup_cycles, channels)
    chans = headline_channels(ds, channels)
    n_skill = 2 * len(chans)
    top = ["", "", ""] + [
        rf"\multicolumn{{2}}{{c}}{{{channel_label(ds, c, 'latex')}}}" for c in chans]
    rules = " ".join(rf"\cmidrule(lr){{{4 + 2 * i}-{5 + 2 * i}}}" for i in range(len(chans)))
    header = ["method", "density", "obs points"] + ["background", "analysis"] * len(chans)
    body = []
    for (_, nums), (_, shown) in zip(numbers.iterrows(), display.iterrows(), strict=True):
        row_cells = [latex_escape(str(v)) for v in shown.iloc[:3]]
        if nums.status != "ok":
            span = latex_escape(diverged_text(nums.diverged_cycle))
            row_cells.append(rf"\multicolumn{{{n_skill}}}{{c}}{{{span}}}")
        else:
            row_cells += [latex_escape(str(v)) for v in shown.iloc[3:]]
        body.append(row_cells)
    return _tabular("llr" + "rr" * len(chans), [top, rules, header], body)


def _skill_notes(ds: xr.Dataset, spinup_cycles: int | None, channels) -> str:
    spinup = spinup_of(ds, spinup_cycles)
    kept = ds["cycle"].values[ds["cycle"].values >= spinup]
    seeds = ", ".join(str(int(s)) for s in ds["seed"].values)
    lines = [
        f"Latitude-weighted RMSE of the background and the analysis, in physical units, "
        f"mean ± 1σ (sample standard deviation) over cycles {kept.min()}–{kept.max()} after a "
        f"spin-up of {spinup} cycles, pooled over seeds {seeds}. obs points: median number of "
        f"observed grid points per cycle.",
    ]
    stored = {_units(ds, c) for c in headline_channels(ds, channels)}
    converted = sorted(stored & DISPLAY_UNITS.keys())
    for units in converted:
        shown = pretty_units(display_units(units)[0])
        lines.append(f"Channels stored in {pretty_units(units)} are shown in {shown} "
                     f"(the CSV keeps {units}).")
    lines.append(_provenance(ds))
    diverged = [(m, d, *s) for m, d in cells(ds) for s in diverged_seeds(ds, m, d)]
    if diverged:
        runs = [f"- {m}, density {d:g}, seed {s}: cycle {k}" + (f" ({r})" if r else "")
                for m, d, s, k, r in diverged]
        lines.append("A row shows “diverged (cycle k)” when any of its seeds diverged (k: the "
                     "earliest); diverged runs:\n" + "\n".join(runs))
    return "\n\n".join(lines)


def _provenance(ds: xr.Dataset) -> str:
    parts = [f"{key}: {ds.attrs[key]}" for key in ("world", "model", "device") if key in ds.attrs]
    return "; ".join(parts) + "." if parts else ""


# ----------------------------------------------------------------------------- timing

def timing_numbers(ds: xr.Dataset) -> pd.DataFrame:
    """Timing as numbers: the CSV table.

    One row per (method, density), columns::

        method, density, n_analyses, median_seconds, p90_seconds, peak_memory_mib, device

    over every timed analysis of all cycles and seeds (NaN cycles after a divergence are left
    out; spin-up cycles count: timing does not depend on skill). p90 is numpy's linear
    percentile; peak memory the largest over the cell (MiB = 2**20 bytes, NaN if unknown).
    """
    device = str(ds.attrs.get("device", "unknown"))
    rows = []
    for method, density in cells(ds):
        seconds = _cell(ds["analysis_seconds"], method, density).values.ravel()
        seconds = seconds[np.isfinite(seconds)]
        peak = _cell(ds["peak_memory_bytes"], method, density).values.ravel()
        peak = peak[np.isfinite(peak)]
        rows.append({
            "method": method, "density": density, "n_analyses": seconds.size,
            "median_seconds": float(np.median(seconds)) if seconds.size else np.nan,
            "p90_seconds": float(np.percentile(seconds, 90)) if seconds.size else np.nan,
            "peak_memory_mib": float(peak.max() / 2**20) if peak.size else np.nan,
            "device": device,
        })
    return pd.DataFrame(rows)


def timing_table(ds: xr.Dataset) -> pd.DataFrame:
    """Timing for reading: the Markdown table.

    One row per (method, density), columns::

        method | density | analyses | median time | p90 time | peak memory [MiB] | device
    """
    numbers = timing_numbers(ds)
    return pd.DataFrame({
        "method": numbers["method"],
        "density": [f"{d:g}" for d in numbers["density"]],
        "analyses": [str(n) for n in numbers["n_analyses"]],
        "median time": [format_seconds(s) for s in numbers["median_seconds"]],
        "p90 time": [format_seconds(s) for s in numbers["p90_seconds"]],
        "peak memory [MiB]": [format_number(m) for m in numbers["peak_memory_mib"]],
        "device": numbers["device"],
    })


def timing_latex(ds: xr.Dataset) -> str:
    """The timing table as a booktabs ``tabular``."""
    display = timing_table(ds)
    header = [latex_escape(c) for c in display.columns]
    body = [[latex_escape(str(v)) for v in row] for row in display.itertuples(index=False)]
    return _tabular("llrrrrl", [header], body)


def _timing_notes(ds: xr.Dataset) -> str:
    return (f"Wall time of one analysis (`analyse`), median and 90th percentile over every "
            f"cycle and seed; peak memory: the largest over the cell. {_provenance(ds)}")


# ----------------------------------------------------------------------------- rendering

def _tabular(colspec: str, header: list, body: list[list[str]]) -> str:
    """A booktabs tabular. ``header``: rows (lists of cells) or ready lines (strings)."""
    def line(row_cells: list[str] | str) -> str:
        return row_cells if isinstance(row_cells, str) else " & ".join(row_cells) + r" \\"

    return "\n".join([
        rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", *map(line, header), r"\midrule",
        *map(line, body), r"\bottomrule", r"\end{tabular}",
    ]) + "\n"


def _markdown(table: pd.DataFrame, title: str, command: str, notes: str) -> str:
    # disable_numparse: cells are already formatted; tabulate must not re-format "0.010" etc.
    colalign = ["left" if c in ("method", "device") else "right" for c in table.columns]
    body = table.to_markdown(index=False, disable_numparse=True, colalign=colalign)
    return f"# {title}\n\nMade by:\n\n```bash\n{command}\n```\n\n{notes.strip()}\n\n{body}\n"


def _csv(table: pd.DataFrame, command: str, comments: tuple[str, ...] = ()) -> str:
    header = "".join(f"# {line}\n" for line in (command, *comments))
    return header + table.to_csv(index=False, lineterminator="\n")


def _units_comment(ds: xr.Dataset, channels) -> str:
    return "units: " + "; ".join(f"{c}={_units(ds, c)}" for c in headline_channels(ds, channels))


def write_tables(
    ds: xr.Dataset, out_dir: str | Path, command: str, spinup_cycles: int | None = None,
    channels: tuple[str, ...] | None = None,
) -> list[Path]:
    """Write ``tables/skill.{md,tex,csv}`` and ``tables/timing.{md,tex,csv}`` under ``out_dir``.

    Markdown: title, the command, notes (spin-up, seeds, units, diverged runs), the table.
    LaTeX: a booktabs tabular to paste into a paper, preceded by a ``%`` comment with the
    command. CSV: ``#`` comment lines (command, units) then the numeric table
    (``pd.read_csv(path, comment="#")`` reads it).
    """
    directory = Path(out_dir) / "tables"
    numbers, timing = skill_numbers(ds, spinup_cycles, channels), timing_numbers(ds)
    files = {
        "skill.md": _markdown(skill_table(ds, spinup_cycles, channels),
                              "Skill: RMSE after spin-up (mean ± 1σ)", command,
                              _skill_notes(ds, spinup_cycles, channels)),
        "skill.tex": f"% {command}\n" + skill_latex(ds, spinup_cycles, channels),
        "skill.csv": _csv(numbers, command, (_units_comment(ds, channels),)),
        "timing.md": _markdown(timing_table(ds), "Time and memory per analysis", command,
                               _timing_notes(ds)),
        "timing.tex": f"% {command}\n" + timing_latex(ds),
        "timing.csv": _csv(timing, command),
    }
    return [store.write_text(directory / name, text) for name, text in files.items()]


# ----------------------------------------------------------------------------- terminal

def format_skill_for_terminal(ds: xr.Dataset, spinup_cycles: int | None = None,
                              channels: tuple[str, ...] | None = None) -> str:
    """A compact summary for the end of a run: analysis RMSE (background) per headline channel.

    One row per (method, density), each cell "analysis mean (background mean)" after spin-up.
    """
    numbers = skill_numbers(ds, spinup_cycles, channels)
    chans = headline_channels(ds, channels)
    table = pd.DataFrame({"method": numbers["method"],
                          "density": [f"{d:g}" for d in numbers["density"]]})
    for channel in chans:
        scale = display_units(_units(ds, channel))[1]
        table[channel_label(ds, channel)] = [
            diverged_text(row.diverged_cycle) if row.status != "ok" else
            f"{format_number(scale * row[f'{channel}_analysis_mean'])} "
            f"({format_number(scale * row[f'{channel}_background_mean'])})"
            for _, row in numbers.iterrows()
        ]
    title = (f"Analysis RMSE (background RMSE), mean over cycles >= "
             f"{spinup_of(ds, spinup_cycles)} and {ds.sizes['seed']} seed(s); "
             f"device: {ds.attrs.get('device', 'unknown')}")
    return title + "\n" + table.to_markdown(index=False, tablefmt="simple",
                                            disable_numparse=True) + "\n"
