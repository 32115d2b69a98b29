"""``python -m bench timing``: every method at a tiny grid, the three table files, bad input."""

import sys

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.experiments.synthetic import harness_bytes, synthetic_spec, timing_channels, untrained
from bench.experiments.timing import TimingSettings
from bench.obs_regime import ObservationGrid
from methods import METHODS

COLUMNS = ["method", "device", "grid", "channels", "observations", "obs_columns",
           "obs_spacing_km", "repeats", "members", "median_s",
           "p90_s", "peak_mem_mib", "evaluations", "seconds_per_evaluation", "kernel",
           "kernel_s", "kernel_work", "kernel_unit", "achieved_per_s", "device_peak_per_s",
           "fraction_of_peak", "est_analysis_mib", "est_total_mib"]


def test_timing_runs_every_method_and_writes_three_tables(tmp_path, capsys, monkeypatch):
    out = tmp_path / "timing"
    # 9 latitudes: an odd count gives the equiangular grid with poles (ERA5's kind)
    args = ["timing", "--methods", ",".join(METHODS), "--grid", "9x16", "--channels", "8",
            "--repeats", "2", "--device", "cpu", "--out", str(out), "-q"]
    monkeypatch.setattr(sys, "argv", ["bench", *args])  # the command the tables record
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in METHODS)
    table = pd.read_csv(out / "timing.csv", comment="#")
    assert list(table.columns) == COLUMNS
    assert list(table["method"]) == list(METHODS)
    assert (table["grid"] == "9x16 equiangular").all() and (table["channels"] == 8).all()
    assert (table["observations"] == 8 * round(0.01 * 9 * 16)).all()
    # one column (round(1.44)) on the 9 x 16 grid: its spacing, bench/obs_regime.py
    grid = ObservationGrid.from_shape(9, 16, "equiangular")
    assert (table["obs_columns"] == 1).all()
    assert (table["obs_spacing_km"] == round(grid.spacing_km(1), 1)).all()
    assert (table["median_s"] > 0).all() and (table["p90_s"] >= table["median_s"]).all()
    assert (table["achieved_per_s"] > 0).all() and (table["device_peak_per_s"] > 0).all()
    # DiffDA's denoiser calls at its defaults: steps + (resamples − 1)(steps − jump_length)
    d = METHODS["diffda"]()
    calls = d.steps + (d.resamples - 1) * (d.steps - d.jump_length)
    assert table.set_index("method").loc["diffda", "evaluations"] == calls
    md = (out / "timing.md").read_text()
    assert "python -m bench timing" in md and "--grid 9x16" in md
    assert md.count("\n| ") == len(METHODS) + 1  # header + one row per method
    tex = (out / "timing.tex").read_text()
    assert tex.startswith("% python -m bench timing") and "\\begin{tabular}" in tex
    assert (out / "timing.csv").read_text().startswith("# python -m bench timing")


@pytest.mark.parametrize("extra, expected", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--grid", "32by64"], "--grid '32by64'"),
    (["--grid", "1x64"], "--grid '1x64'"),
    (["--channels", "0"], "--channels 0 is outside 1..69"),
    (["--channels", "70"], "--channels 70 is outside 1..69"),
    (["--density", "0"], "--density 0.0 is outside (0, 1]"),
    (["--density", "1.5"], "--density 1.5 is outside (0, 1]"),
    (["--repeats", "0"], "--repeats 0"),
    (["--device", "tpu"], "--device tpu: expected one of auto, cpu, cuda"),
    (["--columns", "0"], "--columns 0: expected whole numbers of observed columns >= 1"),
    (["--columns", "2049"], "--columns 2049: expected a number of observed columns from 1 to "
                            "2048 (every column of the 32x64 legendre-gauss grid)"),
    (["--grid", "9x16", "--spacing-km", "100"], "--spacing-km 100: expected a mean spacing from "
                                                "1742 km (every column of the 9x16 equiangular"),
    (["--columns", "20", "--density", "0.01"], "--density 0.01 and --columns 20: expected one"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, expected):
    out = tmp_path / "timing"
    assert main(["timing", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert err.count("\n") == 0
    assert not out.exists()


def test_refuses_a_grid_that_cannot_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("bench.experiments.timing.available_bytes", lambda device: 1e9)
    out = tmp_path / "timing"
    assert main(["timing", "--methods", "3dvar", "--grid", "721x1440", "--device", "cpu",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing --grid 721x1440" in err and "3dvar" in err and err.count("\n") == 0
    assert not out.exists()


def test_channel_subsets_keep_fengwu_order_and_wind_pairs():
    assert len(timing_channels(69)) == 69
    assert timing_channels(6) == ("u10", "v10", "t2m", "msl", "u500", "v500")
    assert timing_channels(10) == ("u10", "v10", "t2m", "msl", "z500", "q500", "u500", "u850",
                                   "v500", "t500")


def test_untrained_methods_analyse_at_any_grid():
    """The synthetic internals fit the grid: each method returns a finite (C, H, W) analysis
    that differs from the background where it should (all but ``none``)."""
    from bench.experiments.timing import synthetic_inputs

    spec = synthetic_spec(10, 20, 5)
    for name, cls in METHODS.items():
        method = cls()
        background, obs = synthetic_inputs(method, spec, 0.05, torch.device("cpu"), seed=1)
        x_a = untrained(method, spec).analyse(background, obs).x_a
        assert x_a.shape == spec.shape and torch.isfinite(x_a).all(), name
        assert torch.equal(x_a, background.x_b) == (name == "none"), name


def test_memory_estimate_grows_with_the_grid():
    small, large = synthetic_spec(32, 64), synthetic_spec(721, 1440)
    for name, cls in METHODS.items():
        method = cls()
        a = method.memory_estimate(small, 1380, method.members)
        b = method.memory_estimate(large, 718_000, method.members)
        assert 0 < a.total < b.total, name
    assert harness_bytes(small) < harness_bytes(large) < harness_bytes(large, members=20)
    # 3DVar's resident tables: the estimate equals the bytes the real objects hold
    from methods.common.covariance.legendre import Synthesis, Winds
    from methods.common.spectral import Transforms

    for nlat, nlon in ((32, 64), (33, 64)):
        spec = synthetic_spec(nlat, nlon)
        t = Transforms(spec.grid, nlat, nlon)
        winds = Winds(t)
        Synthesis(t)  # shares isht's table (a view): nothing of its own
        tables = [t.sht.weights, t.isht.pct, t.vsht.weights, t.ivsht.dpct, winds.a, winds.b]
        held = sum(x.numel() * 8 for x in tables)  # float64
        assert METHODS["3dvar"]().memory_estimate(spec, 0).model == pytest.approx(held), (
            nlat, nlon)


def test_timing_takes_columns_or_a_spacing_instead_of_a_density():
    """Converted on the --grid (odd: with poles), as for `run`."""
    assert TimingSettings(grid="9x16", columns=3).resolved().density == 3 / 144
    grid = ObservationGrid.from_shape(9, 16, "equiangular")
    spaced = TimingSettings(grid="9x16", spacing_km=grid.spacing_km(12)).resolved()
    assert spaced.density == 12 / 144
    assert TimingSettings(grid="9x16").resolved().density == 0.01  # --density as typed
