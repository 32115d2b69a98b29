"""Results -> figures (seaborn on matplotlib): RMSE over cycles, RMSE vs density, time per analysis
(here), and O − B / O − A over cycles, their histograms and forecast RMSE vs lead
(bench/report/diagnostic_plots.py).

Like the tables, figures are functions of the metrics Dataset alone (DESIGN.md §6). Each plotting
function draws on a fresh ``matplotlib.figure.Figure`` (not pyplot, so no global figure list
grows and no GUI backend is needed) and returns its ``Axes``; ``write_figures`` saves them
through ``bench.store``. Values are shown in the same units as the tables (``DISPLAY_UNITS``:
specific humidity in g kg⁻¹).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench import store
from bench.report.diagnostic_plots import (
    forecast_rmse_vs_lead,
    has_histograms,
    innovation_histogram,
    innovations_over_cycles,
)
from bench.report.diagnostics import has_diagnostics, observed_channels
from bench.report.ensemble import has_rank_histograms, rank_histogram_figure
from bench.report.figure_style import (
    LOG_SPREAD,
    cycle_hours,
    log_if_spread,
    method_palette,
    new_axes,
    style,
)
from bench.report.formatting import channel_label, display_scale, format_density
from bench.report.impact import IMPACT_CHANNELS, has_forecasts
from bench.report.selection import diverged_seeds, headline_channels, spinup_of
from bench.report.skill import skill_numbers
from bench.scorer import PHASES, select_cell, timing_frame

#: Line style of each phase (bench.scorer.PHASES): the background dashed, the analysis solid.
PHASE_LINESTYLES = dict(zip(PHASES, ((0, (4, 2)), "-"), strict=True))


# ----------------------------------------------------------------------------- skill

def rmse_over_cycles(ds: xr.Dataset, channel: str, density: float,
                     spinup_cycles: int | None = None) -> Axes:
    """RMSE against cycle for one channel and density: one colour per method, background
    dashed and analysis solid; the line is the mean over seeds and the band spans the seeds
    (min–max). The spin-up is shaded. Where a seed diverged, the method's lines end before that
    cycle (a mean over the surviving seeds would change the sample mid-plot) and an ✕ at the
    top of the axes marks the cycle."""
    rmse = ds["rmse"].sel(channel=channel) * display_scale(ds, channel)
    palette = method_palette(ds)
    cycles = ds["cycle"].values
    with style():
        ax = new_axes()
        spinup = spinup_of(ds, spinup_cycles)
        ax.axvspan(cycles.min() - 0.5, spinup - 0.5, color="0.92", zorder=0)
        shown = []
        for method, colour in palette.items():
            diverged = diverged_seeds(ds, method, density)
            first_bad = min((c for _, c, _ in diverged), default=np.inf)
            for phase, linestyle in PHASE_LINESTYLES.items():
                per_seed = select_cell(rmse, method, density).sel(phase=phase)
                per_seed = per_seed.where(per_seed["cycle"] < first_bad).transpose("cycle", ...)
                shown.append(per_seed.values.ravel())
                ax.plot(cycles, per_seed.mean("seed", skipna=False), color=colour,
                        linestyle=linestyle)
                ax.fill_between(cycles, per_seed.min("seed", skipna=False),
                                per_seed.max("seed", skipna=False), color=colour, alpha=0.15,
                                linewidth=0)
            for _seed, cycle, _reason in diverged:
                ax.plot([cycle], [0.96], transform=ax.get_xaxis_transform(), marker="X",
                        markersize=10, color=colour, linestyle="none", clip_on=False)
        log_if_spread(ax, np.concatenate(shown))
        hours = cycle_hours(ds)
        ax.set_xlabel("cycle" + (f" ({hours:g} h each)" if hours else ""))
        ax.set_ylabel(f"RMSE of {channel_label(ds, channel)}")
        ax.set_title(f"{channel} RMSE at observation density {density:g}, "
                     f"mean and range over {ds.sizes['seed']} seed(s)")
        ax.legend(handles=_cycle_legend(ds, palette, density, spinup), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def _cycle_legend(ds: xr.Dataset, palette: dict, density: float, spinup: int) -> list:
    handles = [Line2D([], [], color=c, label=m) for m, c in palette.items()]
    handles += [Line2D([], [], color="0.3", linestyle=dashes, label=phase)
                for phase, dashes in PHASE_LINESTYLES.items()]
    handles.append(Patch(color="0.92", label=f"spin-up ({spinup} cycles)"))
    for method, colour in palette.items():
        for seed, cycle, _ in diverged_seeds(ds, method, density):
            handles.append(Line2D([], [], color=colour, marker="X", markersize=8,
                                  linestyle="none",
                                  label=f"{method} diverged (seed {seed}, cycle {cycle})"))
    return handles


def rmse_vs_density(ds: xr.Dataset, channel: str, spinup_cycles: int | None = None) -> Axes:
    """Analysis RMSE after spin-up against observation density (log x), one line per method,
    error bars ±1σ over cycles and seeds (the skill table's numbers). A density at which a
    method diverged has no point; an ✕ at the top of the axes marks it."""
    numbers = skill_numbers(ds, spinup_cycles, channels=(channel,))
    scale = display_scale(ds, channel)
    palette = method_palette(ds)
    densities = [float(d) for d in ds["density"].values]
    # Nudge methods apart along x (by a few per cent, log scale) so error bars do not overlap.
    nudge = dict(zip(palette, 1.03 ** (np.arange(len(palette)) - (len(palette) - 1) / 2),
                     strict=True))
    with style():
        ax = new_axes(7.5, 4.5)
        for method, rows in numbers.groupby("method", sort=False):
            ok = rows[rows["status"] == "ok"]
            ax.errorbar(ok["density"] * nudge[method], scale * ok[f"{channel}_analysis_mean"],
                        yerr=scale * ok[f"{channel}_analysis_std"], color=palette[method],
                        marker="o", capsize=4, label=method)
        log_if_spread(ax, scale * numbers[f"{channel}_analysis_mean"].to_numpy())
        ax.set_ymargin(0.15)  # headroom for the divergence markers at the top
        for method, rows in numbers[numbers["status"] != "ok"].groupby("method", sort=False):
            ax.plot(rows["density"] * nudge[method], [0.96] * len(rows), marker="X",
                    linestyle="none", markersize=10, color=palette[method],
                    transform=ax.get_xaxis_transform(), label=f"{method} diverged")
        ax.set_xscale("log")
        ax.set_xticks(densities, [format_density(d) for d in densities])
        ax.minorticks_off()
        ax.set_xlabel("observation density (fraction of grid points)")
        ax.set_ylabel(f"analysis RMSE of {channel_label(ds, channel)}")
        ax.set_title(f"{channel}: analysis RMSE after {spinup_of(ds, spinup_cycles)} spin-up "
                     f"cycles (mean ± 1σ)")
        # matplotlib lists plain markers before error bars; keep the methods first.
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].endswith(" diverged"))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


# ----------------------------------------------------------------------------- timing

def time_per_analysis(ds: xr.Dataset) -> Axes:
    """Wall time of one analysis: a point per (method, density) at the median over all cycles
    and seeds, its whisker spanning the 10th–90th percentile (the table's p90 is its top); log y
    when the times differ by more than ``LOG_SPREAD``; the device in the title."""
    seconds = timing_frame(ds).rename(columns={"analysis_seconds": "seconds"})
    # Density as a category: seaborn would otherwise colour a numeric hue on a continuous scale.
    seconds["density"] = [format_density(d) for d in seconds["density"]]
    order = [format_density(float(d)) for d in ds["density"].values]
    with style():
        ax = new_axes(6.5, 4.5)
        # Points, not boxes: seaborn 0.13's boxplot passes matplotlib 3.11 a deprecated argument,
        # and bars have no meaningful base on the log scale that timings usually need.
        sns.pointplot(seconds, x="method", y="seconds", hue="density", hue_order=order,
                      order=[str(m) for m in ds["method"].values], ax=ax, palette="crest",
                      estimator="median", errorbar=("pi", 80), capsize=0.1,
                      dodge=0.3 if len(order) > 1 else False,  # seaborn divides by levels − 1
                      linestyle="none", marker="o",
                      log_scale=_spread(seconds["seconds"].to_numpy()) > LOG_SPREAD)
        ax.set_xlabel("method")
        ax.set_ylabel("time per analysis [s]")
        ax.set_title(f"Time per analysis on {ds.attrs.get('device', 'an unknown device')}\n"
                     f"(median; whiskers: 10th–90th percentile over cycles and seeds)")
        ax.legend(title="density", frameon=False)
    return ax


def _spread(values: np.ndarray) -> float:
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.max() / positive.min()) if positive.size else 1.0


# ----------------------------------------------------------------------------- files

def figure_names(ds: xr.Dataset) -> dict[str, tuple]:
    """File name -> (plotting function, arguments) for every figure ``write_figures`` makes:
    ``rmse_cycles_<channel>_density<d>.png`` per headline channel and density,
    ``rmse_density_<channel>.png`` per headline channel, ``time_per_analysis.png``, and when
    the metrics have them (bench/report/diagnostic_plots.py) ``innovations_<channel>_density<d>
    .png`` and ``innovation_histogram_<channel>_density<d>.png`` per observed headline channel
    and ``forecast_lead_<channel>_density<d>.png`` for the forecast-impact channels, and for
    ensembles ``rank_histogram_<channel>_density<d>.png`` (bench/report/ensemble.py)."""
    figures: dict[str, tuple] = {}
    densities = [float(d) for d in ds["density"].values]
    for channel in headline_channels(ds):
        for density in densities:
            figures[_per_density(figures, "rmse_cycles", channel, density)] = (
                rmse_over_cycles, (channel, density))
        figures[f"rmse_density_{channel}.png"] = (rmse_vs_density, (channel,))
    figures["time_per_analysis.png"] = (time_per_analysis, ())
    if has_diagnostics(ds):
        for channel in observed_channels(ds)[0]:
            for density in densities:
                figures[_per_density(figures, "innovations", channel, density)] = (
                    innovations_over_cycles, (channel, density))
    if has_diagnostics(ds) and has_histograms(ds):
        for channel in observed_channels(ds)[0]:
            for density in densities:
                figures[_per_density(figures, "innovation_histogram", channel, density)] = (
                    innovation_histogram, (channel, density))
    if has_rank_histograms(ds):
        for channel in headline_channels(ds):
            for density in densities:
                figures[_per_density(figures, "rank_histogram", channel, density)] = (
                    rank_histogram_figure, (channel, density))
    if has_forecasts(ds):
        for channel in headline_channels(ds, IMPACT_CHANNELS):
            for density in densities:
                figures[_per_density(figures, "forecast_lead", channel, density)] = (
                    forecast_rmse_vs_lead, (channel, density))
    return figures


def _per_density(figures: dict, stem: str, channel: str, density: float) -> str:
    name = f"{stem}_{channel}_density{density:g}.png"
    if name in figures:
        raise ValueError(f"two densities give the same file name {name}; they differ beyond 6 "
                         f"significant digits")
    return name


def write_figures(ds: xr.Dataset, out_dir: str | Path, dpi: int = 150) -> list[Path]:
    """Draw every figure of ``figure_names`` and write it as PNG into ``out_dir/figures/``."""
    paths = []
    for name, (plot, args) in figure_names(ds).items():
        ax = plot(ds, *args)
        paths.append(store.write_figure(ax.figure, Path(out_dir) / "figures" / name, dpi=dpi))
        ax.figure.clear()  # release the artists now rather than at garbage collection
    return paths
