"""Great-circle neighbours on the sphere, and Gaussian observation-kernel sums built on them.

One neighbour search for every method that spreads observations to the grid (interp's kernel
sums, DiffDA's soft mask, later LETKF's localisation): scikit-learn's ``BallTree`` with the
haversine metric over the destination points (the grid, built once), queried with the sources
(observations) in chunks of bounded memory.

    pairs_within(src_lat, src_lon, dst_lat, dst_lon, radius_km)
        -> chunks Pairs(src, dst, distance_km): every (source, destination) pair with
           great-circle distance ≤ radius_km, distance by the haversine formula below
    kernel_sums(src_lat, src_lon, coeff, dst_lat, dst_lon, length_km, cutoff_km)
        -> out[j, :] = Σ_i w(r_ij) coeff[i, :],  w(r) = exp(−r² / (2 L²)) for r < cutoff, else 0
    add_weighted(out, pairs, weights, coeff)
        -> out[dst] += weights · coeff[src] summed per destination (a kernel of one's own)

Coordinates are degrees (as ``StateSpec`` and ``Observations`` hold them); distances km on a
sphere of radius ``EARTH_RADIUS_KM``:

    r = 2 R asin √(sin²(Δφ/2) + cos φ₁ cos φ₂ sin²(Δλ/2))      (haversine; wraps in longitude,
                                                               exact across the poles)

Exactness: the tree is queried slightly wider than the radius (relative 1e-9) and every
candidate's distance is recomputed with the formula above, then filtered, so which pairs are in
does not depend on the tree's own rounding.

Memory: sources are sorted spatially (latitude bands one radius wide, then longitude, so a
chunk's neighbourhoods overlap) and cut into chunks whose *upper bound* on pairs — for each
source the number of destinations within its latitude band φ ± radius — is at most
``MAX_PAIRS`` (a single source may exceed it alone). A chunk costs up to ``PAIR_BYTES`` per
pair (indices, distances, sorting, the sparse kernel; ≈ 260 B measured), so at most
``chunk_bytes()`` ≈ 0.7 GB at 2²¹ whatever the grid (0.25°: 721 × 1440); the band bound is
loose near the equator (≈ 17× at a 1500 km radius: chunks there hold ~40 MB), tight near the
poles.

Determinism: sums are sparse (CSR) × dense products per chunk, each destination's row in a
fixed order, added to the output once per chunk: no atomics, so GPUs give the same bits run
after run (cuSPARSE's non-transposed CSR product is deterministic).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.neighbors import BallTree

EARTH_RADIUS_KM = 6371.0

#: Upper bound on the candidate pairs of one chunk of sources (bounded memory, see above).
#: Tests shrink it to check that chunking does not change results.
MAX_PAIRS = 2**21

#: Bytes one candidate pair costs while its chunk is processed (measured ≈ 260 B, rounded up),
#: for memory estimates.
PAIR_BYTES = 320

#: Bytes per point of a SphereTree (the tree, degrees, radians and cos φ, sorted latitudes).
TREE_BYTES_PER_POINT = 80

#: The tree is queried this much (relative) wider than the radius; exact filtering follows.
_RADIUS_SLACK = 1e-9


def chunk_bytes() -> float:
    """The most memory one chunk of pairs takes (``MAX_PAIRS`` × ``PAIR_BYTES``), bytes."""
    return float(PAIR_BYTES * MAX_PAIRS)


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Haversine distance (km) between points given in degrees; broadcasts (numpy float64)."""
    lat1, lon1, lat2, lon2 = (np.deg2rad(np.asarray(v, dtype=np.float64))
                              for v in (lat1, lon1, lat2, lon2))
    return _haversine_km(lat1, lon1, np.cos(lat1), lat2, lon2, np.cos(lat2))


def _haversine_km(lat1, lon1, cos1, lat2, lon2, cos2) -> np.ndarray:
    """The haversine formula on radians, with cos φ of both points given (precomputed)."""
    a = np.sin(0.5 * (lat2 - lat1)) ** 2 + cos1 * cos2 * np.sin(0.5 * (lon2 - lon1)) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


