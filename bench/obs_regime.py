"""Observation regimes: density ↔ observed columns ↔ mean spacing on a world's grid.

A run's ``--density`` d is a fraction of grid points. Papers state their observation networks
as a number of columns N and a spacing ("1,000 columns, ~700 km apart"), so the tables, the
config.json and the CLI (``--columns``, ``--spacing-km``) convert between the three here.

Columns. "columns" sampling (bench/observations.py) observes N = max(1, round(d · H · W))
grid points per cycle, all observed channels at each (``columns_for_density``: the one rule,
used by the sampling too). "elements" sampling observes round(d · C' · H · W) (channel, point)
elements; its column count is the equivalent number of whole columns, elements / C' (≈ d · H · W).

Spacing. The columns are drawn **uniformly over grid points, not over area**: on a regular
latitude–longitude grid a grid cell near the pole is much smaller than one at the equator
(cos φ), so the drawn columns are denser there and sparser at the equator than N points spread
evenly. The spacing reported is the expected mean *local* spacing of the drawn columns: a
column at grid point p stands for the H·W / N grid cells around it, each of p's area a_p, so
its local spacing is √(a_p · H·W / N); averaged over the drawn columns (each grid point equally
likely) that is

    spacing(N) = K / √N,   K = √(H·W) · mean_p √a_p        [km]

with a_p the area of p's cell on a sphere of radius R = 6371 km, cell edges midway between
latitudes and at ±90° (the RMSE's latitude weights, bench/state.StateSpec.latitude_weights).
It is an exact expectation over the draw (the same for every seed and cycle), a property of
the grid and N only. For points spread evenly over the sphere (all a_p equal) it is the
equal-area spacing √(4πR² / N) that papers quote (VAE-Var's 1,000 columns: 714 km); the
uniform-over-grid-points draw makes it 3.7 % smaller on the 32 × 64 Gaussian grid and 4.5 %
on the 0.25° grid. It is not a nearest-neighbour distance: N random points have nearest
neighbours about half as far apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bench.validation import check, check_list, is_int, is_number

#: Mean Earth radius [km].
EARTH_RADIUS_KM = 6371.0


@dataclasses.dataclass(frozen=True)
class DensityRequest:
    """Densities asked for as observed columns or as a spacing instead of a fraction of grid
    points (``--columns``, ``--spacing-km``); kept in config.json next to the densities they
    became (bench/obs_regime.py converts them on the world's grid before anything is built).

    Attributes:
        columns: observed columns per cycle, each >= 1 (None: not asked this way).
        spacing_km: mean spacings of the observed columns [km], each > 0 (None: not asked).
    """

    columns: tuple[int, ...] | None = None
    spacing_km: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.columns is not None:
            check_list("columns", self.columns, lambda n: is_int(n) and n >= 1,
                       "whole numbers of observed columns >= 1, e.g. 20,100")
            object.__setattr__(self, "columns", tuple(int(n) for n in self.columns))
        if self.spacing_km is not None:
            check_list("spacing_km", self.spacing_km, lambda d: is_number(d) and d > 0,
                       "spacings in km > 0, e.g. 700,200")
            object.__setattr__(self, "spacing_km", tuple(float(d) for d in self.spacing_km))
        check("spacing_km", self.spacing_km, self.columns is None or self.spacing_km is None,
              "one way of asking for densities, not both columns and spacing_km",
              {"columns": self.columns})

    @property
    def asked(self) -> bool:
        return self.columns is not None or self.spacing_km is not None



def columns_for_density(density: float, points: int) -> int:
    """Columns "columns" sampling observes at ``density`` on a grid of ``points`` points: the
    nearest integer to density · points, at least 1."""
    return max(1, round(density * points))


def grid_latitudes(nlat: int, grid: str) -> np.ndarray:
    """Latitudes (nlat,) in degrees, north → south: Gauss–Legendre nodes ("legendre-gauss",
    no poles) or equally spaced with both poles ("equiangular")."""
    if grid == "equiangular":
        return np.linspace(90.0, -90.0, nlat)
    if grid == "legendre-gauss":
        nodes, _ = np.polynomial.legendre.leggauss(nlat)
        return np.degrees(np.arcsin(-nodes))
    raise ValueError(f"unknown grid type {grid!r}; valid: legendre-gauss, equiangular")


def cell_areas_km2(lat: np.ndarray, nlon: int) -> np.ndarray:
    """Area of one grid cell in each latitude row, (H,) km², for latitudes ``lat`` (degrees,
    north → south): edges midway between latitudes and at ±90°; the rows sum to 4πR² / nlon."""
    lat = np.asarray(lat, dtype=np.float64)
    edges = np.radians(np.concatenate([[90.0], 0.5 * (lat[1:] + lat[:-1]), [-90.0]]))
    band = np.abs(np.sin(edges[:-1]) - np.sin(edges[1:]))  # (H,), sums to 2
    return 2.0 * math.pi * EARTH_RADIUS_KM**2 * band / nlon


@dataclasses.dataclass(frozen=True)
class ObservationGrid:
    """A grid's observation geometry.

    Attributes:
        lat: latitudes (H,) in degrees, north → south.
        nlon: longitudes W (equally spaced).
        name: how messages name the grid, e.g. "the 32x64 legendre-gauss grid".
    """

    lat: np.ndarray
    nlon: int
    name: str = "the grid"

    @classmethod
    def from_shape(cls, nlat: int, nlon: int, grid: str) -> ObservationGrid:
        return cls(grid_latitudes(nlat, grid), int(nlon), f"the {nlat}x{nlon} {grid} grid")

    @property
    def points(self) -> int:
        """H · W, the number of columns of the grid."""
        return int(np.asarray(self.lat).size * self.nlon)

    @property
    def scale_km(self) -> float:
        """K of the module docstring [km]: spacing(N) = K / √N."""
        return math.sqrt(self.points) * float(np.sqrt(cell_areas_km2(self.lat, self.nlon)).mean())

    def spacing_km(self, columns: float) -> float:
        """Expected mean local spacing of ``columns`` columns drawn uniformly over grid points
        [km] (module docstring)."""
        return self.scale_km / math.sqrt(columns)

    def columns(self, density: float, sampling: str = "columns") -> float:
        """Observed columns per cycle at ``density``: the integer count of "columns" sampling,
        the equivalent d · H · W of "elements" sampling (elements / observed channels, as
        float: for C' channels it is round(d · C' · H · W) / C')."""
        if sampling == "columns":
            return float(columns_for_density(density, self.points))
        return float(density * self.points)

    def density_for_columns(self, columns: int) -> float:
        """The density that observes exactly ``columns`` columns: columns / (H · W)."""
        return columns / self.points

    def columns_for_spacing(self, spacing_km: float) -> int:
        """The whole number of columns whose spacing is nearest ``spacing_km``, in 1 … H·W."""
        return int(min(self.points, max(1, round((self.scale_km / spacing_km) ** 2))))

    @property
    def spacing_range_km(self) -> tuple[float, float]:
        """(every column observed, one column observed): the spacings a grid can have [km]."""
        return self.spacing_km(self.points), self.spacing_km(1)


def resolve_densities(grid: ObservationGrid, columns=None, spacing_km=None,
                      field_prefix: str = "density_request") -> tuple[float, ...]:
    """Densities from a list of column counts or of spacings [km] on ``grid``.

    Raises ConfigError naming ``<field_prefix>.columns`` / ``.spacing_km`` (no prefix: "") and
    the value for a count outside 1 … H·W, a spacing outside the grid's range (below the
    spacing with every column observed, above one column's) or two items giving the same
    number of columns.
    """
    if columns:
        field, values = ".".join(filter(None, (field_prefix, "columns"))), tuple(columns)
        for n in values:
            check(field, n, 1 <= n <= grid.points,
                  f"a number of observed columns from 1 to {grid.points} (every column of "
                  f"{grid.name}); use --density for a fraction")
        counts = values
    else:
        field, values = ".".join(filter(None, (field_prefix, "spacing_km"))), tuple(spacing_km)
        low, high = grid.spacing_range_km
        for d in values:
            check(field, d, low <= d <= high,
                  f"a mean spacing from {low:.0f} km (every column of {grid.name} observed) to "
                  f"{high:.0f} km (one column)")
        counts = tuple(grid.columns_for_spacing(d) for d in values)
    for i, n in enumerate(counts):
        check(field, values, n not in counts[:i],
              f"values that give different numbers of columns ({values[counts.index(n)]!r} "
              f"and {values[i]!r} both give {n} on {grid.name})")
    return tuple(grid.density_for_columns(n) for n in counts)


def regimes(grid: ObservationGrid, densities, sampling: str = "columns") -> list[dict]:
    """Per density its observed columns and mean spacing on ``grid``: a list of
    {"density": d, "columns": N, "spacing_km": spacing(N)} (config.json's
    ``observation_regimes``; metrics.nc's ``obs_columns`` and ``obs_spacing_km``)."""
    out = []
    for d in densities:
        n = grid.columns(float(d), sampling)
        out.append({"density": float(d), "columns": n, "spacing_km": grid.spacing_km(n)})
    return out
