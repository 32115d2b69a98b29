"""ERA5World on tiny WeatherBench2-schema stores (tests/wb2_store.py), values known exactly."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import wb2_store
from wb2_store import expected

from bench.state import FENGWU_CHANNELS, StateSpec
from bench.worlds import cards_dir, load_world
from bench.worlds.era5 import ENV_VAR, ERA5Error, ERA5PathError, ERA5World

SOURCE = {"t": "temperature", "z": "geopotential", "q": "specific_humidity",
          "u": "u_component_of_wind", "v": "v_component_of_wind"}
SURFACE = {"u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind",
           "t2m": "2m_temperature", "msl": "mean_sea_level_pressure"}


def tiny_card(**periods) -> dict:
    """The shipped card with periods over the tiny store's 8 frames (2018-01-01 00 h, 6-hourly):
    train = frames 0-3, valid = 4-5, test = 6-7; statistics from every 2nd training frame."""
    with (cards_dir() / "era5-wb2.toml").open("rb") as f:
        card = tomllib.load(f)
    card = copy.deepcopy(card)
    card["periods"] = {
        "train": {"start": "2018-01-01T00:00", "end": "2018-01-02T00:00"},
        "valid": {"start": "2018-01-02T00:00", "end": "2018-01-02T12:00"},
        "test": {"start": "2018-01-02T12:00", "end": "2018-01-03T00:00"},
        **periods,
    }
    card["stats"] = {"time_stride": 2, "max_times": 0, "std_floor_fraction": 0.01}
    return card



@pytest.fixture(scope="module")
def zarr_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wb2") / "era5.zarr"
    wb2_store.write_store(path)
    return path


@pytest.fixture
def world(zarr_store) -> ERA5World:
    return ERA5World("era5-wb2", tiny_card(), path=str(zarr_store))


def field(name: str, ds, t) -> np.ndarray:
    """Closed-form value of channel ``name`` on ``ds``'s grid at time indices ``t``: (T, H, W)."""
    lat = ds["lat"].values[None, :, None]
    lon = ds["lon"].values[None, None, :]
    t = np.asarray(t)[:, None, None]
    if name in SURFACE:
        return expected(SURFACE[name], 0.0, t, lat, lon)
    return expected(SOURCE[name[0]], float(name[1:]), t, lat, lon)


# ----------------------------------------------------------------------------- layout and values
def test_channels_values_and_grid(world, zarr_store):
    ds = world.open()
    assert list(ds.data_vars) == list(FENGWU_CHANNELS)  # the 10 hPa level is left out
    assert ds.sizes == {"time": 8, "lat": 5, "lon": 8}
    np.testing.assert_array_equal(ds["lat"].values, [90.0, 45.0, 0.0, -45.0, -90.0])
    np.testing.assert_array_equal(ds["lon"].values, np.arange(8) * 45.0)
    for name in FENGWU_CHANNELS:
        assert ds[name].dims == ("time", "lat", "lon")
        assert ds[name].dtype == np.float32
        np.testing.assert_allclose(ds[name].values, field(name, ds, range(8)), rtol=1e-6)
    # the same mapping, checked against the store itself rather than the formula
    src = wb2_store.make_dataset()
    t850 = src["temperature"].sel(level=850).values[:, ::-1, :]  # south->north flipped
    np.testing.assert_array_equal(ds["t850"].values, t850)
    assert ds["t850"].sel(lat=90.0, lon=45.0).values[0] == pytest.approx(200 + 85 + 0.9 + 0.045)


def test_attrs_match_state_spec(world):
    ds = world.open()
    ref = world.layout.to_dataset(np.zeros(world.layout.shape), normalised=False)
    assert ds.attrs["grid"] == "equiangular"
    for name in ("u10", "msl", "z500", "q700", "t850"):
        assert ds[name].attrs == ref[name].attrs
    for coord in ("lat", "lon"):
        assert ds[coord].attrs == ref[coord].attrs


def test_open_is_lazy(world):
    def no_compute(*args, **kwargs):
        raise AssertionError("open() computed dask arrays")

    with dask.config.set(scheduler=no_compute):
        ds = world.open()
        assert all(isinstance(ds[n].data, da.Array) for n in ds.data_vars)
        with pytest.raises(AssertionError, match="computed"):  # the guard is really in place
            ds["t850"].load()
    # one frame of one channel is one dask chunk: a 0.25° store is read frame by frame
    assert ds["t850"].data.chunksize == (1, 5, 8)


