"""A synthetic 0.25° ERA5 store in WeatherBench2's layout, written frame by frame (memory: a frame).

    python make_store.py OUT_DIR [START] [N_FRAMES]

Writes OUT_DIR/store.zarr (zarr v2, consolidated, chunks time=1 with all levels / the whole grid,
as WeatherBench2's 0.25° "wb13" stores), OUT_DIR/data_mean.npy and OUT_DIR/data_std.npy
(FengWu's channel order, (69,), physical units; per-channel mean/std of the first frame).

Fields: a latitude profile per variable and level with realistic magnitudes, plus a few smooth
waves (zonal wavenumbers 1-8, meridional structure cos^m(lat) sin(n lat)) travelling east at a
few degrees a day, so every channel varies smoothly in space and time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

LEVELS = np.array([50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000])
NLAT, NLON = 721, 1440
LAT = np.linspace(-90.0, 90.0, NLAT)  # south -> north, as WeatherBench2's 0.25° stores
LON = np.arange(NLON) * 0.25
UPPER = ("geopotential", "specific_humidity", "u_component_of_wind", "v_component_of_wind",
         "temperature")
SURFACE = ("10m_u_component_of_wind", "10m_v_component_of_wind", "2m_temperature",
           "mean_sea_level_pressure")
#: (zonal wavenumber m, meridional n, eastward phase speed in degrees/day, relative amplitude)
WAVES = ((1, 1, 2.0, 0.6), (3, 2, 6.0, 0.5), (5, 3, 10.0, 0.4), (8, 2, 14.0, 0.3))

phi = np.deg2rad(LAT)[:, None]
lam = np.deg2rad(LON)[None, :]
coslat, sinlat = np.cos(phi), np.sin(phi)


def height_m(p):
    """Standard-atmosphere height (m) of pressure level p (hPa), roughly."""
    return 44330.0 * (1.0 - (p / 1013.25) ** 0.1903)


def profile(name: str, p: float):
    """(mean field (H, 1), wave amplitude) of variable ``name`` at level ``p`` (0: surface)."""
    s = p / 1000.0
    if name == "geopotential":
        return 9.80665 * height_m(p) - 6.0e3 * (1.0 - s * 0.6) * sinlat**2 * (1 + 0 * coslat), \
            300.0 + 1200.0 * (1.0 - s)
    if name == "temperature":
        t0 = max(288.0 - 6.5e-3 * height_m(p), 216.0)
        return t0 + 15.0 * s - 35.0 * s * sinlat**2, 2.0 + 3.0 * s
    if name == "specific_humidity":
        q = 0.018 * np.exp(-(1000.0 - p) / 120.0) * coslat**2 + 2.5e-6
        return q, 0.15 * np.exp(-(1000.0 - p) / 120.0) * 0.01
    if name == "u_component_of_wind":
        return (5.0 + 30.0 * (1.0 - abs(s - 0.25))) * np.sin(2 * phi) ** 2 - 3.0 * coslat**8, \
            4.0 + 6.0 * (1.0 - s)
    if name == "v_component_of_wind":
        return 0.5 * np.sin(2 * phi) * (1 + 0 * coslat), 2.0 + 4.0 * (1.0 - s)
    if name == "10m_u_component_of_wind":
        return 6.0 * np.sin(2 * phi) ** 2 - 4.0 * coslat**8, 3.0
    if name == "10m_v_component_of_wind":
        return 0.3 * np.sin(2 * phi), 2.0
    if name == "2m_temperature":
        return 300.0 - 50.0 * sinlat**2, 4.0
    if name == "mean_sea_level_pressure":
        return 101325.0 - 800.0 * np.cos(3 * phi) ** 2 * coslat, 900.0
    raise KeyError(name)


def field(name: str, p: float, t_hours: float, salt: int) -> np.ndarray:
    """(H, W) float32: the profile plus travelling waves; ``salt`` shifts phases per channel."""
    mean, amp = profile(name, p)
    out = np.broadcast_to(mean, (NLAT, NLON)).astype(np.float64).copy()
    days = t_hours / 24.0
    for k, (m, n, speed, rel) in enumerate(WAVES):
        # waves vanish at the poles (coslat**m), so the fields are smooth on the sphere
        merid = coslat**m * np.cos(n * phi + 0.3 * salt)
        phase = m * (lam - np.deg2rad(speed * days) + 0.7 * k + 0.13 * salt)
        out += amp * rel * merid * np.cos(phase)
    if name == "specific_humidity":
        np.maximum(out, 1.0e-7, out=out)
    return out.astype(np.float32)


def frame(t_hours: float) -> dict[str, np.ndarray]:
    data = {}
    for i, name in enumerate(UPPER):
        data[name] = np.stack([field(name, p, t_hours, 13 * i + j) for j, p in enumerate(LEVELS)])
    for i, name in enumerate(SURFACE):
        data[name] = field(name, 0.0, t_hours, 100 + i)
    return data


def main(out: Path, start: str = "2018-01-01T00:00", n: int = 21) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store.zarr"
    time_ = np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(6, "h")
    import dask.array as da

    coords = {"time": time_, "level": LEVELS.astype(np.int64), "latitude": LAT, "longitude": LON}
    template = {}
    for name in UPPER:
        template[name] = (("time", "level", "latitude", "longitude"),
                          da.zeros((n, 13, NLAT, NLON), np.float32,
                                   chunks=(1, 13, NLAT, NLON)))
    for name in SURFACE:
        template[name] = (("time", "latitude", "longitude"),
                          da.zeros((n, NLAT, NLON), np.float32, chunks=(1, NLAT, NLON)))
    xr.Dataset(template, coords=coords).to_zarr(store, mode="w", zarr_format=2,
                                                consolidated=True, compute=False)
    t0 = time.perf_counter()
    for k in range(n):
        data = frame(6.0 * k)
        ds = xr.Dataset(
            {name: (("time", "level", "latitude", "longitude") if v.ndim == 3 else
                    ("time", "latitude", "longitude"), v[None]) for name, v in data.items()})
        ds.to_zarr(store, region={"time": slice(k, k + 1)}, zarr_format=2)
        if k == 0:  # FengWu's statistics files, in FengWu's channel order
            mean, std = [], []
            for name in ("10m_u_component_of_wind", "10m_v_component_of_wind",
                         "2m_temperature", "mean_sea_level_pressure"):
                mean.append(data[name].mean(dtype=np.float64))
                std.append(data[name].std(dtype=np.float64))
            for name in UPPER:
                for j in range(13):
                    mean.append(data[name][j].mean(dtype=np.float64))
                    std.append(data[name][j].std(dtype=np.float64))
            np.save(out / "data_mean.npy", np.array(mean))
            np.save(out / "data_std.npy", np.array(std))
        print(f"frame {k + 1}/{n} {str(time_[k])[:16]} {time.perf_counter() - t0:.0f} s",
              flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]), *(args[1:2] or []), *(int(a) for a in args[2:3]))
