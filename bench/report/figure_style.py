"""What every figure shares: the seaborn style (as context managers, so importing the report
never changes the caller's matplotlib settings), a fresh Figure's Axes (no pyplot: no global
figure list, no GUI backend), one colour per method, and the log-scale rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Switch an axis to log scale when its largest value exceeds its smallest by this factor.
LOG_SPREAD = 30.0


@contextlib.contextmanager
def style() -> Iterator[None]:
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def new_axes(width: float = 7.5, height: float = 4.5) -> Axes:
    return Figure(figsize=(width, height), layout="constrained").add_subplot()


def method_palette(ds: xr.Dataset) -> dict[str, tuple]:
    """One colour per method, fixed by the Dataset's method order (the same in every figure)."""
    methods = [str(m) for m in ds["method"].values]
    return dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))


def log_if_spread(ax: Axes, values: np.ndarray, axis: str = "y") -> None:
    """Log scale on ``axis`` when the positive ``values`` span more than ``LOG_SPREAD``."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size and positive.max() > LOG_SPREAD * positive.min():
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def cycle_hours(ds: xr.Dataset) -> float | None:
    """Hours between cycles from ``valid_time`` (None if it cannot tell)."""
    if "valid_time" not in ds.coords or ds.sizes["cycle"] < 2:
        return None
    step = np.diff(ds["valid_time"].values[:2])[0]
    return float(step / np.timedelta64(1, "h"))
