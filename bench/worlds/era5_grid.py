"""WeatherBench2 grids onto the StateSpec's: orientation, the grid checks, and the regridding of
stores without poles onto the Gaussian grid the spectral code needs (bench/worlds/era5.py).

Grids a store may have, and what the reader does with each (``standard_grid`` checks, then
``to_card_grid`` regrids):

    card grid type    store latitudes (n of them)                      served as
    equiangular       90, …, −90 equally spaced (0.25°: 721; 1.5°: 121)  as stored
    legendre-gauss    the n Gauss–Legendre latitudes                   as stored
    legendre-gauss    90 − Δ/2, …, −90 + Δ/2, Δ = 180°/n (no poles;     regridded in latitude
                      WeatherBench2's 5.625° "64x32_equiangular")      onto the n Gaussian ones

Why regrid: torch-harmonics 0.9.3 has no quadrature for equally spaced latitudes without the
poles (its "equiangular" and "equiangular-trapezoidal" nodes include them), so spherical-harmonic
transforms (3DVar's B, the emulator's truncation) would be wrong there. On the Gaussian grid of
the same n they are exact to total wavenumber n − 1 (T31 for n = 32, the built-in world's grid).

How (``meridian_weights``): a meridian λ and its continuation λ + 180° over the poles form a
great circle. The no-pole latitudes sample it at 2n equally spaced points (spacing Δ, also across
each pole), so each column pair is one periodic sequence, interpolated at the Gaussian latitudes:

    "fourier" (default): the band-limited trigonometric interpolant (Trefethen, Spectral Methods
        in MATLAB, ch. 3), exact for any field of total wavenumber l ≤ n − 1 (its restriction to
        a great circle is a trigonometric polynomial of degree ≤ l < n): the regridded field is
        the field, up to round-off (measured ≤ 1e-13 relative for T31 fields at n = 32;
        tests/test_era5_regrid.py asserts 1e-11).
    "cubic": scipy's periodic CubicSpline on the same circle, local (less ringing near sharp
        features of real data, e.g. t2m at coastlines), not exact: relative RMS error at n = 32
        below 4e-4 for l ≤ 8, 1e-2 for l ≤ 16, up to 0.7 for the zonal l = 31 harmonic.

No latitude is extrapolated: the outermost Gaussian latitude (±85.76° at n = 32) lies inside the
outermost stored one (±87.19°), and the circle carries the values across the pole. Vector
components (u, v, u10, v10) change sign there (the local east and north vectors at λ + 180° are
minus those at λ), so their λ + 180° half enters with a minus sign. Longitudes are unchanged (the
circle needs λ + 180° to be a column: an even number of equally spaced longitudes).

Regridding is done on read, lazily (dask ``map_blocks`` over the store's time chunks; two
(n × n) matrix products per frame and channel), not cached: it costs far less than reading the
frame, and memory stays one chunk of frames.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.interpolate import CubicSpline

from bench.state import Channel
from bench.worlds.era5 import FIX_HINT, ERA5Error

REGRID_METHODS = ("fourier", "cubic")
#: Channels' variables whose values are components of a vector (east, north): they change sign
#: when the meridian circle crosses a pole.
VECTOR_VARIABLES = frozenset({"u", "v", "u10", "v10"})
#: Latitude tolerance (degrees) for recognising a grid: stores write float32 or rounded decimals.
LAT_TOL_DEG = 1e-4


def gaussian_latitudes(nlat: int) -> np.ndarray:
    """The Gauss–Legendre latitudes (nlat,) in degrees, north -> south (torch-harmonics'
    "legendre-gauss" nodes; at 32: ±85.761°, …, ±2.769°)."""
    nodes, _ = np.polynomial.legendre.leggauss(nlat)
    return np.degrees(np.arcsin(-nodes))


def no_pole_latitudes(nlat: int) -> np.ndarray:
    """Equally spaced latitudes without the poles, (nlat,) degrees north -> south: cell centres
    90 − Δ/2, …, −90 + Δ/2, Δ = 180/nlat (WeatherBench2's 64x32: ±87.1875°, …, ±2.8125°)."""
    step = 180.0 / nlat
    return 90.0 - step / 2 - step * np.arange(nlat)


def _same(lat: np.ndarray, ref: np.ndarray) -> bool:
    return lat.shape == ref.shape and bool(np.allclose(lat, ref, rtol=0, atol=LAT_TOL_DEG))


def standard_grid(src: xr.Dataset, grid: str) -> xr.Dataset:
    """Rename latitude/longitude to lat/lon, flip lat to north -> south, roll lon to 0 -> 360.

    All index operations, so the data stay lazy. Raises ERA5Error (one line) for latitudes the
    card's grid type cannot take (module docstring's table): "equiangular" needs both poles;
    "legendre-gauss" needs the Gaussian latitudes or equally spaced ones without the poles (then
    also an even number of equally spaced longitudes, for ``to_card_grid``).
    """
    names = {"latitude": "lat", "longitude": "lon"}
    src = src.rename({k: v for k, v in names.items() if k in src.dims})
    for dim in ("time", "lat", "lon"):
        if dim not in src.dims:
            raise ERA5Error(f"the ERA5 store has no {dim!r} dimension (dims: {dict(src.sizes)})")
    lat = src["lat"].values
    if lat.size > 1 and lat[0] < lat[-1]:
        src = src.isel(lat=slice(None, None, -1))
        lat = lat[::-1]
    lon = src["lon"].values % 360.0
    if lon.size > 1 and not np.all(np.diff(lon) > 0):
        # a -180..180 store: rotate so that 0° comes first; roll reads two contiguous slices,
        # where sortby would gather the columns one by one
        shift = -int(np.argmin(lon))
        src = src.roll(lon=shift, roll_coords=True)
        lon = np.roll(lon, shift)
    src = src.assign_coords(lon=lon)
    span = f"the store's {lat.size} latitudes run from {lat[0]:.4f} to {lat[-1]:.4f}"
    if grid == "equiangular":
        if not _same(lat, np.linspace(90.0, -90.0, lat.size)):
            hint = (" (equally spaced without the poles: WeatherBench2's 64x32 store; use "
                    "--world era5-wb2-5.625, which regrids it to Gaussian latitudes)"
                    if _same(lat, no_pole_latitudes(lat.size)) else "")
            raise ERA5Error(
                f"the card says grid 'equiangular' (regular latitudes including both poles), but "
                f"{span}{hint}; use a 0.25° store or a WeatherBench2 "
                f"'..._equiangular_with_poles_...' store")
    elif grid == "legendre-gauss":
        gaussian = _same(lat, gaussian_latitudes(lat.size))
        if not (gaussian or _same(lat, no_pole_latitudes(lat.size))):
            raise ERA5Error(
                f"the card says grid 'legendre-gauss', which takes Gaussian latitudes or equally "
                f"spaced ones without the poles (WeatherBench2's '64x32_equiangular' store: "
                f"±87.1875 … ±2.8125), but {span}; use --world era5-wb2-1.5 or era5-wb2 for a "
                f"store with the poles, or {FIX_HINT}")
        if not gaussian:
            step = 360.0 / lon.size
            if lon.size % 2 or not np.allclose(lon, lon[0] + step * np.arange(lon.size),
                                               rtol=0, atol=LAT_TOL_DEG):
                raise ERA5Error(
                    f"regridding to Gaussian latitudes needs an even number of equally spaced "
                    f"longitudes (λ + 180° must be a column), but the store has {lon.size} "
                    f"from {lon[0]:.4f} to {lon[-1]:.4f}; {FIX_HINT}")
    else:
        raise ERA5Error(f"unknown grid type {grid!r} on the card; use 'equiangular' or "
                        f"'legendre-gauss'")
    return src


def meridian_weights(nlat: int, target_lat: np.ndarray, method: str = "fourier"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation weights from the ``nlat`` no-pole latitudes to ``target_lat`` (module
    docstring): value at (target i, λ) = Σ_r same[i, r] f(r, λ) + s · Σ_r cross[i, r]
    f(r, λ + 180°), s = −1 for vector components, +1 otherwise.

    Args:
        nlat: n, the stored latitudes ``no_pole_latitudes(n)`` (north -> south).
        target_lat: (H',) degrees, inside ±(90 − Δ/2).
        method: "fourier" or "cubic".
    Returns:
        same, cross: (H', n) float64 each; each row of same + cross sums to 1.
    """
    if method not in REGRID_METHODS:
        raise ERA5Error(f"unknown regrid method {method!r} on the card's [grid] regrid; valid: "
                        f"{', '.join(REGRID_METHODS)}")
    step = np.pi / nlat
    # angle along the circle from the north pole: λ half s_k = Δ/2 + kΔ (k < n, = colatitude of
    # row k); λ + 180° half continues over the south pole (k ≥ n, row 2n − 1 − k)
    samples = step / 2 + step * np.arange(2 * nlat)
    target = np.radians(90.0 - np.asarray(target_lat, dtype=np.float64))
    if method == "fourier":
        # S(x) = sin(πx/Δ) / ((2π/Δ) tan(x/2)), S(0) = 1: the periodic band-limited interpolant
        # of 2n equally spaced samples (Nyquist term split evenly), Trefethen (2000) eq. 3.5
        x = target[:, None] - samples[None, :]
        small = np.abs(np.sin(x / 2)) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.sin(np.pi * x / step) / ((2 * np.pi / step) * np.tan(x / 2))
        weights[small] = 1.0  # x = 0: the target is a sample
    else:
        eye = np.eye(2 * nlat)
        closed = np.concatenate([samples, [samples[0] + 2 * np.pi]])
        spline = CubicSpline(closed, np.concatenate([eye, eye[:1]]), bc_type="periodic")
        weights = spline(target)
    return weights[:, :nlat], weights[:, nlat:][:, ::-1]


def gaussian_to_no_pole_weights(nlat: int, sign: float = 1.0, method: str = "fourier"
                                ) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of the regridding, for writing synthetic stores in WeatherBench2's no-pole
    layout from Gaussian-grid fields (the built-in world's): weights (same, cross), (n, n) each,
    with ``sign`` already in ``cross`` (apply with sign +1).

    The regridding maps the 2n values of a meridian circle (columns λ and λ + 180°) on one
    latitude set to the 2n on the other; that 2n × 2n map is inverted (condition number 2.4 at
    n = 32, "fourier"), so regridding the result gives back the Gaussian-grid field to
    round-off, and for fields of total wavenumber < n ("fourier") the values are the field's own
    at the no-pole latitudes."""
    same, cross = meridian_weights(nlat, gaussian_latitudes(nlat), method)
    inverse = np.linalg.inv(np.block([[same, sign * cross], [sign * cross, same]]))
    return inverse[:nlat, :nlat], inverse[:nlat, nlat:]


def apply_meridian_weights(block: np.ndarray, same: np.ndarray, cross: np.ndarray,
                           sign: float) -> np.ndarray:
    """(T, n, W) -> (T, H', W): ``meridian_weights`` (or their inverse) on a block of frames,
    computed in float64, returned in the block's dtype."""
    x = block.astype(np.float64)
    opposite = np.roll(x, x.shape[-1] // 2, axis=-1)  # column j holds λ_j + 180°
    out = np.einsum("ir,trw->tiw", same, x) + sign * np.einsum("ir,trw->tiw", cross, opposite)
    return out.astype(block.dtype)


def to_card_grid(ds: xr.Dataset, grid: str, method: str = "fourier") -> xr.Dataset:
    """``ds`` (the state layout: one variable per channel, dims (time, lat, lon), checked by
    ``standard_grid``) on the card's grid: unchanged unless the card is "legendre-gauss" and the
    latitudes are not Gaussian, else every channel regridded lazily onto
    ``gaussian_latitudes(n)`` (module docstring), attrs kept, ``attrs["regridded_from"]`` saying
    from what."""
    lat = ds["lat"].values
    if grid != "legendre-gauss" or _same(lat, gaussian_latitudes(lat.size)):
        return ds
    n = lat.size
    target = gaussian_latitudes(n)
    same, cross = meridian_weights(n, target, method)
    out = {}
    for name, var in ds.data_vars.items():
        data = var.data
        if not hasattr(data, "map_blocks"):  # numpy-backed (a test's in-memory dataset)
            import dask.array

            data = dask.array.from_array(data, chunks=(1, -1, -1))
        # whole (lat, lon) planes per block; time chunks as stored (memory: one chunk)
        data = data.rechunk({1: -1, 2: -1})
        sign = -1.0 if Channel.parse(name).variable in VECTOR_VARIABLES else 1.0
        regridded = data.map_blocks(apply_meridian_weights, same, cross, sign, dtype=data.dtype,
                                    chunks=(data.chunks[0], (target.size,), data.chunks[2]))
        out[name] = xr.DataArray(regridded, dims=var.dims, attrs=var.attrs)
    coords = {"time": ds["time"], "lat": xr.DataArray(target, dims="lat", attrs=ds["lat"].attrs),
              "lon": ds["lon"]}
    attrs = {**ds.attrs, "regridded_from": (
        f"{n} equally spaced latitudes without the poles, ±{abs(lat[0]):.4f}° … "
        f"±{abs(lat[n // 2]):.4f}°, by {method} interpolation along meridian circles")}
    return xr.Dataset(out, coords=coords, attrs=attrs)
