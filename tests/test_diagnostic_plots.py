"""Figures of the observation-space diagnostics and the free forecasts: what the Axes show and
which files write_figures adds (only when metrics.nc has the variables)."""

import numpy as np
import pytest
from metrics_fixture import DIVERGED, SPINUP_CYCLES, UNOBSERVED, before_diagnostics, make_metrics

from bench.report import diagnostic_plots, impact, plots
from bench.scorer import select_cell


@pytest.fixture(scope="module")
def ds():
    return make_metrics(diagnostics=True)


def test_innovations_are_count_weighted_rms_over_seeds(ds):
    ax = diagnostic_plots.innovations_over_cycles(ds, "q700", 0.05)
    assert ax.get_ylabel() == "rms of q700 [g kg⁻¹]"
    cell = select_cell(ds, "3dvar", 0.05).sel(channel="q700")
    n = cell["obs_count"].values  # (seed, cycle)
    for line, name in zip(ax.lines[:2], ("omb_rms", "oma_rms"), strict=True):
        expected = np.sqrt((n * cell[name].values ** 2).sum(0) / n.sum(0))
        np.testing.assert_allclose(line.get_ydata(), 1e3 * expected)
    assert ax.lines[0].get_linestyle() == "--" and ax.lines[1].get_linestyle() == "-"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[-2:] == ["O−B rms", "O−A rms"]
    diverged = diagnostic_plots.innovations_over_cycles(ds, "z500", DIVERGED["density"])
    vaevar = np.asarray(diverged.lines[3].get_ydata(), dtype=float)
    k = DIVERGED["cycle"]
    assert np.isnan(vaevar[k:]).all() and np.isfinite(vaevar[:k]).all()


def test_forecast_curves_are_the_tables(ds):
    ax = diagnostic_plots.forecast_rmse_vs_lead(ds, "t850", 0.01)
    leads, curves, _ = impact.mean_curves(ds, "3dvar", 0.01, "t850", SPINUP_CYCLES)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), curves["analysis"])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), curves["background"])
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), curves["truth"])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), leads)
    assert ax.get_xlabel() == "lead [h]"
    assert "vaevar diverged" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_figure_names_only_with_the_variables(ds):
    names = set(plots.figure_names(ds))
    assert "innovations_z500_density0.01.png" in names
    assert not any(n.startswith(f"innovations_{UNOBSERVED}_") for n in names)
    assert {"forecast_lead_z500_density0.05.png", "forecast_lead_t850_density0.01.png"} <= names
    old = set(plots.figure_names(before_diagnostics(ds)))
    assert not any(n.startswith(("innovations_", "forecast_lead_")) for n in old)
    assert old == {n for n in names if not n.startswith(("innovations_", "forecast_lead_"))}
