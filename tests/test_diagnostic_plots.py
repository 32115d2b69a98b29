"""Figures of the observation-space diagnostics and the free forecasts: what the Axes show and
which files write_figures adds (only when metrics.nc has the variables)."""

import numpy as np
import pytest
from metrics_fixture import (
    ASSUMED,
    DIVERGED,
    OBS_ERROR_FRACTION,
    SPINUP_CYCLES,
    UNOBSERVED,
    before_diagnostics,
    before_histograms,
    make_metrics,
)

from bench.innovations import HISTOGRAM_EDGES
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
    new = ("innovations_", "forecast_lead_", "innovation_histogram_")
    assert not any(n.startswith(new) for n in old)
    assert old == {n for n in names if not n.startswith(new)}


def test_histogram_panels_are_the_pooled_counts_as_densities(ds):
    ax = diagnostic_plots.innovation_histogram(ds, "q700", 0.05)
    panels = ax.figure.axes
    assert len(panels) == 2 and panels[0] is ax
    cell = select_cell(ds, "3dvar", 0.05).sel(channel="q700")
    edges = 1e3 * float(cell["norm_std"]) * HISTOGRAM_EDGES  # g kg⁻¹
    for panel, name in zip(panels, ("omb_histogram", "oma_histogram"), strict=True):
        counts = cell[name].sum("seed").values.astype(float)  # (innovation_bin,)
        values, got_edges, _ = panel.patches[0].get_data()  # 3dvar: the first method
        np.testing.assert_allclose(got_edges, edges)
        np.testing.assert_allclose(values, counts[1:-1] / (counts.sum() * np.diff(edges)))
        beyond = 100 * (counts[0] + counts[-1]) / counts.sum()
        labels = [t.get_text() for t in panel.get_legend().get_texts()]
        assert labels[0] == f"3dvar ({beyond:.2g} % beyond)" and "N(0, σ_o² given)" in labels
        # the reference: N(0, σ_o²) with the σ_o given to 3dvar (the fixture's, constant)
        sigma = 1e3 * np.sqrt(ASSUMED["3dvar"][1]) * OBS_ERROR_FRACTION * 6e-4
        gauss = panel.lines[0]
        np.testing.assert_allclose(np.max(gauss.get_ydata()), 1 / (sigma * np.sqrt(2 * np.pi)),
                                   rtol=1e-3)
    # the diverged method is left out and named
    diverged = diagnostic_plots.innovation_histogram(ds, "z500", DIVERGED["density"])
    assert len(diverged.patches) == 3
    assert f"{DIVERGED['method']} diverged" in [t.get_text()
                                                for t in diverged.get_legend().get_texts()]


def test_histogram_figure_written_for_new_files_skipped_for_old(ds, tmp_path):
    small = ds.sel(channel=["z500", UNOBSERVED], density=[0.05])
    written = {p.name for p in plots.write_figures(small, tmp_path / "new", dpi=30)}
    assert "innovation_histogram_z500_density0.05.png" in written
    assert not any(n.startswith(f"innovation_histogram_{UNOBSERVED}") for n in written)
    assert (tmp_path / "new" / "figures" / "innovation_histogram_z500_density0.05.png").stat(
    ).st_size > 1000
    old = {p.name for p in plots.write_figures(before_histograms(small), tmp_path / "old",
                                               dpi=30)}
    assert old == written - {"innovation_histogram_z500_density0.05.png"}
    assert not diagnostic_plots.has_histograms(before_diagnostics(small))
