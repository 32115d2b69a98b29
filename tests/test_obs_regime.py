"""Observation regimes (bench/obs_regime.py): density ↔ observed columns ↔ mean spacing against
numbers worked out by hand on small grids; ``--columns`` and ``--spacing-km`` as the densities
they stand for, and their bad values as one line, exit code 2, nothing written or built."""

import json
import math

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.cli.flags import config_from_args
from bench.cli.parser import parse_command_line
from bench.config import RunConfig
from bench.obs_regime import (
    EARTH_RADIUS_KM,
    ObservationGrid,
    cell_areas_km2,
    columns_for_density,
    regimes,
)
from bench.observations import observe
from bench.state import StateSpec
from bench.validation import ConfigError

R = EARTH_RADIUS_KM


def config(*argv) -> RunConfig:
    return config_from_args(parse_command_line(list(argv)))


# ----------------------------------------------------------------------------- by hand
def test_two_rows_of_equal_cells_give_the_equal_area_spacing():
    """2 x 4 with poles: edges 90, 0, -90, so all 8 cells have area πR²/2 and the spacing of
    N columns is √(4πR²/N): 22585 km for one column, √(π/2) R = 7985 km for all 8."""
    grid = ObservationGrid.from_shape(2, 4, "equiangular")
    np.testing.assert_allclose(cell_areas_km2(grid.lat, 4), [math.pi * R**2 / 2] * 2)
    assert grid.spacing_km(1) == pytest.approx(math.sqrt(4 * math.pi) * R)
    assert grid.spacing_km(1) == pytest.approx(22584.6, abs=0.1)
    assert grid.spacing_km(8) == pytest.approx(math.sqrt(math.pi / 2) * R)
    assert grid.spacing_km(8) == pytest.approx(7984.9, abs=0.1)


def test_unequal_cells_average_the_local_spacing_over_grid_points():
    """3 x 4 with poles: edges 90, 45, -45, -90. A polar cell has area (πR²/2)(1 − √2/2),
    an equatorial one (πR²/2)√2; a column stands for 12/N cells of its own area, and every
    grid point is drawn alike, so spacing(N) = mean over the 12 points of √(a_p · 12 / N)."""
    grid = ObservationGrid.from_shape(3, 4, "equiangular")
    polar = math.pi * R**2 / 2 * (1 - math.sqrt(2) / 2)
    equator = math.pi * R**2 / 2 * math.sqrt(2)
    np.testing.assert_allclose(cell_areas_km2(grid.lat, 4), [polar, equator, polar])
    for n in (1, 3, 12):
        local = (8 * math.sqrt(polar * 12 / n) + 4 * math.sqrt(equator * 12 / n)) / 12
        assert grid.spacing_km(n) == pytest.approx(local, rel=1e-12)
    # the numbers: 12 columns 6046.1 km; below the equal-area 6519.6 km (Jensen: points
    # crowd into the small polar cells)
    assert grid.spacing_km(12) == pytest.approx(6046.1, abs=0.1)
    assert math.sqrt(4 * math.pi * R**2 / 12) == pytest.approx(6519.6, abs=0.1)
    # spacing -> columns is the inverse, to the nearest whole column within 1 … 12
    for n in range(1, 13):
        assert grid.columns_for_spacing(grid.spacing_km(n)) == n
    assert grid.columns_for_spacing(1.0) == 12 and grid.columns_for_spacing(1e6) == 1
    # density -> columns: the sampling's rule, round(d · 12), at least 1
    assert [columns_for_density(d, 12) for d in (0.01, 0.1, 0.3, 1.0)] == [1, 1, 4, 12]
    assert grid.density_for_columns(3) == 0.25
    assert regimes(grid, [0.3], "columns") == [
        {"density": 0.3, "columns": 4.0, "spacing_km": grid.spacing_km(4)}]
    # "elements": the equivalent whole columns, d · points
    assert regimes(grid, [0.3], "elements")[0]["columns"] == pytest.approx(3.6)


def test_the_built_in_grid():
    """32 x 64 Gaussian: the cells cover the sphere; 1 % is 20 columns, 4861 km apart."""
    grid = ObservationGrid.from_shape(32, 64, "legendre-gauss")
    assert cell_areas_km2(grid.lat, 64).sum() * 64 == pytest.approx(4 * math.pi * R**2)
    assert grid.points == 2048 and grid.columns(0.01) == 20.0
    assert grid.spacing_km(20) == pytest.approx(4861.4, abs=0.1)
    assert grid.spacing_range_km == pytest.approx((480.4, 21740.9), abs=0.1)


# ----------------------------------------------------------------------------- the CLI
def test_columns_and_spacing_are_the_densities_they_stand_for():
    by_columns = config("run", "--columns", "20,102")
    by_density = config("run", "--density", "0.009765625,0.0498046875")
    assert by_columns.densities == by_density.densities == (20 / 2048, 102 / 2048)
    assert by_columns.density_request.columns == (20, 102)
    # 700 km -> round((K / 700)²) = 965 columns; 2000 km -> 118
    by_spacing = config("run", "--spacing-km", "700,2000")
    assert by_spacing.densities == (965 / 2048, 118 / 2048)
    assert config("check", "--methods", "none", "--columns", "20").densities == (20 / 2048,)
    # a typed flag overrides a preset's densities
    assert config("run", "--preset", "quick", "--columns", "7").densities == (7 / 2048,)


