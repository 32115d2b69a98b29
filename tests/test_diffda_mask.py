"""DiffDA's soft mask and spread increments (methods/diffda/mask.py): one at the observations,
a Gaussian in grid spacings around them, and on the shared neighbour search equal to the dense
formulas near the poles and across the 0°/360° meridian."""

import math

import numpy as np
import pytest
import torch
from diffda_fixtures import grid_observations
from forecast_fixtures import small_spec

from bench.state import StateSpec
from methods.base import Observations
from methods.common import neighbours
from methods.diffda.mask import soft_mask_and_values, soft_mask_and_values64


def test_soft_mask_is_one_at_observations_and_decays_as_a_gaussian():
    spec = small_spec(channels=("t850", "z500"), nlat=16, nlon=32)
    lat = np.asarray(spec.lat)
    h, w = 16, 32
    sigma = 1.5
    state = torch.zeros(2, h, w)
    obs = grid_observations(spec, state, points=[3 * w + 0], channels=[1])
    mask, _ = soft_mask_and_values(obs, torch.ones(1), spec.lat, spec.lon, sigma, 3.0)

    def gauss(d2):
        return math.exp(-d2 / (2 * sigma**2))

    cos3 = math.cos(math.radians(lat[3]))
    cos34 = math.cos(math.radians(0.5 * (lat[3] + lat[4])))
    assert mask[1, 3, 0] == 1.0
    assert mask[1, 3, 1] == pytest.approx(gauss(cos3**2), rel=1e-5)  # cos(lat) in longitude
    assert mask[1, 3, 2] == pytest.approx(gauss((2 * cos3) ** 2), rel=1e-5)
    assert mask[1, 3, w - 1] == pytest.approx(mask[1, 3, 1])  # periodic in longitude
    assert mask[1, 3, w - 2] == pytest.approx(mask[1, 3, 2])
    assert mask[1, 4, 0] == pytest.approx(gauss(1.0), rel=1e-5)  # one row south
    assert mask[1, 2, 0] == pytest.approx(gauss(1.0), rel=1e-5)
    assert mask[1, 4, 1] == pytest.approx(gauss(1.0 + cos34**2), rel=1e-5)
    assert mask[1, 3, 8] == 0.0  # 8 · cos(47°) ≈ 5.4 grid spacings > cutoff 3σ = 4.5
    assert mask[1, 9, 0] == 0.0
    assert (mask[0] == 0).all()  # only the observed channel
    # the kernel is wider in longitude near the pole than near the equator
    polar = grid_observations(spec, state, points=[0 * w + 10], channels=[0])
    polar_mask, _ = soft_mask_and_values(polar, torch.ones(1), spec.lat, spec.lon, sigma, 3.0)
    assert polar_mask[0, 0, 12] > mask[1, 3, 2]


def test_spread_increments_interpolate_the_observations():
    spec = small_spec(channels=("t850",), nlat=16, nlon=32)
    state = torch.zeros(1, 16, 32)
    w = 32
    obs = grid_observations(spec, state, points=[7 * w + 4, 7 * w + 6])
    d = torch.tensor([2.0, -1.0])
    mask, values = soft_mask_and_values(obs, d, spec.lat, spec.lon, 1.5, 3.0)
    assert values[0, 7, 4] == pytest.approx(2.0) and values[0, 7, 6] == pytest.approx(-1.0)
    assert values[0, 7, 5] == pytest.approx(0.5, abs=1e-6)  # equal weights: the mean
    k4 = mask[0, 8, 4]  # one row south of the first: weights k4 and k(√(1 + (2cos)²))
    lat = np.asarray(spec.lat)
    cos = math.cos(math.radians(0.5 * (lat[7] + lat[8])))
    k6 = math.exp(-(1 + (2 * cos) ** 2) / (2 * 1.5**2))
    assert values[0, 8, 4] == pytest.approx((2.0 * float(k4) - k6) / (float(k4) + k6), rel=1e-5)
    assert values[0, 0, 20] == 0.0 and mask[0, 0, 20] == 0.0  # beyond the cutoff