class _Points:
    """Points in radians with cos φ, for distances of gathered pairs."""

    def __init__(self, lat, lon):
        self.lat = np.deg2rad(np.asarray(lat, dtype=np.float64).reshape(-1))
        self.lon = np.deg2rad(np.asarray(lon, dtype=np.float64).reshape(-1))
        self.cos = np.cos(self.lat)

    def distance_km(self, i: np.ndarray, other: _Points, j: np.ndarray) -> np.ndarray:
        """Haversine distances between self[i] and other[j] (km), elementwise."""
        return _haversine_km(self.lat[i], self.lon[i], self.cos[i],
                             other.lat[j], other.lon[j], other.cos[j])


class SphereTree:
    """The destinations of a neighbour search: a haversine BallTree over points in degrees.

    Build it once for a fixed set (a method's grid, in ``load``) and pass it as ``dst_tree``.
    Memory ≈ ``TREE_BYTES_PER_POINT`` per point.
    """

    def __init__(self, lat, lon):
        self.lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        self.lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if self.lat.shape != self.lon.shape:
            raise ValueError(f"lat and lon must have the same length, got {self.lat.size} and "
                             f"{self.lon.size}")
        self.points = _Points(self.lat, self.lon)
        self.tree = BallTree(np.stack([self.points.lat, self.points.lon], axis=1),
                             metric="haversine") if self.lat.size else None
        self._sorted_lat = np.sort(self.lat)

    def __len__(self) -> int:
        return self.lat.size

    def band_counts(self, lat: np.ndarray, radius_km: float) -> np.ndarray:
        """(n,) for each latitude, the points within ``radius_km`` of latitude (an upper bound
        on its neighbours: a great-circle distance is at least R |Δφ|)."""
        band = np.rad2deg(radius_km / EARTH_RADIUS_KM) * (1 + _RADIUS_SLACK) + 1e-12
        lo = np.searchsorted(self._sorted_lat, lat - band, side="left")
        hi = np.searchsorted(self._sorted_lat, lat + band, side="right")
        return (hi - lo).astype(np.int64)

    def candidates(self, lat: np.ndarray, lon: np.ndarray, radius_km: float
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(query index, point index) of every point the tree finds within a slightly widened
        radius of each query point (degrees); a superset of the exact pairs."""
        if self.tree is None or len(lat) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        radius = radius_km / EARTH_RADIUS_KM * (1 + _RADIUS_SLACK) + 1e-15
        found = self.tree.query_radius(np.deg2rad(np.stack([lat, lon], axis=1)), radius)
        counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
        points = np.concatenate(found).astype(np.int64) if counts.sum() else \
            np.zeros(0, dtype=np.int64)
        return np.repeat(np.arange(len(lat), dtype=np.int64), counts), points


@dataclasses.dataclass(frozen=True)
class Pairs:
    """One chunk of neighbour pairs: ``src[p]`` and ``dst[p]`` index the sources and the
    destinations, ``distance_km[p]`` ≤ the radius. A chunk holds all pairs of a set of
    sources; a destination may appear in several chunks."""

    src: np.ndarray
    dst: np.ndarray
    distance_km: np.ndarray

    def __len__(self) -> int:
        return self.src.size

    def where(self, keep: np.ndarray) -> Pairs:
        """The pairs where ``keep`` (P,) is True."""
        return Pairs(self.src[keep], self.dst[keep], self.distance_km[keep])


def spatial_order(lat: np.ndarray, lon: np.ndarray, radius_km: float) -> np.ndarray:
    """Sources sorted by latitude band (one radius wide, north first), then by longitude, so
    that consecutive sources are near each other and their neighbourhoods overlap."""
    band = max(float(np.rad2deg(radius_km / EARTH_RADIUS_KM)), 1e-6)
    return np.lexsort((np.asarray(lon) % 360.0, np.floor((90.0 - np.asarray(lat)) / band)))


def pairs_within(src_lat, src_lon, dst_lat, dst_lon, radius_km: float, *,
                 dst_tree: SphereTree | None = None, max_pairs: int | None = None
                 ) -> Iterator[Pairs]:
    """Every (source, destination) pair within ``radius_km`` (great circle), in chunks.

    Args:
        src_lat, src_lon: (N,) sources, degrees.
        dst_lat, dst_lon: (G,) destinations, degrees (ignored when ``dst_tree`` is given:
            the tree's points are the destinations).
        radius_km: pairs with haversine distance ≤ radius_km.
        dst_tree: a SphereTree of the destinations, to reuse (built here when None).
        max_pairs: upper bound on the candidate pairs per chunk (default ``MAX_PAIRS``).
    Yields:
        Pairs chunks (see the module docstring for the memory bound).
    """
    src_lat = np.asarray(src_lat, dtype=np.float64).reshape(-1)
    src_lon = np.asarray(src_lon, dtype=np.float64).reshape(-1)
    tree = dst_tree if dst_tree is not None else SphereTree(dst_lat, dst_lon)
    if src_lat.size == 0 or len(tree) == 0:
        return
    budget = MAX_PAIRS if max_pairs is None else max_pairs
    sources = _Points(src_lat, src_lon)
    order = spatial_order(src_lat, src_lon, radius_km)
    total = np.cumsum(tree.band_counts(src_lat[order], radius_km))
    start = 0
    while start < order.size:
        before = total[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(total, before + budget, side="right")))
        chunk = order[start:end]
        local, dst = tree.candidates(src_lat[chunk], src_lon[chunk], radius_km)
        src = chunk[local]
        r = sources.distance_km(src, tree.points, dst)
        keep = r <= radius_km
        if keep.any():
            yield Pairs(src[keep], dst[keep], r[keep])
        start = end


def add_weighted(out: torch.Tensor, pairs: Pairs, weights: torch.Tensor,
                 coeff: torch.Tensor) -> None:
    """out[d, :] += Σ_{pairs (s, d)} weights · coeff[s, :], in place, deterministically.

    Args:
        out: (G, k) float, the destinations' sums.
        pairs: one chunk of pairs (numpy indices).
        weights: (P,) per pair, same dtype and device as ``out``.
        coeff: (N, k) per source, same dtype and device.
    """
    if len(pairs) == 0:
        return
    device = out.device
    order = np.argsort(pairs.dst, kind="stable")  # rows of the destinations touched
    dst = pairs.dst[order]
    starts = np.flatnonzero(np.diff(dst)) + 1
    rows = dst[np.concatenate([[0], starts])]
    crow = np.concatenate([[0], starts, [dst.size]]).astype(np.int64)

    def as_long(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.long, device=device)

    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use mm only
        warnings.simplefilter("ignore", UserWarning)
        kernel = torch.sparse_csr_tensor(
            as_long(crow), as_long(pairs.src[order]), weights[as_long(order)],
            size=(rows.size, coeff.shape[0]), check_invariants=False)
    index = as_long(rows)
    step = max(1, MAX_PAIRS // rows.size)  # bound the dense (rows × k) product
    for c in range(0, coeff.shape[1], step):
        out[:, c:c + step].index_add_(0, index, kernel @ coeff[:, c:c + step].contiguous())


def kernel_sums(src_lat, src_lon, coeff: torch.Tensor, dst_lat, dst_lon, length_km: float,
                cutoff_km: float, *, dst_tree: SphereTree | None = None) -> torch.Tensor:
    """out[j, :] = Σ_i w(r_ij) · coeff[i, :], w(r) = exp(−r²/(2 L²)) for r < cutoff, else 0.

    Args:
        src_lat, src_lon: (N,) sources (observations), degrees.
        coeff: (N, k) float64 torch, on the device to compute on.
        dst_lat, dst_lon: (G,) destinations, degrees (or ``dst_tree``).
        length_km, cutoff_km: L and the cutoff (strict: r < cutoff).
    Returns:
        (G, k) float64 on coeff's device.
    """
    tree = dst_tree if dst_tree is not None else SphereTree(dst_lat, dst_lon)
    out = torch.zeros(len(tree), coeff.shape[1], dtype=torch.float64, device=coeff.device)
    for pairs in pairs_within(src_lat, src_lon, None, None, cutoff_km, dst_tree=tree):
        pairs = pairs.where(pairs.distance_km < cutoff_km)
        r = torch.as_tensor(pairs.distance_km, dtype=torch.float64, device=coeff.device)
        add_weighted(out, pairs, torch.exp(-0.5 * (r / length_km).square()), coeff)
    return out
