"""Results -> paper tables: every table file of a run, from its metrics Dataset.

``write_tables`` writes under ``tables/``:

- ``skill.{md,tex,csv}`` (bench/report/skill.py): RMSE of all headline channels, mean ± 1σ;
- ``timing.{md,tex,csv}`` (bench/report/timing.py): time and memory per analysis;
- ``paper_rmse_analysis`` and ``paper_rmse_background.{md,tex,csv}`` (bench/report/paper.py):
  compact tables for a paper, ± the 95 % interval of the mean, best in bold, † for "not
  significantly worse";
- ``paired.{md,tex,csv}`` (bench/report/paired.py): each method against the best, the paired
  per-cycle difference with its autocorrelation-aware interval;
- ``diagnostics.{md,tex,csv}`` (bench/report/diagnostics.py): O − B, O − A, Desroziers and
  χ²/N — when the metrics record the observation-space statistics;
- ``forecast_impact.{md,tex,csv}`` (bench/report/impact.py): free forecasts from analysis,
  background and truth, analysis age and lead time gained — when the run made free forecasts;
- ``ensemble.{md,tex,csv}`` (bench/report/ensemble.py): spread/skill, CRPS and rank-histogram
  outliers of ensemble methods — when a cell is an ensemble.

A metrics.nc written before a table's variables existed gets every table it can. Tables are
pure functions of the metrics Dataset (``metrics.nc``, DESIGN.md §6; its schema:
bench/scorer.py): nothing here reads the clock, the machine or the environment (the bootstrap is
seeded), so regenerating the tables from the same file gives byte-identical files and never
re-runs the cycles.

The parts: which rows, channels and cycles (``selection``), how numbers and units are shown
(``formatting``), how a table becomes Markdown, LaTeX or CSV text (``render``), how per-cycle
RMSE is pooled (``pooling``) and how sure a mean is (``statistics``).
``HEADLINE`` and ``format_skill_for_terminal`` are re-exported here for the command line.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from bench import store
from bench.report import diagnostics, ensemble, impact, paired, paper, render
from bench.report.formatting import channel_units
from bench.report.selection import HEADLINE, headline_channels
from bench.report.skill import (
    format_skill_for_terminal,
    skill_latex,
    skill_notes,
    skill_numbers,
    skill_table,
    units_comment,
)
from bench.report.timing import timing_latex, timing_notes, timing_numbers, timing_table

__all__ = ["HEADLINE", "format_skill_for_terminal", "write_tables"]


def _units(ds: xr.Dataset, channels) -> str:
    return "units: " + "; ".join(f"{c}={channel_units(ds, c)}" for c in channels)


def _paper_files(ds: xr.Dataset, command: str, spinup: int | None) -> dict[str, str]:
    files = {}
    for phase in paper.PAPER_PHASES:
        stem = f"paper_rmse_{phase}"
        files[f"{stem}.md"] = render.markdown(
            paper.paper_markdown_table(ds, phase, spinup), f"Paper table: {phase} RMSE",
            command, paper.paper_notes(ds, phase, spinup))
        files[f"{stem}.tex"] = f"% {command}\n" + paper.paper_latex(ds, phase, spinup)
        files[f"{stem}.csv"] = render.csv(paper.paper_numbers(ds, phase, spinup), command,
                                          (_units(ds, paper.paper_columns(ds)[1:]),))
    display = paired.paired_table(ds, spinup)
    files["paired.md"] = render.markdown(display, "Paired differences against the best method",
                                         command, paired.paired_notes(ds, spinup))
    # the first three columns (density, method, vs best) left, every number right
    columns = "lll" + "r" * (display.shape[1] - 3)
    files["paired.tex"] = f"% {command}\n" + render.styler_latex(display, columns)
    files["paired.csv"] = render.csv(paired.paired_numbers(ds, spinup), command)
    return files


def _three_files(stem: str, title: str, display, notes: str, numbers, colspec: str,
                 command: str, units: str) -> dict[str, str]:
    """``stem``.md (title, command, notes, ``display``), .tex (booktabs of ``display``), .csv
    (``numbers`` after the command and units comments)."""
    return {
        f"{stem}.md": render.markdown(display, title, command, notes),
        f"{stem}.tex": f"% {command}\n" + render.styler_latex(display, colspec),
        f"{stem}.csv": render.csv(numbers, command, (units,)),
    }


def _diagnostics_files(ds: xr.Dataset, command: str, spinup: int | None) -> dict[str, str]:
    if not diagnostics.has_diagnostics(ds):
        return {}
    return _three_files(
        "diagnostics", "Observation-space diagnostics", diagnostics.diagnostics_table(ds, spinup),
        diagnostics.diagnostics_notes(ds, spinup), diagnostics.diagnostics_numbers(ds, spinup),
        "lll" + "r" * 9, command, _units(ds, diagnostics.observed_channels(ds)[0]))


def _impact_files(ds: xr.Dataset, command: str, spinup: int | None) -> dict[str, str]:
    if not impact.has_forecasts(ds):
        return {}
    return _three_files(
        "forecast_impact", "Forecast impact: analysis age and lead time gained",
        impact.impact_table(ds, spinup), impact.impact_notes(ds, spinup),
        impact.impact_numbers(ds, spinup), "llll" + "r" * 5, command,
        _units(ds, headline_channels(ds, impact.IMPACT_CHANNELS)))


def _ensemble_files(ds: xr.Dataset, command: str, spinup: int | None) -> dict[str, str]:
    if not ensemble.has_ensemble_scores(ds):
        return {}
    return _three_files(
        "ensemble", "Ensemble reliability: spread/skill, CRPS and rank-histogram outliers",
        ensemble.ensemble_table(ds, spinup), ensemble.ensemble_notes(ds, spinup),
        ensemble.ensemble_numbers(ds, spinup), "llll" + "r" * 7, command,
        _units(ds, headline_channels(ds)))


def write_tables(
    ds: xr.Dataset, out_dir: str | Path, command: str, spinup_cycles: int | None = None,
    channels: tuple[str, ...] | None = None,
) -> list[Path]:
    """Write every table of the module docstring that ``ds`` has the variables for under
    ``out_dir/tables/``.

    Markdown: title, the command, notes (spin-up, seeds, units, conventions, diverged runs),
    the table. LaTeX: booktabs (a bare ``tabular`` to paste, or for the paper tables a
    ``table*`` float with its caption), preceded by a ``%`` comment with the command. CSV:
    ``#`` comment lines (command, units) then the numeric table (``pd.read_csv(path,
    comment="#")`` reads it). ``channels`` chooses the skill table's channels.
    """
    directory = Path(out_dir) / "tables"
    files = {
        "skill.md": render.markdown(skill_table(ds, spinup_cycles, channels),
                                    "Skill: RMSE after spin-up (mean ± 1σ)", command,
                                    skill_notes(ds, spinup_cycles, channels)),
        "skill.tex": f"% {command}\n" + skill_latex(ds, spinup_cycles, channels),
        "skill.csv": render.csv(skill_numbers(ds, spinup_cycles, channels), command,
                                (units_comment(ds, channels),)),
        "timing.md": render.markdown(timing_table(ds), "Time and memory per analysis", command,
                                     timing_notes(ds)),
        "timing.tex": f"% {command}\n" + timing_latex(ds),
        "timing.csv": render.csv(timing_numbers(ds), command),
    }
    files |= _paper_files(ds, command, spinup_cycles)
    files |= _diagnostics_files(ds, command, spinup_cycles)
    files |= _impact_files(ds, command, spinup_cycles)
    files |= _ensemble_files(ds, command, spinup_cycles)
    return [store.write_text(directory / name, text) for name, text in files.items()]
