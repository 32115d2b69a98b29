"""Figures of the observation-space diagnostics and of the free forecasts (when metrics.nc has
them; see bench/report/diagnostics.py and bench/report/impact.py for the numbers).

- ``innovations_over_cycles``: O − B rms (dashed) and O − A rms (solid) against cycle, one colour
  per method, pooled over seeds with observation-count weights (√(Σ n rms² / Σ n)). metrics.nc
  stores these per-cycle aggregates only, not the individual innovations, so there is no
  histogram of O − B.
- ``forecast_rmse_vs_lead``: RMSE against lead of the forecasts from the analysis (solid) and
  from the background (dashed) per method, and from the truth (black, dotted): the curves the
  forecast-impact table reads its ages and gains from.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from bench.report.figure_style import cycle_hours, method_palette, new_axes, style
from bench.report.formatting import channel_label, display_scale
from bench.report.impact import mean_curves
from bench.report.selection import diverged_seeds, spinup_of
from bench.scorer import select_cell

DASHED = (0, (4, 2))


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