def dense_mask_reference(obs: Observations, d: np.ndarray, lat, lon, sigma: float,
                         cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """The mask and spread increments of mask.py's docstring on *all* (observation, grid point)
    pairs, written out densely in numpy float64 (the formulas of the code before the shared
    neighbour search): d² in grid spacings, w = exp(−d²/(2σ²)) for d < cutoff·σ; m = max w,
    v = Σ w d / Σ w; observed grid points keep the mean of their observations, m = 1."""
    c, h, w = obs.grid_shape
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    dlat, dlon = float(np.abs(np.diff(lat)).mean()), 360.0 / w
    glat, glon = np.repeat(lat, w)[None, :], np.tile(lon, h)[None, :]
    olat, olon = np.asarray(obs.lat)[:, None], np.asarray(obs.lon)[:, None]
    dlam = np.mod(glon - olon + 180.0, 360.0) - 180.0
    cos_mid = np.cos(np.deg2rad(0.5 * (glat + olat)))
    d2 = ((glat - olat) / dlat) ** 2 + (cos_mid * dlam / dlon) ** 2
    kernel = np.where(d2 < (cutoff * sigma) ** 2, np.exp(-0.5 * d2 / sigma**2), 0.0)
    mask, total, weighted = np.zeros((c, h * w)), np.zeros((c, h * w)), np.zeros((c, h * w))
    count, on_grid = np.zeros((c, h * w)), np.zeros((c, h * w))
    nearest = obs.flat_index.gather(1, obs.weights.argmax(dim=1, keepdim=True))[:, 0].numpy()
    for n, k in enumerate(obs.channel.numpy()):
        mask[k] = np.maximum(mask[k], kernel[n])
        total[k] += kernel[n]
        weighted[k] += kernel[n] * d[n]
        count[k, nearest[n]] += 1
        on_grid[k, nearest[n]] += d[n]
    values = np.where(total > 0, weighted / np.where(total > 0, total, 1.0), 0.0)
    observed = count > 0
    values = np.where(observed, on_grid / np.maximum(count, 1), values)
    mask = np.where(observed, 1.0, mask)
    return mask.reshape(c, h, w), values.reshape(c, h, w)


def scattered_observations(spec: StateSpec, n: int, seed: int) -> Observations:
    """Observations at random positions, many near the poles and the 0°/360° meridian, on their
    nearest grid point (some share one), each of one channel."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.shape
    lat = np.concatenate([rng.uniform(-90, 90, n - n // 2),
                          rng.choice([-1, 1], n // 2) * rng.uniform(80, 90, n // 2)])
    lon = np.concatenate([rng.uniform(0, 360, n - n // 2),
                          np.mod(rng.uniform(-8, 8, n // 2), 360.0)])
    i = np.abs(spec.lat[None, :] - lat[:, None]).argmin(axis=1)
    j = np.abs(np.mod(spec.lon[None, :] - lon[:, None] + 180, 360) - 180).argmin(axis=1)
    return Observations(values=torch.zeros(n, dtype=torch.float64),
                        error_std=torch.zeros(n, dtype=torch.float64),
                        channel=torch.as_tensor(rng.integers(0, c, n)),
                        flat_index=torch.as_tensor(i * w + j)[:, None],
                        weights=torch.ones(n, 1, dtype=torch.float64), lat=lat, lon=lon,
                        grid_shape=spec.shape)


@pytest.mark.parametrize("nlat, nlon, grid, sigma, cutoff", [
    (19, 36, "equiangular", 1.5, 3.0), (16, 32, "legendre-gauss", 3.0, 3.0),
    (9, 16, "equiangular", 3.0, 3.0), (25, 30, "equiangular", 2.0, 2.5)])
def test_mask_on_the_neighbour_search_equals_the_dense_formulas(monkeypatch, nlat, nlon, grid,
                                                                 sigma, cutoff):
    """The mask and spread increments found through the shared neighbour search (in small
    chunks) equal the kernel on all pairs to float64 round-off, near the poles and across the
    0°/360° meridian too; and, after the cast to float32, the same numbers."""
    if grid == "equiangular":
        lat = np.linspace(90.0, -90.0, nlat)
    else:
        lat = np.degrees(np.arcsin(-np.polynomial.legendre.leggauss(nlat)[0]))
    spec = StateSpec.create(["t850", "z500", "u850"], lat, np.arange(nlon) * 360.0 / nlon, grid)
    obs = scattered_observations(spec, 60, seed=nlat)
    d = np.random.default_rng(1).normal(size=len(obs))
    mask_ref, values_ref = dense_mask_reference(obs, d, spec.lat, spec.lon, sigma, cutoff)
    monkeypatch.setattr(neighbours, "MAX_PAIRS", 40)  # many chunks
    mask, values = soft_mask_and_values64(obs, torch.as_tensor(d), spec.lat, spec.lon, sigma,
                                          cutoff)
    assert (mask_ref > 0).any() and ((mask_ref > 0) & (mask_ref < 1)).any()
    if sigma == 1.5:
        assert (mask_ref == 0).any()  # the cutoff matters: not everything is covered
    np.testing.assert_allclose(mask.numpy(), mask_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(values.numpy(), values_ref, rtol=0,
                               atol=1e-12 * np.abs(values_ref).max())
    mask32, values32 = soft_mask_and_values(obs, torch.as_tensor(d), spec.lat, spec.lon, sigma,
                                            cutoff)
    np.testing.assert_allclose(mask32.numpy(), mask_ref.astype(np.float32), rtol=1e-6, atol=0)
    np.testing.assert_allclose(values32.numpy(), values_ref.astype(np.float32), rtol=1e-6,
                               atol=1e-7 * np.abs(values_ref).max())
