"""Observation-space diagnostics (bench/report/diagnostics.py) on the linear-Gaussian toy of
tests/metrics_fixture.py: d_b = ε_o − ε_b with known σ_o, σ_b and each method's exact Kalman
analysis with the variances it assumes, so Desroziers' estimates and χ²/N have known answers."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from metrics_fixture import (
    ASSUMED,
    CHANNELS,
    OBS_ERROR_FRACTION,
    SPINUP_CYCLES,
    UNOBSERVED,
    VARIATIONAL,
    before_diagnostics,
    make_metrics,
)
from test_tables import is_diverged

from bench.report import diagnostics, tables
from bench.scorer import select_cell


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_metrics(diagnostics=True)


@pytest.fixture(scope="module")
def numbers(ds) -> pd.DataFrame:
    return diagnostics.diagnostics_numbers(ds)


def known(method: str, channel: str) -> dict[str, float]:
    """The toy's expectations: with gain K from the assumed variances, E[d_a d_b] =
    (1 − K)(σ_b² + σ_o²) and E[(Hx_a − Hx_b) d_b] = K (σ_b² + σ_o²); they are R and HBHᵀ
    exactly when the assumptions are right."""
    sigma_b = CHANNELS[channel][1]
    sigma_o = OBS_ERROR_FRACTION * sigma_b
    a_b, a_o = ASSUMED[method]
    gain = a_b * sigma_b**2 / (a_b * sigma_b**2 + a_o * sigma_o**2)
    total = sigma_b**2 + sigma_o**2
    return {"r": (1 - gain) * total, "hbh": gain * total, "given": a_o * sigma_o**2,
            "chi2": total / (a_b * sigma_b**2 + a_o * sigma_o**2), "gain": gain,
            "total": total, "sigma_o": sigma_o, "sigma_b": sigma_b}


def test_desroziers_recovers_r_and_hbh_within_sampling_error(numbers):
    checked = 0
    for row in numbers[numbers["status"] == "ok"].itertuples():
        k = known(row.method, row.channel)
        n = row.obs_count
        # each estimate is a mean of n products c · d_b², var(d_b²) = 2 (σ_b² + σ_o²)²
        se_r = (1 - k["gain"]) * np.sqrt(2 / n) * k["total"]
        se_hbh = k["gain"] * np.sqrt(2 / n) * k["total"]
        assert abs(row.desroziers_r - k["r"]) <= 4 * se_r + 1e-12 * k["total"], row
        assert abs(row.desroziers_hbh - k["hbh"]) <= 4 * se_hbh + 1e-12 * k["total"], row
        assert row.obs_error_var == pytest.approx(k["given"])
        if ASSUMED[row.method] == (1.0, 1.0):  # B and R right: R and HBHᵀ themselves
            assert row.sigma_o_desroziers == pytest.approx(k["sigma_o"], rel=4 * np.sqrt(2 / n))
            assert row.sigma_b_desroziers == pytest.approx(k["sigma_b"], rel=4 * np.sqrt(2 / n))
            assert row.sigma_o_given == pytest.approx(k["sigma_o"])
            checked += 1
    assert checked == 2 * 2 * 6  # 3dvar and letkf, two densities, six observed channels


def test_a_mis_specified_r_shows(numbers):
    """vaevar is given R = 4 × the true R: Desroziers' σ_o lies between the truth and the
    given σ_o, far from both, and its χ²/N is well below 1."""
    rows = numbers[(numbers["method"] == "vaevar") & (numbers["status"] == "ok")]
    assert len(rows) == 6
    for row in rows.itertuples():
        k = known("vaevar", row.channel)
        assert k["sigma_o"] * 1.3 < row.sigma_o_desroziers < row.sigma_o_given * 0.9
    chi2 = rows["chi2_per_obs"].iloc[0]
    assert chi2 == pytest.approx(known("vaevar", "z500")["chi2"], abs=4 * np.sqrt(2 / 1600))


def test_chi2_per_obs_is_one_when_b_and_r_are_right(numbers, ds):
    for (method, density), rows in numbers.groupby(["method", "density"], sort=False):
        chi2 = rows["chi2_per_obs"].iloc[0]
        assert (rows["chi2_per_obs"].isna().all() if np.isnan(chi2)
                else (rows["chi2_per_obs"] == chi2).all())  # one number per cell
        if is_diverged(method, density) or method not in VARIATIONAL:
            assert np.isnan(chi2)
        elif method == "3dvar":
            n = select_cell(ds["n_obs"], method, density).isel(
                cycle=slice(SPINUP_CYCLES, None)).sum().item()
            assert chi2 == pytest.approx(1.0, abs=4 * np.sqrt(2 / n))


def test_pooling_weights_by_observation_count(ds, numbers):
    cell = select_cell(ds, "letkf", 0.01).sel(channel="t850").isel(
        cycle=slice(SPINUP_CYCLES, None))
    n = cell["obs_count"].values.ravel()
    row = numbers[(numbers["method"] == "letkf") & (numbers["density"] == 0.01)
                  & (numbers["channel"] == "t850")].iloc[0]
    assert row.obs_count == n.sum()
    assert row.omb_mean == pytest.approx((n * cell["omb_mean"].values.ravel()).sum() / n.sum())
    assert row.oma_rms == pytest.approx(
        np.sqrt((n * cell["oma_rms"].values.ravel() ** 2).sum() / n.sum()))
    assert row.sigma_o_desroziers == pytest.approx(
        np.sqrt((n * cell["desroziers_r"].values.ravel()).sum() / n.sum()))
    assert row.oma_rms < row.omb_rms  # the analysis moved towards the observations
    none = numbers[(numbers["method"] == "none") & (numbers["channel"] == "t850")].iloc[0]
    assert none.oma_rms == pytest.approx(none.omb_rms)  # no analysis: O − A = O − B
    assert none.sigma_b_desroziers == 0


def test_table_rows_units_and_left_out_channels(ds, numbers):
    assert UNOBSERVED not in set(numbers["channel"])
    assert list(numbers["channel"].unique()) == ["z500", "t850", "q700", "u850", "t2m", "msl"]
    diverged = numbers[numbers["status"] == "diverged"]
    assert set(zip(diverged["method"], diverged["density"], strict=True)) == {("vaevar", 0.01)}
    assert diverged[["omb_rms", "chi2_per_obs"]].isna().all().all()
    table = diagnostics.diagnostics_table(ds)
    q = table[(table["method"] == "3dvar") & (table["channel"] == "q700 [g kg⁻¹]")].iloc[0]
    q_numbers = numbers[(numbers["method"] == "3dvar") & (numbers["channel"] == "q700")].iloc[0]
    assert float(q["O−B rms"]) == pytest.approx(1e3 * q_numbers.omb_rms, rel=5e-3)  # g kg⁻¹
    first = table.groupby(["method", "density"], sort=False).head(1)
    assert set(first["χ²/N"]) >= {"—"} and (table.drop(first.index)["χ²/N"] == "").all()
    notes = diagnostics.diagnostics_notes(ds)
    assert f"No observations of {UNOBSERVED}" in notes and "histograms" in notes


def test_files_and_old_metrics(ds, tmp_path):
    paths = tables.write_tables(ds, tmp_path, "cmd")
    assert {"diagnostics.md", "diagnostics.csv", "diagnostics.tex"} <= {p.name for p in paths}
    csv = pd.read_csv(tmp_path / "tables" / "diagnostics.csv", comment="#")
    pd.testing.assert_frame_equal(csv, diagnostics.diagnostics_numbers(ds), check_exact=False,
                                  rtol=1e-15)
    tex = (tmp_path / "tables" / "diagnostics.tex").read_text()
    assert r"$\chi$$^{2}$/N" in tex and r"z500 [m$^{2}$ s$^{-2}$]" in tex
    old = before_diagnostics(ds)
    assert not diagnostics.has_diagnostics(old)
    names = {p.name for p in tables.write_tables(old, tmp_path / "old", "cmd")}
    assert not any(n.startswith("diagnostics") for n in names)
