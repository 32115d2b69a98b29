"""Ensemble scores: is an ensemble method's spread an honest estimate of its error?

For each ensemble method (``members`` N > 0), density and headline channel, over the cycles
after spin-up of every seed (a diverged seed leaves its cell empty, as in the skill table):

    spread/skill  √((N + 1) / N) · √(mean_k spread_k²) / √(mean_k rmse_k²)
                  (rmse_k of the ensemble mean, spread_k the members' latitude-weighted
                  std, both per cycle in metrics.nc). 1 for a reliable ensemble: the error of
                  the mean of N members drawn with the truth from one distribution has
                  variance (1 + 1/N) σ² (Fortin et al. 2014, J. Hydrometeor. 15, 1708, eq. 3);
                  < 1 under-dispersive (over-confident), > 1 over-dispersive.
    CRPS          mean_k of the latitude-weighted fair CRPS (bench/metrics.crps_fair)
                  [channel units]; lower is better; for a deterministic forecast it would
                  equal the mean absolute error.
    outliers      the area fraction of the truth outside the ensemble's range (rank 0 or N
                  of ``rank_histogram``) against 2 / (N + 1) expected when reliable — the
                  scalar summary of the rank histogram (its U shape); figures/
                  rank_histogram_<channel>_density<d>.png draws the whole histograms.

Both phases are shown: the background ensemble (the members' 6 h forecasts, the usual
reliability check) and the analysis ensemble. Deterministic methods have no row. A metrics.nc
without ``spread``/``crps`` gets no table; one without ``rank_histogram`` (written before it)
gets "—" for the outliers and no rank-histogram figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.report.figure_style import method_palette, style
from bench.report.formatting import (
    NOT_APPLICABLE,
    channel_label,
    display_scale,
    format_density,
    format_number,
)
from bench.report.render import provenance
from bench.report.selection import (
    after_spinup,
    cells,
    diverged_seeds,
    has_ensembles,
    headline_channels,
    members_of,
    spinup_of,
)
from bench.scorer import PHASES, select_cell

RANKS = "rank_histogram"


def has_ensemble_scores(ds: xr.Dataset) -> bool:
    """Whether any cell is an ensemble with spread and CRPS recorded."""
    return has_ensembles(ds) and "crps" in ds


def has_rank_histograms(ds: xr.Dataset) -> bool:
    return has_ensemble_scores(ds) and RANKS in ds


def ensemble_methods(ds: xr.Dataset) -> list[str]:
    """The methods with members in any cell, in the Dataset's order."""
    return [m for m in dict.fromkeys(m for m, _ in cells(ds))
            if any(members_of(ds, m, float(d)) > 0 for d in ds["density"].values)]


def rank_fractions(ds: xr.Dataset, method: str, density: float, phase: str,
                   channel: str) -> np.ndarray:
    """The cell's rank histogram (N + 1,), mean over seeds (each already the mean over its
    cycles after spin-up): area fractions summing to 1; NaN when not recorded."""
    n = members_of(ds, method, density)
    if not has_rank_histograms(ds) or n < 1:
        return np.full(max(n, 0) + 1, np.nan)
    cell = select_cell(ds[RANKS], method, density).sel(phase=phase, channel=channel)
    values = cell.transpose("seed", "rank").values[:, : n + 1]
    return values.mean(axis=0)


def _phase_numbers(cell: xr.Dataset, n: int, channel: str) -> dict[str, float]:
    out = {}
    for phase in PHASES:
        one = cell.sel(phase=phase, channel=channel)
        rmse, spread, crps = (one[name].values.ravel() for name in ("rmse", "spread", "crps"))
        keep = np.isfinite(rmse) & np.isfinite(spread)
        mse, var = np.mean(rmse[keep] ** 2), np.mean(spread[keep] ** 2)
        out[f"{phase}_rmse"] = float(np.sqrt(mse))
        out[f"{phase}_spread"] = float(np.sqrt(var))
        out[f"{phase}_spread_skill"] = float(np.sqrt((n + 1) / n * var / mse))
        out[f"{phase}_crps"] = float(np.nanmean(crps))
    return out


