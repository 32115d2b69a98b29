"""The shared great-circle neighbour search (methods/common/neighbours.py) against brute force:
the pairs within a radius, their distances, the Gaussian kernel sums; near the poles, across the
0°/360° meridian, in small chunks and at 0.25°."""

import numpy as np
import pytest
import torch
from method_fixtures import great_circle_km

from methods.common import neighbours
from methods.common.neighbours import (
    EARTH_RADIUS_KM,
    Pairs,
    SphereTree,
    add_weighted,
    kernel_sums,
    pairs_within,
)


def grid_points(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (lat-major) equiangular grid with both poles, degrees."""
    lat, lon = np.linspace(90.0, -90.0, nlat), np.arange(nlon) * 360.0 / nlon
    return np.repeat(lat, nlon), np.tile(lon, nlat)


def awkward_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half anywhere, half within 5° of a pole or of the 0°/360° meridian, one on each pole."""
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.uniform(-90, 90, n - n // 2),
                          rng.choice([-1, 1], n // 2) * rng.uniform(85, 90, n // 2)])
    lon = np.concatenate([rng.uniform(0, 360, n - n // 2),
                          np.mod(rng.uniform(-5, 5, n // 2), 360.0)])
    lat[:2] = 90.0, -90.0
    return lat, lon


def all_pairs(chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    chunks = list(chunks)
    src = np.concatenate([p.src for p in chunks]) if chunks else np.zeros(0, int)
    dst = np.concatenate([p.dst for p in chunks]) if chunks else np.zeros(0, int)
    r = np.concatenate([p.distance_km for p in chunks]) if chunks else np.zeros(0)
    return src, dst, r, [len(p) for p in chunks]


@pytest.mark.parametrize("radius_km", [300.0, 1500.0, 7000.0, 25000.0])
def test_pairs_within_are_exactly_the_brute_force_pairs(radius_km):
    """Every pair with distance ≤ radius, each once, with its distance (haversine vs atan2:
    equal to round-off), in any chunking; the chunks respect the bound."""
    src_lat, src_lon = awkward_points(70, seed=1)
    dst_lat, dst_lon = grid_points(19, 36)
    r = great_circle_km(src_lat[:, None], src_lon[:, None], dst_lat[None], dst_lon[None])
    expected = {(i, j) for i, j in zip(*np.nonzero(r <= radius_km), strict=True)}
    for max_pairs in (None, 200, 1):
        src, dst, dist, sizes = all_pairs(pairs_within(src_lat, src_lon, dst_lat, dst_lon,
                                                       radius_km, max_pairs=max_pairs))
        found = set(zip(src.tolist(), dst.tolist(), strict=True))
        assert len(found) == src.size  # no pair twice
        # pairs within round-off of the radius may go either way; none else may differ
        edge = np.abs(r - radius_km) < 1e-9 * radius_km
        assert {p for p in found ^ expected if not edge[p]} == set()
        np.testing.assert_allclose(dist, r[src, dst], rtol=1e-12, atol=1e-9)
        assert (dist <= radius_km).all()
        if max_pairs == 200:
            tree = SphereTree(dst_lat, dst_lon)
            bound = tree.band_counts(src_lat, radius_km)
            assert max(sizes) <= max(200, bound.max())
            assert len(sizes) > 1


def test_distances_cross_the_pole_and_the_meridian():
    """Two points 1° either side of the north pole on opposite meridians are 2° apart, and two
    points either side of 0°/360° on the equator too (not 358°)."""
    src = (np.array([89.0, 0.0]), np.array([0.0, 359.0]))
    dst = (np.array([89.0, 0.0]), np.array([180.0, 1.0]))
    two_degrees = np.deg2rad(2.0) * EARTH_RADIUS_KM
    src_i, dst_i, dist, _ = all_pairs(pairs_within(*src, *dst, 1.01 * two_degrees))
    pairs = dict(zip(zip(src_i.tolist(), dst_i.tolist(), strict=True), dist, strict=True))
    assert pairs[(0, 0)] == pytest.approx(two_degrees, rel=1e-12)
    assert pairs[(1, 1)] == pytest.approx(two_degrees, rel=1e-12)
    assert (0, 1) not in pairs and (1, 0) not in pairs


def dense_kernel_sums(src_lat, src_lon, coeff, dst_lat, dst_lon, length, cutoff):
    r = great_circle_km(dst_lat[:, None], dst_lon[:, None], src_lat[None], src_lon[None])
    w = np.where(r < cutoff, np.exp(-0.5 * (r / length) ** 2), 0.0)
    return w @ coeff


@pytest.mark.parametrize("length_km", [400.0, 1500.0])
def test_kernel_sums_equal_the_dense_sums(monkeypatch, length_km):
    """Σ_i w(r_ij) c_i on the neighbour pairs equals the dense sum to float64 round-off, in
    one chunk and in many (a shared tree or one built per call)."""
    src_lat, src_lon = awkward_points(80, seed=2)
    dst_lat, dst_lon = grid_points(25, 48)
    coeff = np.random.default_rng(3).normal(size=(80, 3))
    cutoff = 3 * length_km
    reference = dense_kernel_sums(src_lat, src_lon, coeff, dst_lat, dst_lon, length_km, cutoff)
    tree = SphereTree(dst_lat, dst_lon)
    for budget in (neighbours.MAX_PAIRS, 64):
        monkeypatch.setattr(neighbours, "MAX_PAIRS", budget)
        for kwargs in ({}, {"dst_tree": tree}):
            out = kernel_sums(src_lat, src_lon, torch.as_tensor(coeff), dst_lat, dst_lon,
                              length_km, cutoff, **kwargs)
            assert out.dtype == torch.float64 and out.shape == (25 * 48, 3)
            np.testing.assert_allclose(out.numpy(), reference, rtol=0,
                                       atol=1e-12 * np.abs(reference).max())
    if length_km == 400.0:
        assert (reference == 0).any()  # the cutoff matters here


def test_add_weighted_sums_repeated_destinations_in_a_fixed_order():
    out = torch.zeros(4, 2, dtype=torch.float64)
    pairs = Pairs(src=np.array([0, 1, 2, 0]), dst=np.array([3, 3, 1, 0]),
                  distance_km=np.zeros(4))
    coeff = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], dtype=torch.float64)
    add_weighted(out, pairs, torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=torch.float64), coeff)
    add_weighted(out, pairs, torch.ones(4, dtype=torch.float64), coeff)
    expected = torch.tensor([[3 + 1, 6 + 2], [200 + 100, 400 + 200], [0, 0],
                             [6 + 11, 12 + 22]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_no_sources_or_no_destinations_give_no_pairs():
    lat, lon = grid_points(5, 8)
    assert list(pairs_within(np.zeros(0), np.zeros(0), lat, lon, 1e4)) == []
    assert list(pairs_within(lat, lon, np.zeros(0), np.zeros(0), 1e4)) == []
    out = kernel_sums(np.zeros(0), np.zeros(0), torch.zeros(0, 2, dtype=torch.float64), lat,
                      lon, 500.0, 1500.0)
    assert out.shape == (40, 2) and not out.any()


def test_memory_stays_bounded_at_quarter_degree():
    """At 0.25° (721 × 1440, the ERA5 grid) and a 1500 km radius, no chunk exceeds
    MAX_PAIRS pairs, and each source's neighbours are exactly the brute-force count."""
    dst_lat, dst_lon = grid_points(721, 1440)
    tree = SphereTree(dst_lat, dst_lon)
    src_lat, src_lon = awkward_points(24, seed=4)
    counts = np.zeros(24, dtype=int)
    sizes = []
    for pairs in pairs_within(src_lat, src_lon, None, None, 1500.0, dst_tree=tree):
        sizes.append(len(pairs))
        np.add.at(counts, pairs.src, 1)
    assert max(sizes) <= neighbours.MAX_PAIRS
    for i in range(24):
        r = great_circle_km(src_lat[i], src_lon[i], dst_lat, dst_lon)
        assert abs(counts[i] - int((r <= 1500.0).sum())) <= int(
            (np.abs(r - 1500.0) < 1e-6).sum())
    assert counts[0] == 1440 * int(np.floor(1500.0 / (np.deg2rad(0.25) * EARTH_RADIUS_KM)) + 1)
