"""Skill and timing tables against numbers computed here with numpy from the synthetic metrics.
(Ensemble spread, forecast time and metrics.nc files from before them: test_tables_ensemble.py.)"""

import math
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from metrics_fixture import DEVICE, DIVERGED, REGIMES, SPINUP_CYCLES, make_metrics

from bench.report import formatting, selection, skill, tables, timing
from bench.scorer import PHASES, select_cell

CELLS = [("3dvar", 0.01), ("3dvar", 0.05), ("vaevar", 0.01), ("vaevar", 0.05), ("none", 0.01),
         ("none", 0.05), ("letkf", 0.01), ("letkf", 0.05)]
PRESENT = ["z500", "t850", "q700", "u850", "t2m", "u10", "msl"]


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_metrics()


@pytest.fixture(scope="module")
def full() -> xr.Dataset:
    """The fixture with the observation-space diagnostics and free forecasts."""
    return make_metrics(diagnostics=True)


@pytest.fixture(scope="module")
def metrics_nc(full, tmp_path_factory):
    """The fixture (with every variable) as the harness leaves it on disk."""
    path = tmp_path_factory.mktemp("run") / "metrics.nc"
    full.to_netcdf(path)
    return path


def pooled(ds, method, density, channel, phase, spinup, variable="rmse"):
    """All values of cycles >= spinup, every seed: plain numpy indexing, no xarray."""
    i = list(ds["method"].values).index(method)
    j = list(ds["density"].values).index(density)
    c = list(ds["channel"].values).index(channel)
    p = list(ds["phase"].values).index(phase)
    keep = ds["cycle"].values >= spinup
    return ds[variable].values[i, j][:, keep][:, :, p, c].ravel()


def is_diverged(method, density):
    return (method, density) == (DIVERGED["method"], DIVERGED["density"])


def test_skill_numbers_are_mean_and_std_after_spinup(ds):
    numbers = skill.skill_numbers(ds)
    assert list(zip(numbers["method"], numbers["density"], strict=True)) == CELLS
    for row, (method, density) in zip(numbers.itertuples(), CELLS, strict=True):
        if is_diverged(method, density):
            continue
        for channel in PRESENT:
            for phase in PHASES:
                values = pooled(ds, method, density, channel, phase, SPINUP_CYCLES)
                assert values.size == 2 * (12 - SPINUP_CYCLES)
                assert getattr(row, f"{channel}_{phase}_mean") == pytest.approx(values.mean(),
                                                                                rel=1e-12)
                assert getattr(row, f"{channel}_{phase}_std") == pytest.approx(
                    values.std(ddof=1), rel=1e-12)
        assert row.obs_points == np.median(select_cell(ds["n_points"], method, density).values)
        assert row.n_values == 16


def test_spinup_is_respected_and_can_be_overridden(ds):
    default = skill.skill_numbers(ds)
    none_spinup = skill.skill_numbers(ds, spinup_cycles=0)
    all_cycles = pooled(ds, "3dvar", 0.01, "z500", "analysis", 0)
    assert none_spinup.loc[0, "z500_analysis_mean"] == pytest.approx(all_cycles.mean())
    # Errors decay over the spin-up in the fixture, so leaving it in must raise the mean.
    assert none_spinup.loc[0, "z500_analysis_mean"] > default.loc[0, "z500_analysis_mean"]
    later = ds.assign_attrs(spinup_cycles=6)
    expected = pooled(ds, "3dvar", 0.01, "z500", "analysis", 6)
    assert skill.skill_numbers(later).loc[0, "z500_analysis_mean"] == pytest.approx(
        expected.mean())


def test_spinup_errors_name_the_fix(ds):
    with pytest.raises(ValueError, match="no cycle is left after a spin-up of 12 cycles"):
        skill.skill_numbers(ds, spinup_cycles=12)
    no_attr = ds.copy()
    del no_attr.attrs["spinup_cycles"]
    with pytest.raises(ValueError, match="pass spinup_cycles="):
        skill.skill_numbers(no_attr)


def parse_mean_std(cell: str) -> tuple[float, float, int]:
    """'152 ± 23' -> (152.0, 23.0, decimals shown)."""
    match = re.fullmatch(r"(-?\d+(?:\.(\d+))?) ± (\d+(?:\.\d+)?)", cell)
    assert match, cell
    return float(match.group(1)), float(match.group(3)), len(match.group(2) or "")


