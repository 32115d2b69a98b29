"""Tiny stores in WeatherBench2's ERA5 schema, with values known in closed form.

Every field is ``value(name, level, time index, lat, lon)`` (``expected`` below): a base per
variable plus terms linear in the level, the time index and the latitude and longitude in degrees,
so a flipped latitude, a shifted longitude, a wrong level or a wrong variable changes the value.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

#: WeatherBench2's 13 pressure levels (hPa) plus 10 hPa, which the reader must leave out.
LEVELS = (10, 50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
#: South -> north, as in WeatherBench2's 0.25° stores; both poles, as in ERA5.
LATS = (-90.0, -45.0, 0.0, 45.0, 90.0)
LONS = tuple(np.arange(8) * 45.0)
START = "2018-01-01T00:00"

#: WeatherBench2 name -> (base, scale): realistic magnitudes, all spreads > 0.
UPPER_AIR = {
    "geopotential": (5.0e4, 100.0),
    "specific_humidity": (1.0e-3, 1.0e-5),
    "u_component_of_wind": (5.0, 1.0),
    "v_component_of_wind": (-2.0, 0.5),
    "temperature": (200.0, 1.0),
}
SURFACE = {
    "10m_u_component_of_wind": (3.0, 1.0),
    "10m_v_component_of_wind": (-1.0, 0.5),
    "2m_temperature": (280.0, 1.0),
    "mean_sea_level_pressure": (1.0e5, 10.0),
}


def expected(name: str, level: float, t: int, lat, lon):
    """The field ``name`` at pressure ``level`` (0 for surface fields), time index ``t`` and
    latitude/longitude in degrees (lon taken modulo 360); broadcasts over array arguments."""
    base, scale = {**UPPER_AIR, **SURFACE}[name]
    lon = np.mod(lon, 360.0)
    return base + scale * (level / 10.0 + t + np.asarray(lat) / 100.0 + lon / 1000.0)


def make_dataset(
    n_times: int = 8,
    levels=LEVELS,
    drop: tuple[str, ...] = (),
    lon_from_minus_180: bool = False,
    start: str = START,
) -> xr.Dataset:
    """A WeatherBench2-schema Dataset: upper-air (time, level, latitude, longitude), surface
    (time, latitude, longitude), 6-hourly, float32, SI units; variables in ``drop`` left out."""
    time = np.datetime64(start, "ns") + np.arange(n_times) * np.timedelta64(6, "h")
    lat = np.array(LATS)
    lon = np.array(LONS)
    if lon_from_minus_180:
        lon = np.concatenate([lon[lon >= 180] - 360.0, lon[lon < 180]])
    lev = np.array(levels, dtype=np.int64)
    t = np.arange(n_times)
    data = {}
    for name in UPPER_AIR:  # broadcast to (time, level, latitude, longitude)
        values = expected(name, lev[None, :, None, None], t[:, None, None, None],
                          lat[None, None, :, None], lon[None, None, None, :])
        data[name] = (("time", "level", "latitude", "longitude"), values.astype(np.float32))
    for name in SURFACE:  # broadcast to (time, latitude, longitude)
        values = expected(name, 0.0, t[:, None, None], lat[None, :, None], lon[None, None, :])
        data[name] = (("time", "latitude", "longitude"), values.astype(np.float32))
    coords = {"time": time, "level": lev, "latitude": lat, "longitude": lon}
    return xr.Dataset({k: v for k, v in data.items() if k not in drop}, coords=coords)


def write_store(path: Path, fmt: str = "zarr", **kwargs) -> xr.Dataset:
    """Write ``make_dataset(**kwargs)`` to ``path`` as "zarr" (v2, consolidated, one frame per
    chunk, as WeatherBench2 does), "netcdf" (one file) or "netcdf-dir" (a folder of two files
    split along time). Returns the Dataset written."""
    ds = make_dataset(**kwargs)
    if fmt == "zarr":
        ds.chunk({"time": 1}).to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    elif fmt == "netcdf":
        ds.to_netcdf(path)
    elif fmt == "netcdf-dir":
        path.mkdir(parents=True)
        half = ds.sizes["time"] // 2
        ds.isel(time=slice(None, half)).to_netcdf(path / "part0.nc")
        ds.isel(time=slice(half, None)).to_netcdf(path / "part1.nc")
    else:
        raise ValueError(f"unknown fmt {fmt!r}; use 'zarr', 'netcdf' or 'netcdf-dir'")
    return ds


def tiny_era5_cards(directory: Path, store: Path) -> Path:
    """A cards folder whose era5-wb2 card has periods fitting ``write_store(store, n_times=44)``
    (train 16 frames, valid 8, test 20 from 2018-01-01, every frame): point
    ``ASSIMBENCH_DATASETS`` at it."""
    from bench.worlds import cards_dir

    text = (cards_dir() / "era5-wb2.toml").read_text()
    for name, start, end in (("train", "2018-01-01", "2018-01-05"),
                             ("valid", "2018-01-05", "2018-01-07"),
                             ("test", "2018-01-07", "2018-01-12")):
        text, n = re.subn(rf'(\[periods\.{name}\]\nstart = )"[^"]+"\nend = "[^"]+"',
                          rf'\1"{start}T00:00"\nend = "{end}T00:00"', text)
        assert n == 1, name
    text = re.sub(r"time_stride = \d+", "time_stride = 1", text)
    cards = directory / "cards"
    cards.mkdir()
    (cards / "era5-wb2.toml").write_text(text)
    return cards
