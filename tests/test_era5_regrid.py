"""WeatherBench2's grids on the reader (bench/worlds/era5_grid.py): the 5.625° store without poles
regridded to Gaussian latitudes (exact for band-limited fields, so spherical-harmonic transforms
round-trip), the 1.5° grid with poles as stored, bad grids refused in one line, and the 5.625°
world through `python -m bench run --model emulator` with the default comparison's methods."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.special import sph_harm_y
from wb2_store import SURFACE, UPPER_AIR

from bench.cli import main
from bench.worlds import load_world
from bench.worlds.era5 import ERA5Error
from bench.worlds.era5_grid import (
    apply_meridian_weights,
    gaussian_latitudes,
    meridian_weights,
    no_pole_latitudes,
    to_card_grid,
)
from methods.common.spectral import TriangularTruncation

LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
VECTORS = {"u_component_of_wind": "u", "v_component_of_wind": "v",
           "10m_u_component_of_wind": "u", "10m_v_component_of_wind": "v"}
#: the rotating pattern of the smooth store turns by this much per 6-hourly frame
OMEGA_DEG = 15.0
PERIODS = ["--train-period", "2018-01-01..2018-01-16", "--valid-period", "2018-01-16..2018-01-18",
           "--test-period", "2018-01-18..2018-01-23"]
N_TIMES = 88  # 2018-01-01 .. 2018-01-22 18:00: train 60 frames, valid 8, test 20


# ----------------------------------------------------------------------------- fields
def band_limited(lmax: int, lat, lon, seed: int = 0) -> np.ndarray:
    """A random real field Σ_{l ≤ lmax, m ≤ l} of spherical harmonics (scipy's, orthonormal) on
    the grid ``lat`` × ``lon`` (degrees): (H, W), of total wavenumber ≤ lmax exactly."""
    rng = np.random.default_rng(seed)
    theta = np.radians(90.0 - np.asarray(lat, dtype=np.float64))[:, None]
    phi = np.radians(np.asarray(lon, dtype=np.float64))[None, :]
    out = np.zeros((theta.size, phi.size))
    for l in range(lmax + 1):
        for m in range(l + 1):
            y = sph_harm_y(l, m, theta, phi)
            a, b = rng.standard_normal(2)
            out += a * y.real + (b * y.imag if m else 0.0)
    return out


def smooth(source: str, level: float, t, lat, lon):
    """The smooth store's field ``source`` at pressure ``level`` (0: surface), frame ``t``,
    lat/lon in degrees (broadcasting): scalars a base plus harmonics of degree ≤ 2 rotating
    eastward; winds a tilted solid-body rotation (a true vector field, l = 1) turning with them.
    All are exact on any grid the Fourier regridding serves (l < n)."""
    phi, lam = np.radians(lat), np.radians(lon)
    phase = lam - np.radians(OMEGA_DEG) * np.asarray(t)
    if source in VECTORS:
        speed, tilt = 10.0 + level / 100.0, np.radians(30.0)
        if VECTORS[source] == "u":
            return speed * (np.cos(tilt) * np.cos(phi) + np.sin(tilt) * np.sin(phi) * np.cos(phase))
        return -speed * np.sin(tilt) * np.sin(phase) + 0.0 * phi
    base, scale = {**UPPER_AIR, **SURFACE}[source]
    return base + scale * (level / 10.0 + 3 * np.sin(phi) + 2 * np.cos(phi) * np.cos(phase)
                           + np.sin(phi) * np.cos(phi) * np.sin(phase))


def smooth_store(path, lat, nlon: int = 64, n_times: int = 8, chunk: int = 4) -> None:
    """A WeatherBench2-schema zarr store of ``smooth`` fields at latitudes ``lat`` (stored as
    given), ``nlon`` longitudes from 0, dims (time, level, longitude, latitude) as in
    WeatherBench2's coarse stores, 6-hourly from 2018-01-01, float32, ``chunk`` frames a chunk."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.arange(nlon) * 360.0 / nlon
    t = np.arange(n_times)
    lev = np.array(LEVELS)
    data = {}
    for name in UPPER_AIR:
        values = smooth(name, lev[None, :, None, None], t[:, None, None, None],
                        lat[None, None, None, :], lon[None, None, :, None])
        data[name] = (("time", "level", "longitude", "latitude"), values.astype(np.float32))
    for name in SURFACE:
        values = smooth(name, 0.0, t[:, None, None], lat[None, None, :], lon[None, :, None])
        data[name] = (("time", "longitude", "latitude"), values.astype(np.float32))
    time = np.datetime64("2018-01-01T00:00", "ns") + t * np.timedelta64(6, "h")
    ds = xr.Dataset(data, coords={"time": time, "level": lev, "latitude": lat, "longitude": lon})
    ds.chunk({"time": chunk}).to_zarr(path, mode="w", zarr_format=2, consolidated=True)


def no_pole_world(path, **overrides):
    periods = {"train": "2018-01-01..2018-01-02", "valid": "2018-01-02..2018-01-02T12:00",
               "test": "2018-01-02T12:00..2018-01-03"}
    return load_world("era5-wb2-5.625", path=str(path), periods=periods, **overrides)


# ----------------------------------------------------------------------------- the regridding
def test_fourier_regridding_is_exact_for_band_limited_fields_and_catches_a_flip():
    n, lon = 32, np.arange(64) * 5.625
    same, cross = meridian_weights(n, gaussian_latitudes(n), "fourier")
    np.testing.assert_allclose(same.sum(1) + cross.sum(1), 1.0, atol=1e-13)
    field = band_limited(31, no_pole_latitudes(n), lon)  # T31: the Gaussian grid's own limit
    exact = band_limited(31, gaussian_latitudes(n), lon)
    got = apply_meridian_weights(field[None], same, cross, 1.0)[0]
    assert np.abs(got - exact).max() < 1e-11 * np.abs(exact).max()
    # the store's latitude order matters: the same values read south -> north are far off
    flipped = apply_meridian_weights(field[None, ::-1], same, cross, 1.0)[0]
    assert np.abs(flipped - exact).max() > 0.3 * np.abs(exact).max()


@pytest.mark.parametrize("lmax,bound", [(8, 4e-4), (16, 1.2e-2)])
def test_cubic_regridding_error_is_as_documented(lmax, bound):
    n, lon = 32, np.arange(64) * 5.625
    same, cross = meridian_weights(n, gaussian_latitudes(n), "cubic")
    for seed in range(3):
        exact = band_limited(lmax, gaussian_latitudes(n), lon, seed)
        got = apply_meridian_weights(band_limited(lmax, no_pole_latitudes(n), lon, seed)[None],
                                     same, cross, 1.0)[0]
        relative = np.sqrt(np.mean((got - exact) ** 2) / np.mean(exact**2))
        assert 1e-8 < relative < bound  # not exact (unlike "fourier"), but small


def test_sht_round_trip_on_the_regridded_grid():
    """T31 field on the no-pole grid -> regridded -> torch-harmonics analysis and synthesis on
    the Gaussian grid: the field on the Gaussian grid, to 1e-11 (the no-pole values taken as if
    they were on the Gaussian grid, unregridded, are off by ~10 %)."""
    n, lon = 32, np.arange(64) * 5.625
    field = band_limited(31, no_pole_latitudes(n), lon, seed=4)
    exact = band_limited(31, gaussian_latitudes(n), lon, seed=4)
    ds = xr.Dataset({"z500": (("time", "lat", "lon"), field[None])},
                    coords={"time": [0], "lat": no_pole_latitudes(n), "lon": lon})
    regridded = to_card_grid(ds, "legendre-gauss")
    np.testing.assert_allclose(regridded["lat"].values, gaussian_latitudes(n))
    x = torch.as_tensor(regridded["z500"].values, dtype=torch.float64)
    back = TriangularTruncation("legendre-gauss", n, 64).double()(x)[0].numpy()
    scale = np.abs(exact).max()
    assert np.abs(back - exact).max() < 1e-11 * scale
    unregridded = TriangularTruncation("legendre-gauss", n, 64).double()(
        torch.as_tensor(field[None]))[0].numpy()
    assert np.abs(unregridded - exact).max() > 0.05 * scale


def test_winds_change_sign_over_the_poles():
    """A tilted solid-body rotation (u, v smooth on the sphere, not as functions of latitude
    over the pole) is regridded exactly as a vector; the same values treated as a scalar are
    not (the circle over the pole would jump)."""
    n, lon = 32, np.arange(64) * 5.625
    lat = no_pole_latitudes(n)[:, None]
    gauss = gaussian_latitudes(n)[:, None]
    ds = xr.Dataset(
        {name: (("time", "lat", "lon"), smooth(source, 500, 0, lat, lon)[None])
         for name, source in (("u500", "u_component_of_wind"), ("v500", "v_component_of_wind"),
                              ("t500", "u_component_of_wind"))},  # t500: u's values, as a scalar
        coords={"time": [0], "lat": lat[:, 0], "lon": lon})
    out = to_card_grid(ds, "legendre-gauss")
    for name, source in (("u500", "u_component_of_wind"), ("v500", "v_component_of_wind")):
        np.testing.assert_allclose(out[name].values[0], smooth(source, 500, 0, gauss, lon),
                                   atol=1e-11)
    wrong = np.abs(out["t500"].values[0] - smooth("u_component_of_wind", 500, 0, gauss, lon))
    assert wrong.max() > 0.1


# ----------------------------------------------------------------------------- the reader
@pytest.fixture(scope="module")
def no_pole_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("wb2-5625") / "era5-64x32.zarr"
    smooth_store(path, no_pole_latitudes(32)[::-1])  # south -> north, as WeatherBench2's
    return path


def test_no_pole_store_opens_on_gaussian_latitudes(no_pole_store):
    world = no_pole_world(no_pole_store)

    def no_compute(*args, **kwargs):
        raise AssertionError("open() computed dask arrays")

    with dask.config.set(scheduler=no_compute):
        ds = world.open()
    assert ds.attrs["grid"] == "legendre-gauss" and "fourier" in ds.attrs["regridded_from"]
    assert ds.sizes == {"time": 8, "lat": 32, "lon": 64}
    np.testing.assert_allclose(ds["lat"].values, gaussian_latitudes(32), atol=1e-12)
    assert ds["lat"].values[0] == pytest.approx(85.7606, abs=1e-4)  # north first
    # read lazily, a chunk of the store's frames at a time (memory: one chunk)
    assert ds["z500"].data.chunks[0] == (4, 4) and ds["z500"].data.chunksize[1:] == (32, 64)
    lat, lon = ds["lat"].values[None, :, None], ds["lon"].values[None, None, :]
    t = np.arange(8)[:, None, None]
    for name, source, level in (("z500", "geopotential", 500), ("t850", "temperature", 850),
                                ("q700", "specific_humidity", 700), ("msl",
                                "mean_sea_level_pressure", 0), ("u250", "u_component_of_wind",
                                250), ("v10", "10m_v_component_of_wind", 0)):
        exact = smooth(source, level, t, lat, lon)
        # float32 storage: ~1e-7 of the values; the regridding adds round-off only
        np.testing.assert_allclose(ds[name].values, exact, rtol=0,
                                   atol=3e-7 * np.abs(exact).max(), err_msg=name)
    status = world.prepare(progress=False)
    assert "32x64 legendre-gauss grid" in status
    spec = world.spec
    assert spec.grid == "legendre-gauss" and spec.truncation == (32, 32)
    x = spec.to_tensor(world.period("test"))
    assert tuple(x.shape) == (2, 69, 32, 64) and torch.isfinite(x).all()


def test_gaussian_store_is_served_as_is(tmp_path):
    path = tmp_path / "gauss.zarr"
    smooth_store(path, gaussian_latitudes(32))
    ds = no_pole_world(path).open()
    assert "regridded_from" not in ds.attrs
    np.testing.assert_allclose(ds["lat"].values, gaussian_latitudes(32), atol=1e-12)


def test_one_and_a_half_degree_card_takes_the_poles_grid(tmp_path):
    """The 1.5° card serves an equiangular store with both poles as stored (a 13 × 24 stand-in
    for 121 × 240) and refuses one without the poles."""
    path = tmp_path / "poles.zarr"
    smooth_store(path, np.linspace(-90, 90, 13), nlon=24)
    periods = {"train": "2018-01-01..2018-01-02", "valid": "2018-01-02..2018-01-02T12:00",
               "test": "2018-01-02T12:00..2018-01-03"}
    world = load_world("era5-wb2-1.5", path=str(path), periods=periods)
    ds = world.open()
    assert ds.attrs["grid"] == "equiangular" and "regridded_from" not in ds.attrs
    np.testing.assert_allclose(ds["lat"].values, np.linspace(90, -90, 13))
    assert "13x24 equiangular grid" in world.prepare(progress=False)
    bad = tmp_path / "no-poles.zarr"
    smooth_store(bad, no_pole_latitudes(12), nlon=24)
    with pytest.raises(ERA5Error, match="era5-wb2-5.625"):
        load_world("era5-wb2-1.5", path=str(bad), periods=periods).open()


def test_sht_round_trip_on_the_one_and_a_half_degree_grid():
    """121 × 240 with poles: torch-harmonics' equiangular transforms with StateSpec's
    truncation (lmax 61) return a field of total wavenumber ≤ 60 to round-off."""
    lat, lon = np.linspace(90, -90, 121), np.arange(240) * 1.5
    rng = np.random.default_rng(0)
    theta, phi = np.radians(90 - lat)[:, None], np.radians(lon)[None, :]
    field = np.zeros((121, 240))
    pairs = [(60, 0), (60, 60), (59, 30)] + [(int(l), min(int(l), m)) for m, l in
                                              enumerate(rng.integers(0, 61, 20))]
    for l, m in pairs:
        field += rng.standard_normal() * sph_harm_y(l, m, theta, phi).real
    back = TriangularTruncation("equiangular", 121, 240).double()(torch.as_tensor(field))
    assert np.abs(back.numpy() - field).max() < 1e-9 * np.abs(field).max()


@pytest.mark.parametrize("card,lat,nlon,match", [
    ("era5-wb2-5.625", np.linspace(-90, 90, 33), 64, "era5-wb2-1.5 or era5-wb2"),
    ("era5-wb2-5.625", np.linspace(-80, 80, 32), 64, "latitudes run from 80.0000"),
    ("era5-wb2-5.625", no_pole_latitudes(32), 63, "even number of equally spaced longitudes"),
    ("era5-wb2", no_pole_latitudes(32), 64, "use --world era5-wb2-5.625"),
])
def test_bad_grids_are_one_line_exit_2(tmp_path, capsys, card, lat, nlon, match):
    path = tmp_path / "bad.zarr"
    smooth_store(path, lat, nlon=nlon, n_times=2, chunk=2)
    code = main(["prepare", "--world", card, "--era5-path", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and err.count("\n") == 0, err


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_no_pole_world_runs_the_default_comparison_with_the_emulator(tmp_path, isolated_cache,
                                                                    capsys):
    """An 8 × 16 no-pole store (the 5.625° card's grid rule at a size CI affords) through
    `run --world era5-wb2-5.625 --model emulator` with none, interp, 3dvar and vaevar (the README's
    default comparison), short training."""
    store = tmp_path / "era5-16x8.zarr"
    smooth_store(store, no_pole_latitudes(8)[::-1], nlon=16, n_times=N_TIMES, chunk=8)
    out = tmp_path / "run"
    code = main(["run", "--world", "era5-wb2-5.625", "--era5-path", str(store), *PERIODS,
                 "--model", "emulator", "--emulator-steps", "20",
                 "--methods", "none,interp,3dvar,vaevar", "--density", "0.2", "--days", "2",
                 "--first-lead", "12", "--spinup-cycles", "2", "--divergence-factor", "1000",
                 "--set", "vaevar.epochs=2", "--set", "vaevar.widths=[8,8,8]",
                 "--device", "cpu", "--threads", "1", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr()
    ds = xr.load_dataset(out / "metrics.nc")
    assert (ds["status"] == "ok").all(), ds["diverged_reason"].values
    assert set(ds["method"].values) == {"none", "interp", "3dvar", "vaevar"}
    assert ds.sizes["channel"] == 69 and np.isfinite(ds["rmse"].values).all()
    # observations were used: the channel-mean analysis error (in normalisation stds) is below
    # the background's (vaevar, trained for 2 epochs here, may do nothing)
    for name in ("interp", "3dvar"):
        cell = ds["rmse"].sel({"method": name, "density": 0.2, "seed": 0}) / ds["norm_std"]
        mean = cell.mean(["cycle", "channel"])
        assert mean.sel(phase="analysis") < 0.97 * mean.sel(phase="background"), name
    assert (out / "tables" / "skill.md").exists()