def test_skill_table_cells_are_rounded_mean_and_std(ds):
    table = skill.skill_table(ds)
    for row, (method, density) in enumerate(CELLS):
        if is_diverged(method, density):
            continue
        for channel, column_units, factor in (("z500", "m² s⁻²", 1.0), ("q700", "g kg⁻¹", 1e3),
                                               ("msl", "Pa", 1.0), ("t850", "K", 1.0)):
            for phase in PHASES:
                shown = table.loc[row, f"{channel} {phase} [{column_units}]"]
                mean, std, decimals = parse_mean_std(shown)
                values = factor * pooled(ds, method, density, channel, phase, SPINUP_CYCLES)
                half_unit = 0.5 * 10.0**-decimals + 1e-12
                assert abs(mean - values.mean()) <= half_unit
                assert abs(std - values.std(ddof=1)) <= half_unit
                # 3 significant digits of the mean (all integer digits when it is larger).
                digits = len(re.sub(r"\D", "", shown.split(" ± ")[0]).lstrip("0"))
                assert digits >= 3


def test_diverged_cell_shows_its_cycle(ds):
    numbers = skill.skill_numbers(ds)
    table = skill.skill_table(ds)
    row = CELLS.index((DIVERGED["method"], DIVERGED["density"]))
    skill_columns = table.columns[4:]
    assert set(table.loc[row, skill_columns]) == {f"diverged (cycle {DIVERGED['cycle']})"}
    assert numbers.loc[row, "status"] == "diverged"
    assert numbers.loc[row, "diverged_cycle"] == DIVERGED["cycle"]
    assert numbers.loc[row, "z500_analysis_mean":].isna().all()
    # The other density of the same method did not diverge and keeps its numbers.
    other = CELLS.index((DIVERGED["method"], 0.05))
    assert numbers.loc[other, "status"] == "ok"
    assert not any("diverged" in v for v in table.loc[other, skill_columns])


def test_headers_carry_units_in_headline_order(ds):
    columns = list(skill.skill_table(ds).columns)
    assert columns[:4] == ["method", "density", "obs columns", "spacing [km]"]
    assert columns[4:10] == ["z500 background [m² s⁻²]", "z500 analysis [m² s⁻²]",
                            "z500 analysis spread [m² s⁻²]", "t850 background [K]",
                            "t850 analysis [K]", "t850 analysis spread [K]"]
    assert "q700 analysis [g kg⁻¹]" in columns and "msl analysis [Pa]" in columns
    assert "u10 background [m s⁻¹]" in columns
    assert not any(c.startswith("v10") for c in columns)  # not a headline channel
    assert len(columns) == 4 + 3 * len(PRESENT)  # background, analysis, spread (an ensemble)


def test_missing_headline_channels_are_skipped_and_none_is_an_error(ds):
    fewer = ds.sel(channel=["u10", "z500", "v10"])
    assert selection.headline_channels(fewer) == ["z500", "u10"]
    with pytest.raises(ValueError, match="none of the channels z500"):
        skill.skill_table(ds.sel(channel=["v10"]))
    assert selection.headline_channels(ds, channels=("v10",)) == ["v10"]


def test_timing_median_p90_and_memory(ds):
    numbers = timing.timing_numbers(ds)
    for row, (method, density) in zip(numbers.itertuples(), CELLS, strict=True):
        seconds = select_cell(ds["analysis_seconds"], method, density).values
        seconds = seconds[np.isfinite(seconds)]
        assert row.n_analyses == (22 if is_diverged(method, density) else 24)
        assert row.median_seconds == pytest.approx(np.median(seconds), rel=1e-12)
        assert row.p90_seconds == pytest.approx(np.percentile(seconds, 90), rel=1e-12)
        peak = select_cell(ds["peak_memory_bytes"], method, density).values
        if method == "none":
            assert math.isnan(row.peak_memory_mib)
        else:
            assert row.peak_memory_mib == pytest.approx(np.nanmax(peak) / 2**20)
        assert row.device == DEVICE
    shown = timing.timing_table(ds)
    assert list(shown.columns) == ["method", "density", "obs columns", "spacing [km]",
                                   "analyses", "median time", "p90 time",
                                   "median forecast time", "peak memory [MiB]", "device"]
    assert shown.loc[0, "median time"].endswith(" ms")  # 3dvar: ~50 ms
    assert shown.loc[2, "median time"].endswith(" s")  # vaevar: ~2 s
    assert shown.loc[4, "median time"].endswith(" µs")  # none: ~0.1 ms
    assert shown.loc[4, "peak memory [MiB]"] == "n/a"