@pytest.mark.parametrize("fmt", ["netcdf", "netcdf-dir"])
def test_netcdf_matches_zarr(world, tmp_path, fmt):
    path = tmp_path / ("era5.nc" if fmt == "netcdf" else "era5-nc")
    wb2_store.write_store(path, fmt=fmt)
    ds = ERA5World("era5-wb2", tiny_card(), path=str(path)).open()
    assert isinstance(ds["z500"].data, da.Array)
    ref = world.open()
    for name in ("u10", "msl", "z500", "q50", "t850"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values)


def test_lon_minus_180_is_rolled_to_0_360(world, tmp_path):
    path = tmp_path / "era5.zarr"
    src = wb2_store.write_store(path, lon_from_minus_180=True)
    assert src["longitude"].values[0] == -180.0
    ds = ERA5World("era5-wb2", tiny_card(), path=str(path)).open()
    np.testing.assert_array_equal(ds["lon"].values, np.arange(8) * 45.0)
    ref = world.open()
    for name in ("u10", "v850", "t1000"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values)


def test_lon_lat_dim_order_and_url_store(world, tmp_path):
    # coarse WeatherBench2 stores hold (time, level, longitude, latitude)
    src = wb2_store.make_dataset().transpose("time", "level", "longitude", "latitude")
    path = tmp_path / "era5.zarr"
    src.to_zarr(path, zarr_format=2, consolidated=True)
    url = "memory://test-era5/era5.zarr"  # a URL goes straight to zarr (gs:// alike)
    src.chunk({"time": 1}).to_zarr(url, zarr_format=2, consolidated=True, mode="w")
    ref = world.open()
    for store in (str(path), url):
        ds = ERA5World("era5-wb2", tiny_card(), path=store).open()
        assert ds["t850"].dims == ("time", "lat", "lon")
        np.testing.assert_array_equal(ds["t850"].values, ref["t850"].values)
        np.testing.assert_array_equal(ds["t2m"].values, ref["t2m"].values)