def ensemble_numbers(ds: xr.Dataset, spinup_cycles: int | None = None,
                     channels=None) -> pd.DataFrame:
    """The table as numbers (the CSV): one row per (ensemble method, density, headline
    channel); columns method, density, channel, units, members, status, then per phase
    (background, analysis) <phase>_rmse and <phase>_spread (√ of the mean square over cycles,
    channel units), <phase>_spread_skill, <phase>_crps (channel units), <phase>_outliers (area
    fraction), and outliers_expected = 2 / (N + 1)."""
    spinup = spinup_of(ds, spinup_cycles)
    kept = after_spinup(ds[["rmse", "spread", "crps"]], spinup)
    rows = []
    for method, density in cells(ds):
        n = members_of(ds, method, density)
        if n < 2:
            continue
        diverged = bool(diverged_seeds(ds, method, density))
        cell = select_cell(kept, method, density)
        for channel in headline_channels(ds, channels):
            row = {"method": method, "density": density, "channel": channel,
                   "units": str(ds["units"].sel(channel=channel).values), "members": n,
                   "status": "diverged" if diverged else "ok"}
            if not diverged:
                row.update(_phase_numbers(cell, n, channel))
                for phase in PHASES:
                    ranks = rank_fractions(ds, method, density, phase, channel)
                    row[f"{phase}_outliers"] = float(ranks[0] + ranks[-1])
            row["outliers_expected"] = 2.0 / (n + 1)
            rows.append(row)
    per_phase = [f"{p}_{k}" for p in PHASES
                 for k in ("rmse", "spread", "spread_skill", "crps", "outliers")]
    columns = ["method", "density", "channel", "units", "members", "status", *per_phase,
               "outliers_expected"]
    return pd.DataFrame(rows, columns=columns)


def ensemble_table(ds: xr.Dataset, spinup_cycles: int | None = None,
                   channels=None) -> pd.DataFrame:
    """For reading: 3 significant digits, CRPS in the displayed units (q in g kg⁻¹), outliers
    in % with the expected value."""
    rows = []
    for r in ensemble_numbers(ds, spinup_cycles, channels).itertuples():
        row = {"method": r.method, "density": format_density(r.density),
               "channel": channel_label(ds, r.channel), "N": str(r.members)}
        if r.status != "ok":
            row["background spread/skill"] = "diverged"
            rows.append(row)
            continue
        scale = display_scale(ds, r.channel)
        for phase in PHASES:
            row[f"{phase} spread/skill"] = format_number(getattr(r, f"{phase}_spread_skill"))
            row[f"{phase} CRPS"] = format_number(scale * getattr(r, f"{phase}_crps"))
            outliers = getattr(r, f"{phase}_outliers")
            row[f"{phase} outliers %"] = (NOT_APPLICABLE if np.isnan(outliers)
                                          else format_number(100 * outliers))
        row["expected %"] = format_number(100 * r.outliers_expected)
        rows.append(row)
    columns = ["method", "density", "channel", "N",
               *(f"{p} {k}" for p in PHASES for k in ("spread/skill", "CRPS", "outliers %")),
               "expected %"]
    return pd.DataFrame(rows, columns=columns).fillna("")


def ensemble_notes(ds: xr.Dataset, spinup_cycles: int | None = None) -> str:
    spinup = spinup_of(ds, spinup_cycles)
    seeds = ", ".join(str(int(s)) for s in ds["seed"].values)
    return "\n\n".join([
        f"Ensemble methods only, cycles ≥ {spinup} of seeds {seeds}. spread/skill = "
        f"√((N+1)/N) · √(mean spread²) / √(mean RMSE²) of the ensemble mean (Fortin et al. "
        f"2014): 1 when the ensemble is reliable, < 1 over-confident. CRPS: the mean fair "
        f"CRPS (Ferro 2014) in the channel's units (q in g kg⁻¹). outliers: the area "
        f"fraction of the truth outside the members' range (rank 0 or N), against 2/(N+1) "
        f"for a reliable ensemble (\"expected\"); the rank histograms are in "
        f"figures/rank_histogram_*.png.",
        provenance(ds),
    ])


def rank_histogram_figure(ds: xr.Dataset, channel: str, density: float) -> Axes:
    """The background and analysis rank histograms of every ensemble method at one density,
    as (N + 1) × area fraction against the normalised rank (r + ½)/(N + 1), so ensembles of
    different sizes share the axes and a reliable one lies on 1."""
    palette = method_palette(ds)
    with style():
        figure = Figure(figsize=(12, 4.5), layout="constrained")
        axes = figure.subplots(1, 2, sharey=True)
        for ax, phase in zip(axes, PHASES, strict=True):
            for method in ensemble_methods(ds):
                n = members_of(ds, method, density)
                ranks = rank_fractions(ds, method, density, phase, channel)
                if n < 1 or diverged_seeds(ds, method, density) or np.isnan(ranks).all():
                    continue
                edges = np.arange(n + 2) / (n + 1)
                ax.stairs((n + 1) * ranks, edges, color=palette[method],
                          label=f"{method} (N = {n})")
            ax.axhline(1.0, color="0.3", linestyle=":", label="reliable")
            ax.set_xlabel("rank of the truth / (N + 1)")
            ax.set_title(f"{phase} ensemble")
            ax.legend(loc="upper center", frameon=False, fontsize="small")
        axes[0].set_ylabel("(N + 1) × area fraction")
        figure.suptitle(f"{channel_label(ds, channel)}: rank histograms at density "
                        f"{density:g}, cycles ≥ {spinup_of(ds)}, {ds.sizes['seed']} seed(s)")
    return axes[0]
