"""``python -m bench tune``: each method's settings chosen per density on the validation period,
from a small declared grid, with an equal budget per method; ``run --tuned`` then applies them,
frozen, to the test period.

The protocol, the same for every method:

1. Candidates (bench/experiments/tuning_grid.py): the default setting, then every combination
   of the method's grid (``Assimilator.tuning_grid`` or ``--grid FILE``), at most ``--budget``
   of them.
2. Each candidate is one run of the grid runner (bench/runner.py) over the densities and seeds,
   cycling the world's validation period (``cycle.period = "valid"``: the test period is never
   opened), in ``OUT/candidates/<method>/<k>/``: an ordinary run directory, resumable.
3. The score of (candidate, density): the channel-mean normalised analysis RMSE — per cycle the
   mean over every channel c of RMSE_c / σ_c (σ_c the world's normalisation std;
   bench/report/pooling.py, as the paper tables' "channel mean"), then the mean over the cycles
   after spin-up and over the seeds. Dimensionless, lower is better; a candidate that diverged
   or failed at any seed scores +inf.
4. Per (method, density) the lowest score wins. Scores within ``TIE_TOLERANCE`` (relative) of
   the lowest count as a tie, which goes to the candidate that changes the fewest grid fields
   from the default (the default itself first), then to the earliest: a difference that small
   is below what a few validation days resolve, and choosing it would fit the validation
   weather (on the built-in world 3DVar's 100 iterations beat 25 by 0.01 % at 6× the cost).
   If every candidate diverged the default is kept, and the tables say so.
5. ``OUT/tuned.toml`` holds the chosen settings per (method, density), the protocol they were
   chosen under (``bench.tuned.protocol``, which ``run --tuned`` checks against the run) and the
   command; ``OUT/tuning.{md,csv,tex}`` every candidate's score and median analysis time.

A method with nothing to tune (no grid) is not cycled and not written to tuned.toml: in a tuned
run its rows read "default".
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bench import runner, store
from bench.config import RunConfig
from bench.experiments.tuning_grid import MethodGrid
from bench.report.pooling import CHANNEL_MEAN, cycle_series
from bench.scorer import select_cell
from bench.setup import Setup, setup
from bench.tuned import density_key, protocol

#: The period the candidates cycle (CycleSettings.period).
TUNING_PERIOD = "valid"
#: What the score is, for the files' notes.
SCORE = ("channel-mean normalised analysis RMSE (mean over channels of RMSE / the channel's "
         "normalisation std, dimensionless), mean over the cycles after spin-up and the seeds; "
         "lower is better; inf: diverged or failed at some seed")
#: Relative score difference below which two candidates tie (choose: the earlier one wins).
TIE_TOLERANCE = 1e-3
TABLE_COLUMNS = ["method", "density", "candidate", "changes", "settings", "score", "status",
                 "median_analysis_seconds", "chosen"]


def tuning_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` cycling the validation period; its ``--set`` values live in the candidates."""
    return dataclasses.replace(cfg, cycle=dataclasses.replace(cfg.cycle, period=TUNING_PERIOD),
                               method_settings={}, tuned={})


def candidate_config(cfg: RunConfig, method: str, settings: dict) -> RunConfig:
    """The run of one candidate: one method with ``settings``, every density and seed."""
    return dataclasses.replace(cfg, methods=(method,),
                               method_settings={method: settings} if settings else {})


def candidate_dir(out: str | Path, method: str, k: int) -> Path:
    return Path(out) / "candidates" / method / str(k)


def score(ds: xr.Dataset, method: str, density: float) -> tuple[float, str, float]:
    """(score, status, median analysis seconds) of one method and density of a run's
    metrics: ``SCORE``; status "ok", or the first seed's other status (diverged, error)."""
    statuses = [str(s) for s in np.ravel(select_cell(ds["status"], method, density).values)]
    seconds = float(np.nanmedian(select_cell(ds["analysis_seconds"], method, density).values))
    bad = [s for s in statuses if s != "ok"]
    if bad:
        return math.inf, bad[0], seconds
    spinup = int(ds.attrs["spinup_cycles"])
    series = select_cell(cycle_series(ds, CHANNEL_MEAN, "analysis", spinup), method, density)
    return float(np.mean(series.values)), "ok", seconds


def choose(table: pd.DataFrame, tolerance: float = TIE_TOLERANCE) -> pd.DataFrame:
    """``table`` with ``chosen`` set: per (method, density), of the candidates whose score is
    within ``tolerance`` (relative) of the lowest finite one, the one with the fewest
    ``changes`` (grid fields off their default; 0 if the column is missing), then the earliest;
    candidate 0 (the default) when no score is finite."""
    table = table.copy()
    table["chosen"] = False
    for _, rows in table.groupby(["method", "density"], sort=False):
        scores = rows["score"].to_numpy(dtype=float)
        finite = np.isfinite(scores)
        if finite.any():
            tied = rows[finite & (scores <= scores[finite].min() * (1 + tolerance))]
        else:
            tied = rows[rows["candidate"] == 0]
        order = ["changes", "candidate"] if "changes" in tied else ["candidate"]
        table.loc[tied.sort_values(order, kind="stable").index[0], "chosen"] = True
    return table


