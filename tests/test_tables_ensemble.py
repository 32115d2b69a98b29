"""Ensemble spread and forecast time in the tables, and metrics.nc files written before them."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from metrics_fixture import (
    DIVERGED,
    ENSEMBLE,
    ENSEMBLE_MEMBERS,
    NEW_VARIABLES,
    SPINUP_CYCLES,
    legacy,
    make_metrics,
)
from test_tables import CELLS, PRESENT, is_diverged, parse_mean_std, pooled

from bench.report import plots, skill, tables, timing
from bench.scorer import PHASES, select_cell, timing_frame

DETERMINISTIC = ["3dvar", "vaevar", "none"]


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_metrics()


def test_spread_is_pooled_like_the_rmse_and_nan_for_deterministic_methods(ds):
    numbers = skill.skill_numbers(ds)
    assert list(numbers.columns[:5]) == ["method", "density", "obs_columns", "obs_spacing_km",
                                         "members"]
    for row, (method, density) in zip(numbers.itertuples(), CELLS, strict=True):
        assert row.members == (ENSEMBLE_MEMBERS if method == ENSEMBLE else 0)
        if is_diverged(method, density):
            continue
        for channel in PRESENT:
            for phase in PHASES:
                mean = getattr(row, f"{channel}_{phase}_spread_mean")
                std = getattr(row, f"{channel}_{phase}_spread_std")
                if method != ENSEMBLE:
                    assert np.isnan(mean) and np.isnan(std)
                    continue
                values = pooled(ds, method, density, channel, phase, SPINUP_CYCLES, "spread")
                assert values.size == 2 * (12 - SPINUP_CYCLES)
                assert mean == pytest.approx(values.mean(), rel=1e-12)
                assert std == pytest.approx(values.std(ddof=1), rel=1e-12)


def test_skill_table_shows_the_analysis_spread_next_to_the_rmse(ds):
    table = skill.skill_table(ds)
    for row, (method, density) in enumerate(CELLS):
        shown = table.loc[row, "z500 analysis spread [m² s⁻²]"]
        if is_diverged(method, density):
            assert shown == f"diverged (cycle {DIVERGED['cycle']})"
        elif method != ENSEMBLE:
            assert shown == "—"
        else:
            mean, std, decimals = parse_mean_std(shown)
            values = pooled(ds, method, density, "z500", "analysis", SPINUP_CYCLES, "spread")
            assert abs(mean - values.mean()) <= 0.5 * 10.0**-decimals + 1e-12
            assert abs(std - values.std(ddof=1)) <= 0.5 * 10.0**-decimals + 1e-12
            # humidity's spread is shown in g kg⁻¹ like its RMSE
            q = parse_mean_std(table.loc[row, "q700 analysis spread [g kg⁻¹]"])[0]
            q_values = pooled(ds, method, density, "q700", "analysis", SPINUP_CYCLES, "spread")
            assert q == pytest.approx(1e3 * q_values.mean(), rel=0.01)
    notes = skill.skill_notes(ds)
    assert "analysis spread" in notes and f"{ENSEMBLE} {ENSEMBLE_MEMBERS} members" in notes
    tex = skill.skill_latex(ds)
    assert "---" in tex and "—" not in tex
    assert r"\cmidrule(lr){5-7} \cmidrule(lr){8-10}" in tex


def test_a_run_without_ensembles_has_no_spread_columns(ds):
    deterministic = ds.sel({"method": DETERMINISTIC})  # spread all NaN, members all 0
    columns = list(skill.skill_table(deterministic).columns)
    assert len(columns) == 4 + 2 * len(PRESENT)
    assert not any("spread" in c for c in columns)
    assert not any("spread" in c for c in skill.skill_numbers(deterministic).columns)
    assert "spread" not in skill.skill_notes(deterministic)
    # the RMSE columns are the ensemble run's, number for number
    pd.testing.assert_frame_equal(skill.skill_table(deterministic),
                                  skill.skill_table(ds)[columns].iloc[:6])


def test_timing_table_has_the_median_forecast_time_next_to_the_analysis_time(ds):
    numbers = timing.timing_numbers(ds)
    assert list(numbers.columns) == ["method", "density", "obs_columns", "obs_spacing_km",
                                     "n_analyses", "median_seconds", "p90_seconds",
                                     "median_forecast_seconds", "peak_memory_mib", "device"]
    for row, (method, density) in zip(numbers.itertuples(), CELLS, strict=True):
        forecast = select_cell(ds["forecast_seconds"], method, density).values
        forecast = forecast[np.isfinite(forecast)]
        assert forecast.size == (20 if is_diverged(method, density) else 22)  # no last cycle
        assert row.median_forecast_seconds == pytest.approx(np.median(forecast), rel=1e-12)
    by_method = numbers.groupby("method")["median_forecast_seconds"].max()
    assert by_method[ENSEMBLE] > 3 * by_method["3dvar"]  # every member is forecast
    shown = timing.timing_table(ds)
    columns = list(shown.columns)
    assert columns.index("median forecast time") == columns.index("p90 time") + 1
    assert shown.loc[CELLS.index((ENSEMBLE, 0.01)), "median forecast time"].endswith(" ms")
    assert "median forecast time" in timing.timing_notes(ds)
    assert "median forecast time" in timing.timing_latex(ds)


def test_old_metrics_files_give_the_tables_they_always_did(ds, tmp_path):
    old = legacy(ds)
    assert not set(NEW_VARIABLES) & set(old.data_vars)
    numbers = skill.skill_numbers(old)
    assert list(numbers.columns[:8]) == ["method", "density", "obs_columns", "obs_spacing_km",
                                         "obs_points", "status", "diverged_cycle", "n_values"]
    assert len(numbers.columns) == 8 + 4 * len(PRESENT)
    # no obs_columns / obs_spacing_km and no card for the fixture's world: unknown, shown "—"
    regime = ["obs_columns", "obs_spacing_km"]
    assert numbers[regime].isna().all().all()
    assert set(skill.skill_table(old)["spacing [km]"]) == {"—"}
    # the new variables add columns and change no number
    pd.testing.assert_frame_equal(numbers.drop(columns=regime),
                                  skill.skill_numbers(ds)[list(numbers.columns)].drop(
                                      columns=regime))
    table = skill.skill_table(old).drop(columns=["obs columns", "spacing [km]"])
    pd.testing.assert_frame_equal(table, skill.skill_table(ds)[list(table.columns)])
    assert len(table.columns) == 2 + 2 * len(PRESENT)
    old_timing = timing.timing_numbers(old)
    assert "median_forecast_seconds" not in old_timing
    pd.testing.assert_frame_equal(old_timing.drop(columns=regime), timing.timing_numbers(ds).drop(
        columns=["median_forecast_seconds", *regime]))
    assert list(timing.timing_table(old).columns) == [
        "method", "density", "obs columns", "spacing [km]", "analyses", "median time", "p90 time",
        "peak memory [MiB]", "device"]
    assert "forecast" not in timing.timing_notes(old)
    # as `python -m bench tables` reads it: from disk, then every table, the summary, a figure
    old.to_netcdf(tmp_path / "metrics.nc")
    with xr.open_dataset(tmp_path / "metrics.nc") as on_disk:
        paths = tables.write_tables(on_disk, tmp_path, "python -m bench tables old")
        assert "diverged (cycle 9)" in tables.format_skill_for_terminal(on_disk)
        assert plots.time_per_analysis(on_disk).get_yscale() == "log"
    # skill, timing, two paper tables and the paired table; no diagnostics, no forecast impact
    assert sorted({p.stem for p in paths}) == ["paired", "paper_rmse_analysis",
                                               "paper_rmse_background", "skill", "timing"]
    skill_md = (tmp_path / "tables" / "skill.md").read_text()
    assert "spread" not in skill_md and "members" not in skill_md
    assert "forecast" not in (tmp_path / "tables" / "timing.md").read_text()
    assert r"\multicolumn{14}{c}{diverged (cycle 9)}" in (tmp_path / "tables" /
                                                          "skill.tex").read_text()


def test_timing_frame_rows_are_the_tables_analyses(ds):
    frame = timing_frame(ds)
    numbers = timing.timing_numbers(ds)
    counts = frame.groupby(["method", "density"], sort=False).size()
    assert [counts[cell] for cell in CELLS] == list(numbers["n_analyses"])