def test_channel_subset_from_card(tmp_path):
    path = tmp_path / "era5.zarr"
    wb2_store.write_store(path, drop=("specific_humidity",))  # not needed by the subset
    card = tiny_card()
    card["channels"] = {"names": ["t850", "z500", "u10"]}
    world = ERA5World("era5-wb2", card, path=str(path))
    ds = world.open()
    assert list(ds.data_vars) == ["t850", "z500", "u10"]
    assert world.spec.names == ("t850", "z500", "u10")
    np.testing.assert_allclose(ds["z500"].values, field("z500", ds, range(8)), rtol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_missing_variable_is_named(tmp_path):
    path = tmp_path / "era5.zarr"
    wb2_store.write_store(path, drop=("temperature",))
    world = ERA5World("era5-wb2", tiny_card(), path=str(path))
    with pytest.raises(ERA5Error) as err:
        world.prepare()
    message = str(err.value)
    assert "lacks the variable(s) temperature" in message
    assert "t850" in message and "geopotential" in message  # what it needs, what it has
    assert "--era5-path" in message


def test_missing_level_is_named(tmp_path):
    path = tmp_path / "era5.zarr"
    wb2_store.write_store(path, levels=tuple(lev for lev in wb2_store.LEVELS if lev != 850))
    with pytest.raises(ERA5Error, match=r"lacks the pressure level\(s\) \[850\] hPa") as err:
        ERA5World("era5-wb2", tiny_card(), path=str(path)).open()
    message = str(err.value)
    assert "z850" in message and "t850" in message and "925" in message
    assert "--era5-path" in message and "has level 850" in message


def test_missing_path(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    absent = tmp_path / "nowhere.zarr"
    with pytest.raises(ERA5PathError) as err:
        ERA5World("era5-wb2", tiny_card(), path=str(absent)).prepare()
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    message = str(err.value)
    assert str(absent) in message and "--era5-path" in message and "[source]" in message
    # nothing configured at all (the shipped card has path = "")
    with pytest.raises(ERA5PathError, match="no ERA5 store is configured.*--era5-path"):
        ERA5World("era5-wb2", tiny_card()).open()


def test_store_without_poles_is_refused(tmp_path):
    path = tmp_path / "era5.zarr"
    wb2_store.make_dataset().isel(latitude=slice(1, -1)).to_zarr(path, zarr_format=2)
    with pytest.raises(ERA5Error, match="with_poles"):
        ERA5World("era5-wb2", tiny_card(), path=str(path)).open()


def test_path_precedence(zarr_store, tmp_path, monkeypatch):
    card = tiny_card()
    card["source"]["path"] = str(tmp_path / "from-card.zarr")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert ERA5World("era5-wb2", card).path == str(tmp_path / "from-card.zarr")
    monkeypatch.setenv(ENV_VAR, str(zarr_store))
    world = ERA5World("era5-wb2", card)
    assert world.path == str(zarr_store)
    assert world.open().sizes["time"] == 8
    assert ERA5World("era5-wb2", card, path="/explicit").path == "/explicit"


# ----------------------------------------------------------------------------- periods
def test_periods_select_and_prepare(world):
    status = world.prepare(progress=False)
    assert "valid" in status and "69 channels" in status and "5x8" in status
    test = world.period("test")
    np.testing.assert_array_equal(
        test["time"].values,
        np.datetime64("2018-01-02T12:00", "ns") + np.arange(2) * np.timedelta64(6, "h"),
    )
    np.testing.assert_allclose(test["t850"].values, field("t850", test, [6, 7]), rtol=1e-6)
    assert world.period("train").sizes["time"] == 4
    assert world.period("valid").sizes["time"] == 2


def test_period_outside_store_is_refused(zarr_store):
    card = tiny_card(test={"start": "2018-01-02T12:00", "end": "2018-01-03T06:00"})
    with pytest.raises(ERA5Error, match=r"the test period .* not inside the ERA5 store"):
        ERA5World("era5-wb2", card, path=str(zarr_store)).prepare()


# ----------------------------------------------------------------------------- spec and statistics
def test_statistics_from_strided_training_frames(world):
    assert world.stats_times().tolist() == [0, 2]
    spec = world.spec
    assert spec is world.spec  # cached on the instance
    assert np.all(np.isfinite(spec.mean)) and np.all(spec.std > 0)
    ds = world.open()
    for name in ("t850", "msl", "q1000"):
        values = field(name, ds, [0, 2])
        i = spec.index(name)
        assert spec.mean[i] == pytest.approx(values.mean(), rel=1e-6)
        assert spec.std[i] == pytest.approx(values.std(), rel=1e-4)


def test_stats_max_times_spreads_frames(zarr_store):
    card = tiny_card()
    card["stats"] = {"time_stride": 1, "max_times": 3}
    world = ERA5World("era5-wb2", card, path=str(zarr_store))
    assert world.stats_times().tolist() == [0, 2, 3]  # evenly over frames 0..3, not the first 3


def test_fengwu_statistics_files(zarr_store, tmp_path):
    np.save(tmp_path / "data_mean.npy", np.arange(69.0))
    np.save(tmp_path / "data_std.npy", np.arange(69.0) + 1.0)
    spec = ERA5World("era5-wb2", tiny_card(), path=str(zarr_store), stats_path=str(tmp_path)).spec
    np.testing.assert_array_equal(spec.mean, np.arange(69.0))
    np.testing.assert_array_equal(spec.std, np.arange(69.0) + 1.0)


def test_to_tensor_round_trip(world):
    spec = world.spec
    frame = world.open().isel(time=0)
    x = spec.to_tensor(frame)
    assert tuple(x.shape) == (69, 5, 8)
    i = spec.index("t850")
    expected_t850 = (frame["t850"].values - spec.mean[i]) / spec.std[i]
    np.testing.assert_allclose(x[i].numpy(), expected_t850, rtol=1e-5, atol=1e-5)
    back = spec.to_dataset(x)
    for name in spec.names:
        np.testing.assert_allclose(back[name].values, frame[name].values, rtol=1e-6)
    assert isinstance(StateSpec.from_dict(spec.to_dict()), StateSpec)


# ----------------------------------------------------------------------------- registry
def test_load_world_through_registry(zarr_store):
    world = load_world("era5-wb2", path=str(zarr_store))
    assert isinstance(world, ERA5World) and world.name == "era5-wb2"
    assert world.channel_names == FENGWU_CHANNELS and world.grid == "equiangular"
    assert world.periods["train"].start == np.datetime64("1979-01-01T00:00", "ns")
    ds = world.open()
    np.testing.assert_allclose(ds["q700"].values, field("q700", ds, range(8)), rtol=1e-6)
    # the shipped periods (1979-2018) are not in the tiny store, and prepare says so
    with pytest.raises(ERA5Error, match="the train period"):
        world.prepare()