def run_candidates(cfg: RunConfig, grids: list[MethodGrid], out: str | Path,
                   resume: bool = False, progress: bool = True, command: str = "",
                   prepared: Setup | None = None) -> pd.DataFrame:
    """Cycle every candidate of every method that has something to tune on the validation
    period; returns one row per (method, density, candidate) with ``TABLE_COLUMNS``.

    ``cfg`` is the tuning's config (``tuning_config``: period "valid"), resolved and
    preflighted by the caller (the CLI); ``prepared`` replaces ``setup(cfg)`` (tests)."""
    if cfg.cycle.period != TUNING_PERIOD:
        raise ValueError(f"tuning cycles the {TUNING_PERIOD} period only, got cycle.period = "
                         f"{cfg.cycle.period!r}: settings chosen on the test period would be "
                         "scored on the data they were chosen with")
    tuned = [g for g in grids if g.tunes]
    s = prepared if prepared is not None or not tuned else setup(cfg, progress)
    rows = []
    for g in tuned:
        for k, settings in enumerate(g.candidates):
            if progress:
                print(f"tune {g.method}: candidate {k + 1}/{len(g.candidates)} "
                      f"({_text(settings)})")
            sub = candidate_config(cfg, g.method, settings)
            ds = runner.run(sub, candidate_dir(out, g.method, k), resume=resume,
                            progress=progress, command=command, prepared=s)
            changes = sum(settings[f] != g.candidates[0][f] for f in g.grid)
            for density in cfg.densities:
                value, status, seconds = score(ds, g.method, density)
                rows.append({"method": g.method, "density": density, "candidate": k,
                             "changes": changes, "settings": _text(settings), "score": value,
                             "status": status, "median_analysis_seconds": seconds})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS[:-1])
    order = {g.method: i for i, g in enumerate(tuned)}  # methods as given, then density, k
    table = table.sort_values(["method", "density", "candidate"], kind="stable",
                              key=lambda c: c.map(order) if c.name == "method" else c)
    return choose(table.reset_index(drop=True))


def _text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


# ----------------------------------------------------------------------------- the files
def chosen_settings(table: pd.DataFrame, grids: list[MethodGrid]) -> dict:
    """{method: {density key: settings}} of the chosen candidates (``RunConfig.tuned``)."""
    by_name = {g.method: g for g in grids}
    out: dict = {}
    for row in table[table["chosen"]].itertuples():
        settings = by_name[row.method].candidates[int(row.candidate)]
        out.setdefault(row.method, {})[density_key(row.density)] = dict(settings)
    return out


def tuned_document(cfg: RunConfig, grids: list[MethodGrid], table: pd.DataFrame,
                   command: str, budget: int) -> dict:
    """What tuned.toml holds (``read_tuned`` in bench/cli/tune.py reads it back)."""
    return {
        "command": command, "score": SCORE,
        "period": f"{TUNING_PERIOD} {getattr(cfg.periods, TUNING_PERIOD) or '(the card)'}",
        "days": cfg.cycle.days, "spinup_cycles": cfg.cycle.spinup_cycles,
        "seeds": list(cfg.seeds), "budget": budget, "tie_tolerance": TIE_TOLERANCE,
        "candidates": {g.method: len(g.candidates) for g in grids},
        "protocol": protocol(cfg),
        "methods": chosen_settings(table, grids),
    }


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def toml_text(doc: dict, prefix: str = "") -> str:
    """``doc`` (str keys; values bool, int, float, str, lists of them, or tables) as TOML:
    the scalars of a table before its sub-tables, every key quoted."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            lines += ["", f"[{name}]", toml_text(v, name).strip("\n")]
    return "\n".join(line for line in lines) + "\n"


def write_outputs(cfg: RunConfig, grids: list[MethodGrid], table: pd.DataFrame,
                  out: str | Path, command: str, budget: int) -> list[Path]:
    """OUT/tuned.toml and OUT/tuning.{md,csv,tex}."""
    out = Path(out)
    doc = tuned_document(cfg, grids, table, command, budget)
    header = ("# Settings chosen per density on the validation period by `python -m bench tune`"
              f"\n# (bench/experiments/tune.py). Apply them to the test period with\n"
              f"#   python -m bench run --tuned {out / 'tuned.toml'} ...\n"
              "# [methods.NAME.\"DENSITY\"]: the chosen candidate's settings (--set values "
              "included).\n")
    paths = [store.write_text(out / "tuned.toml", header + toml_text(doc))]
    notes = tuning_notes(cfg, grids, budget)
    shown = table.assign(score=table["score"].round(6))
    paths += store.write_table(shown, out, "tuning", "Tuning on the validation period",
                               command, notes)
    return paths


def tuning_notes(cfg: RunConfig, grids: list[MethodGrid], budget: int) -> str:
    """The Markdown notes: the protocol, the grids and the budget."""
    grid_lines = []
    for g in grids:
        if not g.tunes:
            grid_lines.append(f"- {g.method}: nothing to tune (no grid); not cycled, its "
                              "rows in a tuned run read default")
            continue
        fields = "; ".join(f"{f} ∈ {{{', '.join(map(str, v))}}}" for f, v in g.grid.items())
        refit = f" (refits for {', '.join(g.refits)})" if g.refits else ""
        grid_lines.append(f"- {g.method}: {len(g.candidates)} candidates, {g.source}: "
                          f"{fields}{refit}")
    return "\n\n".join([
        f"Each candidate cycled {cfg.cycle.days:g} days of the {TUNING_PERIOD} period "
        f"({getattr(cfg.periods, TUNING_PERIOD) or 'the card'}), seeds "
        f"{', '.join(map(str, cfg.seeds))}, spin-up {cfg.cycle.spinup_cycles} cycles. Score: "
        f"{SCORE}. chosen: the lowest score per method and density; scores within "
        f"{TIE_TOLERANCE:.1%} of it tie, and a tie goes to the fewest changes (grid fields off "
        f"their default), then the earliest candidate (candidate 0 is the default setting). "
        f"Budget: at most {budget} "
        "candidates per method, the default included.",
        "\n".join(grid_lines),
        "tuned.toml holds the chosen settings; `python -m bench run --tuned tuned.toml` "
        "applies them to the test period, and its tables mark those rows (tuned).",
    ])
