"""StateSpec: the one place that knows the channel layout of a state.

A state is ``C`` named channels on an ``H x W`` latitude-longitude grid. Channel names are the
variable's short name followed by the pressure level in hPa for upper-air fields (``z500``,
``q700``, ``u850``, ``t850``) or the bare short name for surface fields (``u10``, ``v10``,
``t2m``, ``msl``). Physical values are SI (z is geopotential in m² s⁻², not height).

Conventions (FengWu's grid order):
    lat: degrees north, running north -> south, shape (H,)
    lon: degrees east, running 0 -> 360 (exclusive), shape (W,)
    grid: "legendre-gauss" (Gaussian latitudes, no poles) or "equiangular" (poles included);
          spectral code needs it to choose the right quadrature.

Tensors inside methods and models are ``(C, H, W)`` or ``(B, C, H, W)`` float32 and *normalised*:
``x_norm = (x - mean) / std`` per channel. xarray lives only at the edges; the conversions here
carry dimension names explicitly and never guess them from shapes.

This module imports no other module of the suite (DESIGN.md §2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

GRID_TYPES = ("legendre-gauss", "equiangular")


def truncation(grid: str, nlat: int, nlon: int) -> tuple[int, int]:
    """(lmax, mmax): the triangular spherical-harmonic truncation a grid resolves.

    "legendre-gauss" (no poles, e.g. the built-in 32 × 64 world): lmax = nlat, an exact round
        trip for fields of total wavenumber l < nlat (T31 on 32 × 64, the nature run's own
        truncation).
    "equiangular" (ERA5, poles included): lmax = (nlat + 1) // 2 (the largest degree the
        Clenshaw–Curtis quadrature integrates exactly; a larger lmax aliases).
    mmax = min(lmax, nlon // 2 + 1): orders m ≤ l < lmax need no more.
    (torch-harmonics 0.9's defaults differ by grid: spectral code passes these explicitly.)
    """
    if grid == "legendre-gauss":
        lmax = nlat
    elif grid == "equiangular":
        lmax = (nlat + 1) // 2
    else:
        raise ValueError(f"no spherical-harmonic truncation for grid {grid!r}")
    return lmax, min(lmax, nlon // 2 + 1)

#: Pressure levels of FengWu (hPa), top to bottom.
FENGWU_LEVELS: tuple[int, ...] = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)

#: Surface variables: short name -> (units, long_name).
SURFACE_VARIABLES: dict[str, tuple[str, str]] = {
    "u10": ("m s-1", "10 metre u component of wind"),
    "v10": ("m s-1", "10 metre v component of wind"),
    "t2m": ("K", "2 metre temperature"),
    "msl": ("Pa", "mean sea level pressure"),
}

#: Upper-air variables: short name -> (units, long_name), in FengWu's order.
UPPER_AIR_VARIABLES: dict[str, tuple[str, str]] = {
    "z": ("m2 s-2", "geopotential"),
    "q": ("kg kg-1", "specific humidity"),
    "u": ("m s-1", "u component of wind"),
    "v": ("m s-1", "v component of wind"),
    "t": ("K", "temperature"),
}


def channel_names(
    surface: Sequence[str] = tuple(SURFACE_VARIABLES),
    upper_air: Sequence[str] = tuple(UPPER_AIR_VARIABLES),
    levels: Sequence[int] = FENGWU_LEVELS,
) -> tuple[str, ...]:
    """Channel names in FengWu's order: surface first, then each upper-air variable by level."""
    return tuple(surface) + tuple(f"{v}{lev}" for v in upper_air for lev in levels)


#: FengWu's 69 channels: u10, v10, t2m, msl, then z, q, u, v, t on the 13 levels.
FENGWU_CHANNELS: tuple[str, ...] = channel_names()


def floor_std_per_variable(names: Sequence[str], std: np.ndarray, fraction: float) -> np.ndarray:
    """std (C,) with each channel raised to at least ``fraction`` × the largest std of the same
    variable. Why: q at 50 hPa is nearly constant, and normalising by its tiny std would amplify
    round-off into O(1) noise."""
    out = np.array(std, dtype=np.float64)
    variables = [Channel.parse(n).variable for n in names]
    for var in set(variables):
        idx = [i for i, v in enumerate(variables) if v == var]
        out[idx] = np.maximum(out[idx], fraction * out[idx].max())
    return out


@dataclasses.dataclass(frozen=True)
class Channel:
    """One channel of a state.

    Attributes:
        name: e.g. "z500" or "t2m".
        variable: short variable name, e.g. "z" or "t2m".
        level: pressure level in hPa, or None for a surface field.
        units: SI units (CF/udunits spelling).
        long_name: CF-style long name.
    """

    name: str
    variable: str
    level: int | None
    units: str
    long_name: str

    @classmethod
    def parse(cls, name: str) -> Channel:
        """Build a channel from its name; raises ValueError for a name that is not understood."""
        if name in SURFACE_VARIABLES:
            units, long_name = SURFACE_VARIABLES[name]
            return cls(name, name, None, units, long_name)
        variable, digits = name[:1], name[1:]
        if variable in UPPER_AIR_VARIABLES and digits.isdigit():
            units, long_name = UPPER_AIR_VARIABLES[variable]
            level = int(digits)
            return cls(name, variable, level, units, f"{long_name} at {level} hPa")
        raise ValueError(
            f"channel name {name!r} is not understood: expected a surface field "
            f"{sorted(SURFACE_VARIABLES)} or an upper-air variable {sorted(UPPER_AIR_VARIABLES)} "
            f"followed by a pressure level in hPa, e.g. 'z500'"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class StateSpec:
    """Channels, grid and normalisation of the states of one world.

    Attributes:
        channels: ordered channels, length C.
        lat: latitudes in degrees north, north -> south, shape (H,).
        lon: longitudes in degrees east, 0 -> 360, shape (W,).
        grid: "legendre-gauss" or "equiangular" (see module docstring).
        mean: per-channel normalisation mean in physical units, shape (C,).
        std: per-channel normalisation standard deviation in physical units, shape (C,), > 0.
    """

    channels: tuple[Channel, ...]
    lat: np.ndarray
    lon: np.ndarray
    grid: str
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        c = len(self.channels)
        names = [ch.name for ch in self.channels]
        if len(set(names)) != c:
            raise ValueError(f"channel names must be unique, got duplicates in {names}")
        if self.grid not in GRID_TYPES:
            raise ValueError(f"grid {self.grid!r} is not one of {GRID_TYPES}")
        lat = np.asarray(self.lat, dtype=np.float64)
        lon = np.asarray(self.lon, dtype=np.float64)
        if lat.ndim != 1 or lon.ndim != 1:
            raise ValueError(f"lat and lon must be 1-D, got shapes {lat.shape} and {lon.shape}")
        if lat.size > 1 and not np.all(np.diff(lat) < 0):
            raise ValueError("lat must run north -> south (strictly decreasing); flip it first")
        if lon.size > 1 and not (np.all(np.diff(lon) > 0) and lon[0] >= 0 and lon[-1] < 360):
            raise ValueError("lon must increase within [0, 360); roll it first")
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(
                f"mean and std must have shape ({c},) for {c} channels, "
                f"got {mean.shape} and {std.shape}"
            )
        if not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise ValueError("normalisation mean must be finite and std strictly positive")
        for field, value in (("lat", lat), ("lon", lon), ("mean", mean), ("std", std)):
            value.setflags(write=False)
            object.__setattr__(self, field, value)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        names: Sequence[str],
        lat: np.ndarray,
        lon: np.ndarray,
        grid: str,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> StateSpec:
        """A spec from channel names; without statistics, mean 0 and std 1 (identity)."""
        channels = tuple(Channel.parse(n) for n in names)
        c = len(channels)
        mean = np.zeros(c) if mean is None else mean
        std = np.ones(c) if std is None else std
        return cls(channels, lat, lon, grid, mean, std)

    def with_statistics(self, mean: np.ndarray, std: np.ndarray) -> StateSpec:
        """The same layout with new normalisation statistics (physical units, shape (C,))."""
        return dataclasses.replace(self, mean=mean, std=std)

    def subset(self, names: Sequence[str]) -> StateSpec:
        """The spec of a subset of channels, statistics carried along, in the given order."""
        idx = self.indices(names)
        return StateSpec(
            tuple(self.channels[i] for i in idx), self.lat, self.lon, self.grid,
            self.mean[idx], self.std[idx],
        )

    # ----------------------------------------------------------------------------- queries
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(ch.name for ch in self.channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (len(self.channels), self.lat.size, self.lon.size)

    @property
    def truncation(self) -> tuple[int, int]:
        """(lmax, mmax) of the spherical harmonics this grid resolves (``truncation``)."""
        return truncation(self.grid, self.lat.size, self.lon.size)

    @property
    def levels(self) -> tuple[int, ...]:
        """Sorted distinct pressure levels (hPa) of the upper-air channels."""
        return tuple(sorted({ch.level for ch in self.channels if ch.level is not None}))

    def index(self, name: str) -> int:
        """Position of channel ``name``; a ValueError listing the valid names otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(
                f"unknown channel {name!r}; valid channels are: {', '.join(self.names)}"
            ) from None

    def indices(self, names: Sequence[str]) -> list[int]:
        return [self.index(n) for n in names]

    def variable_indices(self, variable: str) -> list[int]:
        """Indices of the channels of one variable, top level first (e.g. all 13 of "t")."""
        idx = [i for i, ch in enumerate(self.channels) if ch.variable == variable]
        if not idx:
            valid = sorted({ch.variable for ch in self.channels})
            raise ValueError(f"unknown variable {variable!r}; valid variables are: {valid}")
        return sorted(idx, key=lambda i: self.channels[i].level or 0)

    def latitude_weights(self) -> np.ndarray:
        """Cell-area weights (sin φ_{i+½} − sin φ_{i−½}) normalised to mean 1, shape (H,).

        Cell edges are midway between latitudes and at ±90° at the ends (WeatherBench2).
        """
        lat = self.lat
        edges = np.concatenate([[90.0], 0.5 * (lat[1:] + lat[:-1]), [-90.0]])
        w = np.abs(np.sin(np.deg2rad(edges[:-1])) - np.sin(np.deg2rad(edges[1:])))
        return w / w.mean()

    # ----------------------------------------------------------------------------- normalisation
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Physical -> normalised, channel axis at -3: (..., C, H, W)."""
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> physical, channel axis at -3: (..., C, H, W)."""
        mean, std = self._stats_like(x)
        return x * std + mean

    def _stats_like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_channels(x.shape[-3] if x.ndim >= 3 else -1, "tensor")
        # np.array(...) copies: the spec's arrays are read-only and torch warns on those
        mean = torch.as_tensor(np.array(self.mean), dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(np.array(self.std), dtype=x.dtype, device=x.device)[:, None, None]
        return mean, std

    def _check_channels(self, c: int, what: str) -> None:
        if c != len(self.channels):
            raise ValueError(
                f"{what} has {c} channels on axis -3, the spec has {len(self.channels)} "
                f"({self.names[0]} … {self.names[-1]})"
            )

    # ----------------------------------------------------------------------------- xarray edges
    def coords(self) -> dict[str, xr.DataArray]:
        return {
            "lat": xr.DataArray(self.lat, dims="lat", attrs={
                "units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"}),
            "lon": xr.DataArray(self.lon, dims="lon", attrs={
                "units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"}),
        }

    def to_dataset(
        self, x: torch.Tensor | np.ndarray, time: np.ndarray | None = None, normalised: bool = True
    ) -> xr.Dataset:
        """Tensor -> Dataset with one variable per channel, in physical units.

        Args:
            x: (C, H, W), or (T, C, H, W) when ``time`` (shape (T,)) is given.
            time: valid times (datetime64 or numbers); adds a leading ``time`` dimension.
            normalised: whether ``x`` is normalised (the default) or already physical.
        Returns:
            Dataset with variables named after the channels, dims ``([time,] lat, lon)``,
            float32, each with attrs ``units``, ``long_name`` and ``level_hPa`` when upper-air.
        """
        # np.array copies: a read-only array (zarr, JAX) would make torch warn
        t = torch.as_tensor(np.array(x) if isinstance(x, np.ndarray) else x)
        t = t.detach().to("cpu", torch.float64)
        if time is None and t.ndim != 3 or time is not None and t.ndim != 4:
            raise ValueError(
                f"expected (C, H, W) without time or (T, C, H, W) with time, got shape "
                f"{tuple(t.shape)} and time={'given' if time is not None else 'None'}"
            )
        if tuple(t.shape[-2:]) != self.shape[1:]:
            raise ValueError(
                f"grid {tuple(t.shape[-2:])} does not match the spec's {self.shape[1:]}")
        if normalised:
            t = self.denormalise(t)
        else:
            self._check_channels(t.shape[-3], "tensor")
        values = t.numpy().astype(np.float32)
        dims = ("lat", "lon") if time is None else ("time", "lat", "lon")
        coords = self.coords()
        if time is not None:
            coords["time"] = xr.DataArray(np.asarray(time), dims="time")
        data = {}
        for i, ch in enumerate(self.channels):
            attrs = {"units": ch.units, "long_name": ch.long_name}
            if ch.level is not None:
                attrs["level_hPa"] = ch.level
            data[ch.name] = xr.DataArray(values[..., i, :, :], dims=dims, attrs=attrs)
        return xr.Dataset(data, coords=coords, attrs={"grid": self.grid})

    def to_tensor(
        self, ds: xr.Dataset, normalised: bool = True, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Dataset (one variable per channel, physical units) -> tensor.

        Args:
            ds: variables named after the channels with dims ``(lat, lon)`` or
                ``(time, lat, lon)``; its lat/lon must equal the spec's.
        Returns:
            (C, H, W) or (T, C, H, W) tensor of ``dtype``, normalised unless ``normalised=False``.
        """
        missing = [n for n in self.names if n not in ds.data_vars]
        if missing:
            raise ValueError(
                f"dataset lacks channels {missing}; it has {sorted(ds.data_vars)}"
            )
        for name, ref in (("lat", self.lat), ("lon", self.lon)):
            if name not in ds.coords or not np.allclose(ds[name].values, ref, atol=1e-6):
                raise ValueError(
                    f"dataset {name} does not match the spec's grid ({ref.size} values from "
                    f"{ref[0]:.3f} to {ref[-1]:.3f}); regrid or flip it first"
                )
        time_dims = ("time",) if "time" in ds[self.names[0]].dims else ()
        order = (*time_dims, "lat", "lon")
        # One compute for all channels: stores that keep several channels in one chunk (all
        # levels of a variable, as WeatherBench2 does) then read each chunk once, not per channel.
        ds = ds[list(self.names)].compute()
        arrays = [ds[n].transpose(*order).values.astype(np.float64) for n in self.names]
        t = torch.from_numpy(np.stack(arrays, axis=-3))
        if normalised:
            t = self.normalise(t)
        return t.to(dtype)

    # ----------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-ready description (for config.json and caches)."""
        return {
            "channels": list(self.names),
            "lat": self.lat.tolist(),
            "lon": self.lon.tolist(),
            "grid": self.grid,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StateSpec:
        return cls.create(
            d["channels"], np.asarray(d["lat"]), np.asarray(d["lon"]), d["grid"],
            np.asarray(d["mean"]), np.asarray(d["std"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateSpec):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable-looking arrays inside: not hashable on purpose
