"""Write the built-in world (heldsuarez-5.625) as a WeatherBench2 5.625° store without poles
(default) or a 1.5° store with both poles (``--grid 1.5``).

    python results/era5-5.625-synthetic/make_store.py OUT.zarr
    python results/era5-5.625-synthetic/make_store.py --grid 1.5 --start 2001-11-01 \
        --end 2002-02-10 OUT-1.5.zarr

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

``--grid 1.5``: the layout of WeatherBench2's ``1959-2023_01_10-6h-240x121_equiangular_with_poles_
conservative.zarr`` (121 latitudes −90 … 90 south -> north, 240 longitudes 0 … 358.5). Each field
is the nature run's T31 spectral expansion (torch-harmonics' SHT on the Gaussian grid) evaluated
on that grid, so it carries no scales finer than the built-in world's; u and v are expanded as
scalars, which keeps their T31 part away from the poles but not their exact pole values (a
synthetic store for running the methods at 1.5°, not a test of the reader's vector handling).
7.7 MB a frame: ``--start``/``--end`` write a window of the run (ISO dates, end excluded).
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
EQUIANGULAR_1P5 = (121, 240)  # WeatherBench2's 1.5° grid, both poles


def _to_no_pole(n: int, lon: np.ndarray):
    """(time, lat, lon) on n Gaussian latitudes -> n no-pole latitudes (north -> south), per
    variable: the inverse of the reader's regridding; those latitudes south -> north; ``lon``."""
    weights = {s: gaussian_to_no_pole_weights(n, sign=s) for s in (1.0, -1.0)}

    def regrid(values: np.ndarray, variable: str) -> np.ndarray:
        same, cross = weights[-1.0 if variable in VECTOR_VARIABLES else 1.0]
        return apply_meridian_weights(values, same, cross, 1.0)

    return regrid, no_pole_latitudes(n)[::-1], lon


def _to_equiangular_1p5(n: int, nlon: int):
    """(time, lat, lon) on the n×nlon Gaussian grid -> 121×240 with poles (north -> south) by the
    T(n − 1) spectral expansion; those latitudes south -> north; and the new longitudes."""
    import torch
    import torch_harmonics as th

    nlat_out, nlon_out = EQUIANGULAR_1P5
    forward = th.RealSHT(n, nlon, grid="legendre-gauss").double()
    inverse = th.InverseRealSHT(nlat_out, nlon_out, lmax=forward.lmax, mmax=forward.mmax,
                                grid="equiangular").double()

    def regrid(values: np.ndarray, variable: str) -> np.ndarray:
        return inverse(forward(torch.from_numpy(values))).numpy()

    return regrid, np.linspace(-90.0, 90.0, nlat_out), np.arange(nlon_out) * 1.5


def regridder(world_ds: xr.Dataset, grid: str):
    """(regrid(values, variable), latitudes south -> north, longitudes) from the world's
    Gaussian grid to ``grid``'s, built once per store (module docstring)."""
    n = world_ds.sizes["lat"]
    if not np.allclose(world_ds["lat"].values, gaussian_latitudes(n), atol=1e-6):
        raise SystemExit("the world is not on Gaussian latitudes")
    if grid == "5.625":
        return _to_no_pole(n, world_ds["lon"].values)
    return _to_equiangular_1p5(n, world_ds.sizes["lon"])


def wb2_frames(world_ds: xr.Dataset, target) -> xr.Dataset:
    """One block of frames of the built-in world -> the WeatherBench2 layout on ``target``
    (``regridder``'s triple)."""
    regrid, lat, lon = target
    grouped: dict[str, dict[int | None, np.ndarray]] = {}
    for name in world_ds.data_vars:
        ch = Channel.parse(name)
        values = regrid(world_ds[name].values.astype(np.float64), ch.variable)
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
              "longitude": lon, "latitude": lat}
    return xr.Dataset(data, coords=coords)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the zarr store to write (replaced)")
    parser.add_argument("--grid", choices=("5.625", "1.5"), default="5.625")
    parser.add_argument("--start", help="first valid time written (ISO; default: the run's)")
    parser.add_argument("--end", help="valid time the store ends before (ISO; default: none)")
    args = parser.parse_args()
    ds = load_world("heldsuarez-5.625").open()
    if args.start or args.end:
        end = np.datetime64(args.end) - np.timedelta64(1, "s") if args.end else None
        ds = ds.sel(time=slice(args.start, end))
    total = ds.sizes["time"]
    target = regridder(ds, args.grid)
    for start in range(0, total, CHUNK):
        block = wb2_frames(ds.isel(time=slice(start, start + CHUNK)).load(), target)
        if start == 0:
            block.chunk({"time": CHUNK}).to_zarr(args.out, mode="w", zarr_format=2,
                                                 consolidated=True)
        else:
            block.to_zarr(args.out, append_dim="time", zarr_format=2, consolidated=True)
        print(f"{min(start + CHUNK, total)}/{total} frames", end="\r", flush=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
