"""Figures of the observation-space diagnostics and of the free forecasts (when metrics.nc has
them; see bench/report/diagnostics.py and bench/report/impact.py for the numbers).

- ``innovations_over_cycles``: O − B rms (dashed) and O − A rms (solid) against cycle, one colour
  per method, pooled over seeds with observation-count weights (√(Σ n rms² / Σ n)).
- ``innovation_histogram``: the distribution of O − B (left panel) and of O − A (right) of one
  channel after spin-up, one colour per method, from the histograms metrics.nc keeps
  (``omb_histogram``, ``oma_histogram``; counts in bins of the normalised innovation, summed over
  seeds), drawn as densities in the channel's units: count / (N × bin width), N every
  observation, those beyond the outer edges (±1 norm_std) included, so a method's share beyond
  them (in its legend label) is the area missing from its steps. Dotted, in the method's
  colour: N(0, σ_o²) with σ_o² the mean obs_error_var it was given over the same cycles (count
  weights), the distribution O − B would have with a perfect background. Methods that diverged
  for any seed are left out (named in the legend).
- ``forecast_rmse_vs_lead``: RMSE against lead of the forecasts from the analysis (solid) and
  from the background (dashed) per method, and from the truth (black, dotted): the curves the
  forecast-impact table reads its ages and gains from.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.figure_style import cycle_hours, method_palette, new_axes, style
from bench.report.formatting import channel_label, display_scale, units_label
from bench.report.impact import mean_curves
from bench.report.selection import after_spinup, diverged_seeds, spinup_of
from bench.scorer import select_cell

DASHED = (0, (4, 2))
#: The innovation histograms (bench/innovations.HISTOGRAM_NAMES) and their panel titles.
HISTOGRAMS = {"omb_histogram": "O−B = y − H x_b", "oma_histogram": "O−A = y − H x_a"}


def _legend(ax: Axes, palette: dict, styles: dict[str, object], extra: list | None = None):
    handles = [Line2D([], [], color=c, label=m) for m, c in palette.items()]
    handles += [Line2D([], [], color="0.3", linestyle=s, label=label)
                for label, s in styles.items()]
    ax.legend(handles=handles + (extra or []), loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)


def innovations_over_cycles(ds: xr.Dataset, channel: str, density: float,
                            spinup_cycles: int | None = None) -> Axes:
    """O − B and O − A rms of one channel against cycle at one density (module docstring);
    a method's lines end before the cycle at which any of its seeds diverged."""
    scale = display_scale(ds, channel)
    cycles = ds["cycle"].values
    palette = method_palette(ds)
    with style():
        ax = new_axes()
        spinup = spinup_of(ds, spinup_cycles)
        ax.axvspan(cycles.min() - 0.5, spinup - 0.5, color="0.92", zorder=0)
        for method, colour in palette.items():
            cell = select_cell(ds[["obs_count", "omb_rms", "oma_rms"]], method, density)
            cell = cell.sel(channel=channel).transpose("seed", "cycle")
            n = np.nan_to_num(cell["obs_count"].values)
            first_bad = min((c for _, c, _ in diverged_seeds(ds, method, density)),
                            default=np.inf)
            for name, dashes in (("omb_rms", DASHED), ("oma_rms", "-")):
                squares = np.nan_to_num(cell[name].values ** 2)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rms = np.sqrt((n * squares).sum(0) / n.sum(0))
                rms[cycles >= first_bad] = np.nan
                ax.plot(cycles, scale * rms, color=colour, linestyle=dashes)
        hours = cycle_hours(ds)
        ax.set_xlabel("cycle" + (f" ({hours:g} h each)" if hours else ""))
        ax.set_ylabel(f"rms of {channel_label(ds, channel)}")
        ax.set_title(f"{channel}: observation minus background (O−B) and minus analysis (O−A) "
                     f"at density {density:g}")
        _legend(ax, palette, {"O−B rms": DASHED, "O−A rms": "-"})
    return ax