def test_columns_draw_the_observations_of_the_equivalent_density():
    """The same cells, hence the same seeded draws (the seed includes the density)."""
    lat = ObservationGrid.from_shape(32, 64, "legendre-gauss").lat
    spec = StateSpec.create(["z500", "t850"], lat, np.arange(64) * 5.625, "legendre-gauss")
    truth = torch.randn(spec.shape, generator=torch.Generator().manual_seed(0))
    cells = [config("run", *flags) for flags in (("--columns", "20"),
                                                 ("--density", "0.009765625"))]
    drawn = [observe(truth, spec, c.cell_observations(c.densities[0], 1), cycle=3) for c in cells]
    assert drawn[0].flat_index.shape[0] == 2 * 20
    assert torch.equal(drawn[0].flat_index, drawn[1].flat_index)
    assert torch.equal(drawn[0].values, drawn[1].values)


def test_config_json_records_the_request_and_the_regimes():
    cfg = config("run", "--columns", "20")
    grid = ObservationGrid.from_shape(32, 64, "legendre-gauss")
    text = cfg.to_json(regimes(grid, cfg.densities))
    saved = json.loads(text)
    assert saved["density_request"] == {"columns": [20], "spacing_km": None}
    assert saved["densities"] == [20 / 2048]
    assert saved["observation_regimes"] == [
        {"density": 20 / 2048, "columns": 20.0, "spacing_km": grid.spacing_km(20)}]
    assert RunConfig.from_dict(saved) == cfg  # the regimes are derived, not settings
    # densities typed as such: config.json exactly as before the request existed
    assert "density_request" not in json.loads(RunConfig().to_json())


@pytest.mark.parametrize("argv,expected", [
    (["--columns", "0"], "--columns 0: expected whole numbers of observed columns >= 1"),
    (["--columns", "2049"], "--columns 2049: expected a number of observed columns from 1 to "
                            "2048 (every column of the 32x64 legendre-gauss grid)"),
    (["--columns", "2.5"], "--columns 2.5: expected an integer"),
    (["--columns", "20,20"], "--columns 20,20: expected a comma list of integers without "
                             "repeats"),
    (["--spacing-km", "400"], "--spacing-km 400: expected a mean spacing from 480 km (every "
                              "column of the 32x64 legendre-gauss grid observed)"),
    (["--spacing-km", "30000"], "--spacing-km 30000: expected a mean spacing from 480 km"),
    (["--spacing-km", "0"], "--spacing-km 0: expected spacings in km > 0"),
    (["--spacing-km", "21000,21500"], "both give 1 on the 32x64 legendre-gauss grid"),
    (["--columns", "20", "--density", "0.01"],
     "--density 0.01 and --columns 20: expected one of --density, --columns, --spacing-km"),
    (["--columns", "20", "--spacing-km", "700"],
     "--columns 20 and --spacing-km 700: expected one of"),
    (["--columns", "20", "--world", "mars"], "unknown world 'mars'"),
])
@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_requests_are_one_line_exit_2_and_nothing_is_made(tmp_path, capsys, isolated_cache,
                                                              command, argv, expected):
    out = tmp_path / "out"
    # an unknown method: a request that slipped through fails in preflight, not in a run
    assert main([command, "--out", str(out), "-q", "--methods", "nosuch", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err
    assert expected in err, err
    assert not out.exists() and not isolated_cache.exists()


def test_a_bad_request_in_a_config_json_names_its_field():
    with pytest.raises(ConfigError, match="density_request.spacing_km"):
        RunConfig.from_dict({"densities": [0.01], "density_request": {
            "columns": [20], "spacing_km": [700.0]}})
    with pytest.raises(ConfigError, match="one density per item"):
        RunConfig.from_dict({"densities": [0.01], "density_request": {"columns": [20, 30]}})


def test_metrics_record_each_densitys_columns_and_spacing(tmp_path):
    """scorer.merge puts the regimes on the density axis; they survive metrics.nc."""
    import xarray as xr

    from bench.report.selection import observation_regimes
    from bench.scorer import merge

    grid = ObservationGrid.from_shape(32, 64, "legendre-gauss")
    cells = {("m", d, 0): xr.Dataset({"rmse": ("cycle", [1.0, 2.0])}) for d in (0.01, 0.05)}
    ds = merge(cells, ["m"], [0.01, 0.05], [0], {}, regimes(grid, [0.01, 0.05]))
    ds.to_netcdf(tmp_path / "metrics.nc")
    with xr.open_dataset(tmp_path / "metrics.nc") as read:
        assert list(read["obs_columns"].values) == [20.0, 102.0]
        assert read["obs_spacing_km"].dims == ("density",)
        found, source = observation_regimes(read)
    assert source == "recorded"
    assert found[0.05] == (102.0, pytest.approx(grid.spacing_km(102)))
