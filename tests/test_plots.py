"""Figures: what the Axes show (data, units in labels, log scales) and the PNG files written."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from metrics_fixture import DEVICE, DIVERGED, legacy, make_metrics

from bench.report import plots, skill
from bench.scorer import select_cell

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADLINE_PRESENT = ("z500", "t850", "q700", "u850", "t2m", "u10", "msl")


@pytest.fixture(scope="module")
def ds():
    return make_metrics()


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_rmse_over_cycles_lines_labels_and_divergence(ds):
    ax = plots.rmse_over_cycles(ds, "z500", 0.01)
    assert ax.get_ylabel() == "RMSE of z500 [m² s⁻²]"
    assert ax.get_xlabel() == "cycle (6 h each)"
    assert "z500" in ax.get_title() and "0.01" in ax.get_title()
    # Lines in method order, background (dashed) then analysis (solid) for each.
    means = select_cell(ds["rmse"], "3dvar", 0.01).sel(channel="z500").mean("seed", skipna=False)
    three_dvar_background, three_dvar_analysis = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(three_dvar_analysis.get_ydata(),
                               means.sel(phase="analysis").values)
    np.testing.assert_allclose(three_dvar_background.get_ydata(),
                               means.sel(phase="background").values)
    assert three_dvar_background.get_linestyle() == "--"
    assert three_dvar_analysis.get_linestyle() == "-"
    # The diverged method's lines stop before the diverged cycle.
    vaevar_analysis = np.asarray(ax.lines[3].get_ydata(), dtype=float)
    assert np.isnan(vaevar_analysis[DIVERGED["cycle"]:]).all()
    assert np.isfinite(vaevar_analysis[:DIVERGED["cycle"]]).all()
    assert ax.get_yscale() == "linear"  # the blown-up analysis is not drawn, so no log scale
    texts = legend_texts(ax)
    assert texts[:6] == ["3dvar", "vaevar", "none", "letkf", "background", "analysis"]
    assert "vaevar diverged (seed 1, cycle 9)" in texts
    assert "spin-up (4 cycles)" in texts


def test_rmse_over_cycles_shows_humidity_in_g_per_kg(ds):
    ax = plots.rmse_over_cycles(ds, "q700", 0.05)
    assert ax.get_ylabel() == "RMSE of q700 [g kg⁻¹]"
    expected = 1e3 * select_cell(ds["rmse"], "3dvar", 0.05).sel(
        channel="q700", phase="analysis").mean("seed")
    np.testing.assert_allclose(ax.lines[1].get_ydata(), expected.values)
    assert "vaevar diverged" not in " ".join(legend_texts(ax))


def test_rmse_vs_density_error_bars_are_the_table_numbers(ds):
    ax = plots.rmse_vs_density(ds, "t850")
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "analysis RMSE of t850 [K]"
    assert "density" in ax.get_xlabel()
    numbers = skill.skill_numbers(ds)
    three_dvar = numbers[numbers["method"] == "3dvar"]
    line, _caps, (bars,) = ax.containers[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float),
                               three_dvar["t850_analysis_mean"])
    segments = bars.get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments],
                               2 * three_dvar["t850_analysis_std"])
    # vaevar keeps only its non-diverged density; an ✕ stands for the other.
    assert len(ax.containers[1].lines[0].get_xdata()) == 1
    assert legend_texts(ax) == ["3dvar", "vaevar", "none", "letkf", "vaevar diverged"]


def test_time_per_analysis_names_the_device_and_uses_log_scale(ds):
    ax = plots.time_per_analysis(ds)
    assert DEVICE in ax.get_title()
    assert ax.get_ylabel() == "time per analysis [s]"
    assert ax.get_yscale() == "log"  # the fixture spans 0.1 ms to seconds
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3dvar", "vaevar", "none", "letkf"]
    fast = ds.assign(analysis_seconds=ds["analysis_seconds"].clip(0.04, 0.08))
    assert plots.time_per_analysis(fast).get_yscale() == "linear"


def test_figures_of_old_metrics_files(ds):
    """A metrics.nc from before ensembles (no spread, forecast time, members) draws the same."""
    old = legacy(ds)
    for draw in (lambda d: plots.rmse_over_cycles(d, "z500", 0.01),
                 lambda d: plots.rmse_vs_density(d, "t850"), plots.time_per_analysis):
        new_ax, old_ax = draw(ds), draw(old)
        assert len(new_ax.lines) == len(old_ax.lines)
        for new, before in zip(new_ax.lines, old_ax.lines, strict=True):
            np.testing.assert_array_equal(np.asarray(new.get_ydata(), dtype=float),
                                          np.asarray(before.get_ydata(), dtype=float))
        assert legend_texts(new_ax) == legend_texts(old_ax)


def test_write_figures_files(ds, tmp_path):
    before = plt.get_fignums()
    paths = plots.write_figures(ds, tmp_path, dpi=60)
    expected = {f"rmse_cycles_{c}_density{d}.png" for c in HEADLINE_PRESENT
                for d in ("0.01", "0.05")}
    expected |= {f"rmse_density_{c}.png" for c in HEADLINE_PRESENT} | {"time_per_analysis.png"}
    assert {p.name for p in paths} == expected
    assert all(p.parent == tmp_path / "figures" for p in paths)
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    assert not list((tmp_path / "figures").glob("*.tmp"))
    assert plt.get_fignums() == before  # nothing left open in pyplot