def forecast_rmse_vs_lead(ds: xr.Dataset, channel: str, density: float,
                          spinup_cycles: int | None = None) -> Axes:
    """RMSE against lead of the forecasts from each method's analyses and backgrounds, and
    from the truth (module docstring); diverged methods are left out (named in the legend)."""
    scale = display_scale(ds, channel)
    spinup = spinup_of(ds, spinup_cycles)
    palette = method_palette(ds)
    with style():
        ax = new_axes()
        truth, left_out = None, []
        for method, colour in palette.items():
            if diverged_seeds(ds, method, density):
                left_out.append(method)
                continue
            leads, curves, n = mean_curves(ds, method, density, channel, spinup)
            if not n:
                continue
            ax.plot(leads, scale * curves["analysis"], color=colour, marker="o", markersize=3)
            ax.plot(leads, scale * curves["background"], color=colour, linestyle=DASHED)
            truth = truth if truth is not None else (leads, curves["truth"])
        if truth is not None:
            ax.plot(truth[0], scale * truth[1], color="black", linestyle=":")
        ax.set_xlabel("lead [h]")
        ax.set_ylabel(f"RMSE of {channel_label(ds, channel)}")
        ax.set_title(f"{channel}: free forecasts at density {density:g} (cycles ≥ {spinup})")
        extra = [Line2D([], [], color="black", linestyle=":", label="from the truth")]
        extra += [Line2D([], [], color=palette[m], marker="X", linestyle="none",
                         label=f"{m} diverged") for m in left_out]
        _legend(ax, palette, {"from the analysis": "-", "from the background": DASHED}, extra)
    return ax


def has_histograms(ds: xr.Dataset) -> bool:
    """Whether the metrics keep the innovation histograms (and what turns them into units)."""
    return (all(name in ds for name in HISTOGRAMS) and "innovation_bin_lower" in ds.coords
            and "norm_std" in ds.coords and "obs_error_var" in ds)


def histogram_density(ds: xr.Dataset, name: str, method: str, density: float,
                      channel: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(inner bin edges in the channel's displayed units, density per displayed unit in each
    inner bin, share of the observations in the underflow and overflow bins) of histogram
    ``name`` summed over seeds; NaN densities when there is no observation (or no histogram)."""
    counts = select_cell(ds[name], method, density).sel(channel=channel)
    counts = counts.transpose("seed", "innovation_bin").values.astype(float).sum(0)
    lower = ds["innovation_bin_lower"].values
    scale = float(ds["norm_std"].sel(channel=channel)) * display_scale(ds, channel)
    edges = scale * lower[1:]  # lower: −∞ (the underflow), then every inner edge
    total = counts.sum()
    if not (np.isfinite(total) and total > 0):
        return edges, np.full(len(edges) - 1, np.nan), np.nan
    return edges, counts[1:-1] / (total * np.diff(edges)), float((counts[0] + counts[-1]) / total)


def sigma_o_given(ds: xr.Dataset, method: str, density: float, channel: str) -> float:
    """√ of the count-weighted mean obs_error_var over the cycles ≥ the run's spin-up and every
    seed, in the channel's displayed units."""
    cell = select_cell(after_spinup(ds[["obs_count", "obs_error_var"]], spinup_of(ds)), method,
                       density).sel(channel=channel)
    n = np.nan_to_num(cell["obs_count"].values.ravel())
    v = cell["obs_error_var"].values.ravel()
    keep = (n > 0) & np.isfinite(v)
    if not keep.any():
        return np.nan
    return display_scale(ds, channel) * float(np.sqrt((n[keep] * v[keep]).sum() / n[keep].sum()))


def innovation_histogram(ds: xr.Dataset, channel: str, density: float) -> Axes:
    """O − B and O − A densities of one channel at one density (module docstring); returns the
    O − B panel's Axes (``ax.figure.axes``: both panels)."""
    palette = method_palette(ds)
    label = channel_label(ds, channel)
    with style():
        figure = Figure(figsize=(12, 4.5), layout="constrained")
        axes = figure.subplots(1, 2)
        left_out = [m for m in palette if diverged_seeds(ds, m, density)]
        for ax, (name, title) in zip(axes, HISTOGRAMS.items(), strict=True):
            handles = []
            for method, colour in palette.items():
                if method in left_out:
                    continue
                edges, values, outside = histogram_density(ds, name, method, density, channel)
                if np.isnan(values).all():
                    continue
                ax.stairs(values, edges, color=colour)
                sigma = sigma_o_given(ds, method, density, channel)
                x = np.linspace(edges[0], edges[-1], 201)
                ax.plot(x, np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)),
                        color=colour, linestyle=":")
                handles.append(Line2D([], [], color=colour,
                                      label=f"{method} ({100 * outside:.2g} % beyond)"))
            handles.append(Line2D([], [], color="0.3", linestyle=":", label="N(0, σ_o² given)"))
            handles += [Line2D([], [], color=palette[m], marker="X", linestyle="none",
                               label=f"{m} diverged") for m in left_out]
            ax.legend(handles=handles, loc="upper right", frameon=False, fontsize="small")
            ax.set_title(title)
            ax.set_xlabel(f"{label} (range: ±1 norm std)")
            ax.set_ylabel(f"density [1 / {units_label(ds, channel).strip('[]')}]")
        figure.suptitle(f"{channel}: innovations at density {density:g}, cycles ≥ "
                        f"{spinup_of(ds)}, {ds.sizes['seed']} seed(s) pooled")
    return axes[0]
