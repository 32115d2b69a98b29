"""Write the built-in world (heldsuarez-5.625) as a WeatherBench2 5.625° store without poles.

    python results/era5-5.625-synthetic/make_store.py OUT.zarr

The layout is that of WeatherBench2's ``1959-2023_01_10-6h-64x32_equiangular_conservative.zarr``:
variables ``geopotential``, ``specific_humidity``, ``u_component_of_wind``,
``v_component_of_wind``, ``temperature`` with dims (time, level, longitude, latitude), level in hPa
(the 13 of FengWu), and ``10m_u_component_of_wind``, ``10m_v_component_of_wind``,
``2m_temperature``, ``mean_sea_level_pressure`` with dims (time, longitude, latitude); 32
latitudes −87.1875 … 87.1875 (south -> north, no poles), 64 longitudes 0 … 354.375; float32, SI.

Values: each Gaussian-grid frame of the nature run mapped to the no-pole latitudes by the inverse
of the reader's regridding (bench/worlds/era5_grid.py, ``gaussian_to_no_pole_weights``; vector
components with their sign over the poles), so ``--world era5-wb2-5.625`` reads the nature run
back to float32 round-off, and the T31 part of every field is its exact value at the no-pole
latitudes. Times are the nature run's (2001-01-01 … 2002-03-31 18:00, 6-hourly; perpetual
equinox, so the dates are labels). The built-in world must exist (``python -m bench prepare``).
Written in chunks of 40 frames (memory: ~23 MB per chunk and variable group).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from bench.state import Channel
from bench.worlds import load_world
from bench.worlds.era5 import SOURCE_NAMES
from bench.worlds.era5_grid import (
    VECTOR_VARIABLES,
    apply_meridian_weights,
    gaussian_latitudes,
    gaussian_to_no_pole_weights,
    no_pole_latitudes,
)

CHUNK = 40


def wb2_frames(world_ds: xr.Dataset) -> xr.Dataset:
    """One block of frames of the built-in world -> the WeatherBench2 layout (module docstring)."""
    n = world_ds.sizes["lat"]
    if not np.allclose(world_ds["lat"].values, gaussian_latitudes(n), atol=1e-6):
        raise SystemExit("the world is not on Gaussian latitudes")
    weights = {s: gaussian_to_no_pole_weights(n, sign=s) for s in (1.0, -1.0)}
    lat = no_pole_latitudes(n)[::-1]  # south -> north, as WeatherBench2 stores it
    grouped: dict[str, dict[int | None, np.ndarray]] = {}
    for name in world_ds.data_vars:
        ch = Channel.parse(name)
        same, cross = weights[-1.0 if ch.variable in VECTOR_VARIABLES else 1.0]
        values = apply_meridian_weights(world_ds[name].values.astype(np.float64), same, cross, 1.0)
        # (time, lat north->south, lon) -> (time, lon, lat south->north)
        grouped.setdefault(SOURCE_NAMES[ch.variable], {})[ch.level] = (
            values[:, ::-1, :].transpose(0, 2, 1).astype(np.float32))
    data = {}
    levels = None
    for source, by_level in grouped.items():
        if None in by_level:
            data[source] = (("time", "longitude", "latitude"), by_level[None])
        else:
            levels = sorted(by_level)
            data[source] = (("time", "level", "longitude", "latitude"),
                            np.stack([by_level[lev] for lev in levels], axis=1))
    coords = {"time": world_ds["time"].values, "level": np.array(levels, dtype=np.int64),
              "longitude": world_ds["lon"].values, "latitude": lat}
    return xr.Dataset(data, coords=coords)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the zarr store to write (replaced)")
    args = parser.parse_args()
    ds = load_world("heldsuarez-5.625").open()
    total = ds.sizes["time"]
    for start in range(0, total, CHUNK):
        block = wb2_frames(ds.isel(time=slice(start, start + CHUNK)).load())
        if start == 0:
            block.chunk({"time": CHUNK}).to_zarr(args.out, mode="w", zarr_format=2,
                                                 consolidated=True)
        else:
            block.to_zarr(args.out, append_dim="time", zarr_format=2, consolidated=True)
        print(f"{min(start + CHUNK, total)}/{total} frames", end="\r", flush=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
