"""Forecast impact (bench/report/impact.py): analysis age and lead time gained on synthetic
curves with a known shift, and the table from the fixture's free forecasts."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from metrics_fixture import (
    ANALYSIS_AGE,
    FORECAST_HOURS,
    METHODS,
    before_diagnostics,
    growth,
    make_metrics,
)
from test_tables import is_diverged

from bench.report import impact, tables

LEADS = np.arange(6, 121, 6, dtype=float)


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_metrics(diagnostics=True)


@pytest.mark.parametrize("shift", [6.0, 18.0, 9.5, 31.0])
def test_a_linear_truth_curve_gives_the_shift_at_every_lead(shift):
    truth = 2.0 * LEADS  # T(L) = 2 L: linear interpolation is exact for any shift
    analysis = 2.0 * (LEADS + shift)
    ages = impact.ages(LEADS, truth, analysis)
    inside = LEADS + shift <= LEADS.max()
    np.testing.assert_allclose(ages[inside], shift, atol=1e-12)
    assert np.isnan(ages[~inside]).all()  # beyond the longest truth forecast: unknown


def test_a_curved_truth_gives_the_shift_on_the_lead_grid():
    """A concave T with a shift of whole 6-h steps: the crossing lies on a grid point."""
    truth, analysis, background = growth(LEADS), growth(LEADS + 12), growth(LEADS + 30)
    ages = impact.ages(LEADS, truth, analysis)
    np.testing.assert_allclose(ages[LEADS <= 108], 12.0, atol=1e-9)
    gains = impact.gains(LEADS, background, analysis)
    # G = L − L_b with background(L_b) = analysis(L): L_b = L − 18, defined from L = 24 h
    np.testing.assert_allclose(gains[LEADS >= 24], 18.0, atol=1e-9)
    assert np.isnan(gains[LEADS < 24]).all()  # the analysis beats the background at 6 h
    # the truth curve runs through (0, 0): an analysis as good as the truth has age 0
    assert impact.equivalent_lead(LEADS, truth, 0.0) == 0.0
    assert impact.equivalent_lead(LEADS, truth, truth[0] / 2) == pytest.approx(3.0)
    assert np.isnan(impact.equivalent_lead(LEADS, truth, np.nan))


def test_the_first_crossing_counts_on_a_noisy_curve():
    curve = np.array([1.0, 2.0, 1.5, 3.0])
    assert impact.equivalent_lead([6, 12, 18, 24], curve, 1.8, origin=False) == pytest.approx(
        6 + 0.8 * 6)


def test_the_fixture_table_has_the_known_ages_and_gains(ds):
    numbers = impact.impact_numbers(ds)
    assert sorted(numbers["lead_hours"].unique()) == [24, 48, 120]
    assert list(numbers["channel"].unique()) == ["z500", "t850"]
    for row in numbers.itertuples():
        if is_diverged(row.method, row.density):
            assert row.status == "diverged" and np.isnan(row.rmse_analysis)
            continue
        # spin-up (4 cycles) drops start 0; the last start (8) lacks the long leads: only
        # start 4 of each seed is complete at every lead
        assert row.n_forecasts == 2 and row.max_lead_hours == FORECAST_HOURS
        gain = 0.0 if row.method == "none" else 6.0
        assert row.gain_hours == pytest.approx(gain, abs=1e-9)
        age = ANALYSIS_AGE[row.method]
        if row.lead_hours + age + gain <= FORECAST_HOURS:
            assert row.analysis_age_hours == pytest.approx(age, abs=1e-9)
            assert row.background_age_hours == pytest.approx(age + gain, abs=1e-9)
        if row.lead_hours + age > FORECAST_HOURS:
            assert np.isnan(row.analysis_age_hours)
        assert row.rmse_truth < row.rmse_analysis <= row.rmse_background


def test_display_bounds_and_notes(ds):
    table = impact.impact_table(ds)
    row = table[(table["method"] == "3dvar") & (table["lead"] == "120 h")].iloc[0]
    assert row["analysis age"] == "> 0 h" and row["lead time gained"] == "6.0 h"
    row = table[(table["method"] == "letkf") & (table["lead"] == "24 h")].iloc[0]
    assert row["analysis age"] == "6.0 h"
    assert set(table[table["from analysis"] == "diverged"]["method"]) == {"vaevar"}
    notes = impact.impact_notes(ds)
    assert "analysis age A = L′ − L" in notes and "time-mean of per-cycle RMSE" in notes


def test_files_and_old_metrics(ds, tmp_path):
    paths = tables.write_tables(ds, tmp_path, "cmd")
    assert {"forecast_impact.md", "forecast_impact.csv",
            "forecast_impact.tex"} <= {p.name for p in paths}
    csv = pd.read_csv(tmp_path / "tables" / "forecast_impact.csv", comment="#")
    assert len(csv) == len(METHODS) * 2 * 2 * 3
    assert (tmp_path / "tables" / "forecast_impact.tex").read_text().split("\n", 1)[1].isascii()
    old = before_diagnostics(ds)
    assert not impact.has_forecasts(old)
    names = {p.name for p in tables.write_tables(old, tmp_path / "old", "cmd")}
    assert not any(n.startswith("forecast_impact") for n in names)
    # a run with forecasts from analyses only (before the references existed): no table
    only = ds.drop_vars(["truth_forecast_rmse", "background_forecast_rmse"])
    assert not impact.has_forecasts(only)