@pytest.mark.parametrize(("mean", "std", "text"), [
    (152.3, 23.4, "152 ± 23"), (0.41234, 0.0512, "0.412 ± 0.051"), (1234.5, 98.1, "1234 ± 98"),
    (1.7775, 0.4913, "1.78 ± 0.49"), (5.123e-4, 1.1e-4, "5.12e-04 ± 1.1e-04"),
    (float("nan"), float("nan"), "n/a"),
])
def test_format_mean_std(mean, std, text):
    assert formatting.format_mean_std(mean, std) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (2.134, "2.13 s"), (0.05123, "51.2 ms"), (9.37e-5, "93.7 µs"), (1234.0, "1234 s"),
    (float("nan"), "n/a"),
])
def test_format_seconds(seconds, text):
    assert formatting.format_seconds(seconds) == text


def test_units_spelling():
    assert formatting.pretty_units("m2 s-2") == "m² s⁻²"
    assert formatting.pretty_units("kg kg-1") == "kg kg⁻¹"
    assert formatting.pretty_units("K") == "K"
    assert formatting.pretty_units("m2 s-2", "latex") == "m$^{2}$ s$^{-2}$"
    assert formatting.latex_escape("3dvar_fast ± 5 µs & 10%") == (
        r"3dvar\_fast $\pm$ 5 $\mu$s \& 10\%")
    assert formatting.latex_escape("—") == "---"


def test_write_tables_files_and_formats(full, tmp_path):
    ds = full
    command = "python -m bench tables results/demo"
    paths = tables.write_tables(ds, tmp_path, command)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    stems = ("diagnostics", "forecast_impact", "paired", "paper_rmse_analysis",
             "paper_rmse_background", "skill", "timing")
    assert names == [f"tables/{s}.{e}" for s in stems for e in ("csv", "md", "tex")]
    assert not list((tmp_path / "tables").glob("*.tmp"))

    md = (tmp_path / "tables" / "skill.md").read_text()
    assert command in md and "z500 analysis [m² s⁻²]" in md
    assert "vaevar, density 0.01, seed 1: cycle 9" in md
    assert command in (tmp_path / "tables" / "timing.md").read_text()

    for stem in stems:
        tex = (tmp_path / "tables" / f"{stem}.tex").read_text()
        assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
        assert tex.split("\n", 1)[1].isascii(), stem  # pdflatex needs no unicode package
    skill_tex = (tmp_path / "tables" / "skill.tex").read_text()
    # z500 spans its background, analysis and analysis spread columns (the run has an ensemble)
    assert r"$\pm$" in skill_tex and r"\multicolumn{3}{c}{z500 [m$^{2}$ s$^{-2}$]}" in skill_tex
    assert r"\multicolumn{21}{c}{diverged (cycle 9)}" in skill_tex
    assert r"\begin{tabular}{llrr" + "r" * 21 + "}" in skill_tex

    csv = pd.read_csv(tmp_path / "tables" / "skill.csv", comment="#")
    numbers = skill.skill_numbers(ds)
    value_columns = [c for c in csv.columns if c.endswith(("_mean", "_std"))]
    assert len(value_columns) == 8 * len(PRESENT)  # RMSE and spread of both phases
    assert all(pd.api.types.is_float_dtype(csv[c]) for c in value_columns)
    np.testing.assert_array_equal(csv[value_columns].to_numpy(),
                                  numbers[value_columns].to_numpy())  # full precision
    assert "±" not in (tmp_path / "tables" / "skill.csv").read_text()
    assert "units: z500=m2 s-2" in (tmp_path / "tables" / "skill.csv").read_text()
    timing = pd.read_csv(tmp_path / "tables" / "timing.csv", comment="#")
    assert pd.api.types.is_float_dtype(timing["median_seconds"])


