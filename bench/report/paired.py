"""Paired comparisons: is a method's RMSE really higher than the best method's?

Every method of a run sees the same truth, first background and observations at every cycle
(README, "Running benchmarks"), so two methods are compared cycle by cycle: the per-cycle
difference d_k = RMSE_k(method) − RMSE_k(best), over the cycles after spin-up of every seed, has
mean = the difference of the two table entries (bench/report/pooling.py: time-mean of per-cycle
RMSE) and 95 % intervals (bench/report/statistics.py): between seeds (the paired t test over
the seeds' mean differences, no model of the dependence between cycles; it decides from
``SEEDS_FOR_DEFAULT`` = 3 seeds on), AR(1)-corrected t (pooled cycles, allowing for their
autocorrelation; it decides for 1–2 seeds and is always shown) and a moving-block bootstrap as
a check. Pairing removes the weather both methods share, so the intervals are far narrower
than the two methods' own spreads suggest.

The paired table (``paired_numbers``, ``tables/paired.{md,csv,tex}``) does this for the
channel-mean normalised analysis RMSE: per density the best method (lowest mean) and every
other method against it. ``versus_best`` serves the paper tables too (their † marks);
``interval_note`` and ``drift_note`` are the notes both tables carry. A cell that diverged for
any seed has no paired numbers (its cycles after the divergence are missing);
``pair_interval`` compares any two methods.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.formatting import format_density, format_number
from bench.report.pooling import (
    CHANNEL_MEAN,
    DEFAULT_CONVENTION,
    channel_mean_note,
    convention_note,
    cycle_series,
    pool,
)
from bench.report.render import provenance
from bench.report.selection import diverged_seeds, spinup_of
from bench.report.statistics import (
    DEFAULT_INTERVAL,
    SEEDS_FOR_DEFAULT,
    Interval,
    default_kind,
    mean_interval,
)
from bench.scorer import select_cell

#: φ at or above which a paired difference drifts rather than fluctuating about its mean (fewer
#: than n/19 independent cycles): the notes then warn that the intervals are wide by design.
DRIFT_PHI = 0.9
#: How the table names the intervals.
INTERVAL_NAMES = {"ar1": "AR(1)-corrected t", "seeds": "between seeds",
                  "bootstrap": "moving-block bootstrap", "iid": "iid t"}


def method_series(ds: xr.Dataset, series: xr.DataArray, density: float) -> dict:
    """{method: (seeds, cycles) array, or None where the cell diverged} at one density."""
    out = {}
    for method in (str(m) for m in ds["method"].values):
        values = select_cell(series, method, density).values
        ok = not diverged_seeds(ds, method, density) and np.isfinite(values).all()
        out[method] = values if ok else None
    return out


def versus_best(by_method: dict, kind: str = DEFAULT_INTERVAL) -> tuple[str | None, dict]:
    """(the best method: lowest pooled RMSE by the default convention, {method: ``kind`` Interval
    of the per-cycle difference method − best}) over the methods with a series; the default
    "auto" is the between-seed interval from 3 seeds on, else the AR(1)-corrected t."""
    ok = {m: v for m, v in by_method.items() if v is not None}
    if not ok:
        return None, {}
    best = min(ok, key=lambda m: pool(ok[m], DEFAULT_CONVENTION))
    return best, {m: mean_interval(v - ok[best], kind) for m, v in ok.items()}


def not_worse(interval: Interval) -> bool:
    """Not significantly worse than the best: the paired interval includes 0."""
    return interval.low <= 0.0


def decisive_kind(ds: xr.Dataset) -> str:
    """The interval that decides significance (and †, and the paper tables' ±) for ``ds``."""
    return default_kind(ds.sizes["seed"])


def interval_note(seeds: int, decides: str, ar1_where: str) -> str:
    """Which 95 % interval decides ``decides`` for a run of ``seeds`` seeds and why; where the
    AR(1) interval is (``ar1_where``, "shown next to it") when it does not decide."""
    ar1 = ("AR(1)-corrected t interval (the cycles of all seeds pooled, n_eff = n (1 − φ)/(1 + φ), "
           "φ the lag-1 autocorrelation of the per-cycle values, each seed's series an "
           "independent block)")
    between = (f"each seed's run, with its own observation draws and stochastic-method seed, is "
               f"one replicate: mean ± t_{{0.975, S−1}} · s_S/√S over the S = {seeds} seed means, "
               f"a paired t test across seeds that assumes nothing about the dependence between "
               f"cycles")
    if seeds >= SEEDS_FOR_DEFAULT:
        return (f"{decides}: the between-seed 95 % interval ({between}). The seeds share the "
                f"truth trajectory and the first background (the protocol's identical cycles), "
                f"so it covers the observation-sampling (and stochastic-method) variability of "
                f"the comparison on this weather, not its variability over different weather; "
                f"longer runs or more test windows would address that. The {ar1} is "
                f"{ar1_where}.")
    fallback = (f"with 2 seeds the between-seed interval ({between}) has t_{{0.975, 1}} = 12.7 "
                f"and shows almost nothing" if seeds == 2
                else "one seed gives no between-seed interval")
    return (f"{decides}: the 95 % {ar1}; {fallback}. From {SEEDS_FOR_DEFAULT} seeds on "
            f"the between-seed interval decides.")


def drift_note(phis, what: str, seeds: int = 1) -> str:
    """A warning when some comparisons drift (φ ≥ ``DRIFT_PHI``), else ""."""
    phis = [p for p in phis if np.isfinite(p)]
    drifting = sum(p >= DRIFT_PHI for p in phis)
    if not drifting:
        return ""
    head = (f"In {drifting} of {len(phis)} {what} the per-cycle difference has φ ≥ {DRIFT_PHI}: "
            f"it drifts over the run (e.g. an error still growing after the spin-up) rather than "
            f"fluctuating about a mean, so the run holds very few independent cycles and the "
            f"AR(1)-corrected intervals are wide by design")
    if default_kind(seeds) == "seeds":
        return (f"{head}; they do not decide here: the between-seed interval, which needs no "
                f"model of the dependence between cycles, does.")
    return (f"{head} — there “not significant” means “not shown by this run”, not “as good”. A "
            f"longer run (or spin-up), or {SEEDS_FOR_DEFAULT} or more seeds (then the between-seed "
            f"interval decides), narrows them.")


def pair_interval(ds: xr.Dataset, method: str, other: str, density: float,
                  column: str = CHANNEL_MEAN, phase: str = "analysis",
                  spinup_cycles: int | None = None, kind: str = DEFAULT_INTERVAL) -> Interval:
    """The interval of the mean per-cycle difference ``method`` − ``other`` at one density."""
    series = cycle_series(ds, column, phase, spinup_of(ds, spinup_cycles))
    by_method = method_series(ds, series, density)
    if by_method[method] is None or by_method[other] is None:
        raise ValueError(f"{method} or {other} diverged at density {density:g}: no paired "
                         f"comparison")
    return mean_interval(by_method[method] - by_method[other], kind)


def paired_numbers(ds: xr.Dataset, spinup_cycles: int | None = None,
                   phase: str = "analysis") -> pd.DataFrame:
    """The paired table as numbers: one row per (density, method other than the best).

    Columns: density, method, best, status, mean_difference (method − best, channel-mean
    normalised RMSE), interval (the kind that decides: "seeds" from 3 seeds on, else "ar1"),
    ci_low, ci_high (that 95 % interval), ar1_low, ar1_high, phi (lag-1 autocorrelation of the
    difference, bias-corrected), n_eff, n (cycles × seeds) of the AR(1)-corrected t interval,
    seeds, seeds_low, seeds_high (the between-seed interval; NaN for one seed), bootstrap_low,
    bootstrap_high, block_length (the moving-block bootstrap), significant (the deciding
    interval excludes 0), worse_fraction (the fraction of cycles in which the method's RMSE is
    above the best's: a descriptive check that assumes nothing about autocorrelation). A
    diverged method has status "diverged" and NaN.
    """
    series = cycle_series(ds, CHANNEL_MEAN, phase, spinup_of(ds, spinup_cycles))
    seeds = ds.sizes["seed"]
    rows = []
    for density in (float(d) for d in ds["density"].values):
        by_method = method_series(ds, series, density)
        best, intervals = versus_best(by_method)
        for method, values in by_method.items():
            if method == best:
                continue
            row = {"density": density, "method": method, "best": best or "",
                   "status": "ok" if values is not None else "diverged"}
            if values is None or best is None:
                rows.append(row)
                continue
            d = values - by_method[best]
            chosen, ar1, boot = intervals[method], mean_interval(d, "ar1"), mean_interval(
                d, "bootstrap")
            between = mean_interval(d, "seeds") if seeds > 1 else None
            row.update(mean_difference=chosen.mean, interval=chosen.kind, ci_low=chosen.low,
                       ci_high=chosen.high, ar1_low=ar1.low, ar1_high=ar1.high, phi=ar1.phi,
                       n_eff=ar1.n_eff, n=ar1.n, seeds=seeds,
                       seeds_low=between.low if between else np.nan,
                       seeds_high=between.high if between else np.nan,
                       bootstrap_low=boot.low, bootstrap_high=boot.high,
                       block_length=boot.block, significant=not not_worse(chosen),
                       worse_fraction=float((values > by_method[best]).mean()))
            rows.append(row)
    columns = ["density", "method", "best", "status", "mean_difference", "interval", "ci_low",
               "ci_high", "ar1_low", "ar1_high", "phi", "n_eff", "n", "seeds", "seeds_low",
               "seeds_high", "bootstrap_low", "bootstrap_high", "block_length", "significant",
               "worse_fraction"]
    return pd.DataFrame(rows, columns=columns)


def _interval_text(low: float, high: float) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def paired_table(ds: xr.Dataset, spinup_cycles: int | None = None) -> pd.DataFrame:
    """The paired table for reading (Markdown and LaTeX): the between-seed interval (for ≥ 2
    seeds), the AR(1) one and the bootstrap's; "significant (…)" names the deciding one."""
    numbers = paired_numbers(ds, spinup_cycles)
    between = "95 % interval (between seeds)"
    ar1 = f"95 % interval ({INTERVAL_NAMES['ar1']})"
    significant = f"significant ({INTERVAL_NAMES[decisive_kind(ds)]})"
    cells = []
    for r in numbers.itertuples():
        row = {"density": format_density(r.density), "method": r.method, "vs best": r.best}
        if r.status != "ok":
            row.update({"mean difference": "diverged"})
        else:
            row.update({
                "mean difference": format_number(r.mean_difference),
                between: _interval_text(r.seeds_low, r.seeds_high),
                ar1: _interval_text(r.ar1_low, r.ar1_high),
                "φ": f"{r.phi:.2f}", "n_eff": f"{r.n_eff:.1f}", "n": str(int(r.n)),
                "95 % interval (block bootstrap)": _interval_text(r.bootstrap_low,
                                                                  r.bootstrap_high),
                significant: "yes" if r.significant else "no",
                "worse in": f"{100 * r.worse_fraction:.0f} % of cycles"})
        cells.append(row)
    columns = ["density", "method", "vs best", "mean difference",
               *([between] if ds.sizes["seed"] > 1 else []), ar1, "φ", "n_eff", "n",
               "95 % interval (block bootstrap)", significant, "worse in"]
    return pd.DataFrame(cells, columns=columns).fillna("")


def paired_notes(ds: xr.Dataset, spinup_cycles: int | None = None) -> str:
    """The Markdown notes above the paired table (and the CSV's comments)."""
    spinup = spinup_of(ds, spinup_cycles)
    numbers = paired_numbers(ds, spinup_cycles)
    seeds = ds.sizes["seed"]
    return "\n\n".join(line for line in [
        f"Per density, each method against the best (lowest mean channel-mean normalised "
        f"analysis RMSE): the mean over cycles ≥ {spinup} and seeds "
        f"{', '.join(str(int(s)) for s in ds['seed'].values)} of the per-cycle difference "
        f"method − best (positive: worse than the best), its 95 % intervals"
        f"{' between seeds,' if seeds > 1 else ''} AR(1)-corrected t and, as a check, the "
        f"moving-block bootstrap's (block length from φ, Politis–White); φ and n_eff are the "
        f"AR(1) interval's. significant: the deciding interval excludes 0. worse in: the share "
        f"of cycles in which the method's RMSE is above the best's (descriptive).",
        interval_note(seeds, "Which interval decides “significant”",
                      "shown next to it, for comparison"),
        drift_note(numbers["phi"], "comparisons", seeds),
        channel_mean_note(ds),
        convention_note("the paper tables' CSVs carry it"),
        "A method that diverged for any seed at a density has no paired numbers there.",
        provenance(ds),
    ] if line)
