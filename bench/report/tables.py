"""Results -> paper tables: every table file of a run, from its metrics Dataset.

``write_tables`` writes ``tables/skill.{md,tex,csv}`` (bench/report/skill.py) and
``tables/timing.{md,tex,csv}`` (bench/report/timing.py). Tables are pure functions of the
metrics Dataset (``metrics.nc``, DESIGN.md §6; its schema: bench/scorer.py): nothing here reads
the clock, the machine or the environment, so regenerating the tables from the same file gives
byte-identical files and never re-runs the cycles.

The parts: which rows, channels and cycles (``selection``), how numbers and units are shown
(``formatting``), how a table becomes Markdown, LaTeX or CSV text (``render``).
``HEADLINE`` and ``format_skill_for_terminal`` are re-exported here for the command line.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from bench import store
from bench.report import render
from bench.report.selection import HEADLINE
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


def write_tables(
    ds: xr.Dataset, out_dir: str | Path, command: str, spinup_cycles: int | None = None,
    channels: tuple[str, ...] | None = None,
) -> list[Path]:
    """Write ``tables/skill.{md,tex,csv}`` and ``tables/timing.{md,tex,csv}`` under ``out_dir``.

    Markdown: title, the command, notes (spin-up, seeds, units, ensembles, diverged runs), the
    table. LaTeX: a booktabs tabular to paste into a paper, preceded by a ``%`` comment with the
    command. CSV: ``#`` comment lines (command, units) then the numeric table
    (``pd.read_csv(path, comment="#")`` reads it).
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
    return [store.write_text(directory / name, text) for name, text in files.items()]