def test_latex_escapes_method_names(ds):
    renamed = ds.assign_coords(method=["3dvar_fast", "vae_var", "none", "letkf"])
    tex = skill.skill_latex(renamed)
    assert r"3dvar\_fast" in tex and "3dvar_fast" not in tex
    assert r"vae\_var" in timing.timing_latex(renamed)


def test_regenerated_tables_are_byte_identical(metrics_nc, tmp_path):
    """Every table, the new ones included, from metrics.nc twice and from memory."""
    command = "python -m bench tables results/demo"
    with xr.open_dataset(metrics_nc) as ds:
        paths = tables.write_tables(ds, tmp_path, command)
    assert len(paths) == 7 * 3
    first = {p: p.read_bytes() for p in paths}
    with xr.open_dataset(metrics_nc) as ds:
        again = tables.write_tables(ds, tmp_path, command)
    assert again == paths
    assert {p: p.read_bytes() for p in again} == first
    # ... and identical to tables made from the in-memory Dataset before it was saved.
    fresh = tables.write_tables(make_metrics(diagnostics=True), tmp_path / "fresh", command)
    assert [p.read_bytes() for p in fresh] == list(first.values())


def test_terminal_summary(ds):
    text = tables.format_skill_for_terminal(ds)
    assert "device: cpu (synthetic fixture)" in text
    assert "z500 [m² s⁻²]" in text and "q700 [g kg⁻¹]" in text
    assert "diverged (cycle 9)" in text
    numbers = skill.skill_numbers(ds)
    line = next(s for s in text.splitlines() if s.startswith("3dvar"))
    analysis = formatting.format_number(numbers.loc[0, "z500_analysis_mean"])
    background = formatting.format_number(numbers.loc[0, "z500_background_mean"])
    assert f"{analysis} ({background})" in line


def test_tables_show_each_densitys_observed_columns_and_spacing(full, tmp_path):
    """obs columns and spacing [km] next to the density: metrics.nc's coordinates, in the
    skill, timing and paper tables (md, csv, tex)."""
    for numbers in (skill.skill_numbers(full), timing.timing_numbers(full)):
        for row in numbers.itertuples():
            assert (row.obs_columns, row.obs_spacing_km) == REGIMES[row.density]
    shown = skill.skill_table(full)
    assert list(shown.loc[:1, "obs columns"]) == ["20", "102"]
    assert list(shown.loc[:1, "spacing [km]"]) == ["4861", "2153"]
    assert list(timing.timing_table(full).loc[:1, "spacing [km]"]) == ["4861", "2153"]
    tables.write_tables(full, tmp_path, "cmd")
    read = tmp_path / "tables"
    assert "| 3dvar    |      0.01 |            20 |           4861 |" in (
        read / "skill.md").read_text()
    assert "uniformly over grid points, not over area" in (read / "skill.md").read_text()
    assert "3dvar & 0.01 & 20 & 4861 &" in (read / "timing.tex").read_text()
    csv = pd.read_csv(read / "skill.csv", comment="#")
    assert list(csv["obs_spacing_km"][:2]) == [4861.4, 2152.7]
    paper_md = (read / "paper_rmse_analysis.md").read_text()
    assert "density 0.01: 20 columns, mean spacing 4861 km" in paper_md
    assert "density 0.01 (20 col., 4861 km)" in (read / "paper_rmse_analysis.tex").read_text()


def test_old_files_take_columns_and_spacing_from_their_worlds_grid(full):
    """A metrics.nc written before obs_columns: computed from the card's grid (32 x 64
    Gaussian: 0.01 -> 20 columns, 0.05 -> 102), and the notes say so."""
    old = full.drop_vars(["obs_columns", "obs_spacing_km"]).assign_attrs(
        world="heldsuarez-5.625")
    numbers = skill.skill_numbers(old)
    assert list(numbers["obs_columns"][:2]) == [20.0, 102.0]
    assert list(numbers["obs_spacing_km"][:2].round(1)) == [4861.4, 2152.7]
    assert "predates obs_columns and obs_spacing_km" in skill.skill_notes(old)
    assert "predates obs_columns" in timing.timing_notes(old)
