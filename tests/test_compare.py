"""`compare`: a settings sweep of several runs as one skill/time table."""

import json
import math

import pytest
from metrics_fixture import legacy, make_metrics
from test_runner import prepared

from bench import runner
from bench.config import CycleSettings, RunConfig
from bench.report.compare import compare_runs, write_comparison
from bench.report.skill import skill_numbers
from bench.report.timing import timing_numbers


def test_a_sweep_becomes_one_row_per_setting(tmp_path):
    cycle = CycleSettings(days=2, first_lead_hours=12, spinup_cycles=2)
    base = RunConfig(world="tiny", methods=("interp",), densities=(0.2,), cycle=cycle)
    sweep = RunConfig(world="tiny", methods=("interp",), densities=(0.2,), cycle=cycle,
                      method_settings={"interp": {"length_scale_km": 2000.0, "passes": 1}})
    runs = []
    for name, cfg in (("default", base), ("wide", sweep)):
        ds = runner.run(cfg, tmp_path / name, progress=False, prepared=prepared(cfg))
        runs.append((tmp_path / name, skill_numbers(ds)))
    table = compare_runs([r for r, _ in runs], channels=("t850", "z500"))
    assert list(table["settings"]) == ["defaults", "length_scale_km=2000.0, passes=1"]
    for row, (_, skill) in zip(table.itertuples(), runs, strict=True):
        assert row.t850_analysis == pytest.approx(skill["t850_analysis_mean"].item())
        assert row.median_seconds > 0
        assert row.median_forecast_seconds >= 0  # the forecast after each analysis (not NaN)
    # the settings really changed the analyses
    assert table["t850_analysis"].iloc[0] != table["t850_analysis"].iloc[1]
    paths = write_comparison([r for r, _ in runs], tmp_path / "cmp", "test command",
                             channels=("t850",))
    assert [p.name for p in paths] == ["comparison.md", "comparison.csv", "comparison.tex"]
    assert "test command" in paths[0].read_text()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a finished run directory"):
        compare_runs([tmp_path])


def test_forecast_time_is_carried_and_nan_for_runs_from_before_it(tmp_path):
    """A run with forecast times next to one written before metrics.nc recorded them."""
    runs = {"new": make_metrics(), "old": legacy(make_metrics())}
    for name, ds in runs.items():
        (tmp_path / name).mkdir()
        ds.to_netcdf(tmp_path / name / "metrics.nc")
        (tmp_path / name / "config.json").write_text(json.dumps({"method_settings": {}}))
    table = compare_runs([tmp_path / "new", tmp_path / "old"], channels=("z500",))
    new, old = table[table["run"] == "new"], table[table["run"] == "old"]
    assert list(new["median_forecast_seconds"]) == list(
        timing_numbers(runs["new"])["median_forecast_seconds"])
    assert all(math.isnan(v) for v in old["median_forecast_seconds"])
    assert list(new["median_seconds"]) == list(old["median_seconds"])
