"""Interpolation's kernel sums on the shared neighbour search (methods/common/neighbours.py):
chunked sums give the analysis of one chunk, and the whole analysis equals a dense reference
near the poles and across the 0°/360° meridian."""

import numpy as np
import pytest
import torch
from interp_fixtures import background, dense_setup, gaussian, loaded
from method_fixtures import great_circle_km

from bench.experiments.synthetic import synthetic_spec
from bench.state import StateSpec
from methods.base import Observations
from methods.common import neighbours
from methods.interp import Interpolation


def test_chunked_neighbour_search_matches_one_chunk(monkeypatch):
    """Small chunks of neighbour pairs (many per kernel sum) bound the chunk size and give
    the same analysis."""
    _, x_b, obs = dense_setup()
    budget = 600
    sizes = []

    def recording(*args, **kwargs):
        for pairs in pairs_within(*args, **kwargs):
            sizes.append(len(pairs))
            yield pairs

    pairs_within = neighbours.pairs_within
    for normalisation in ("grid", "observations"):
        method = loaded(length_scale_km=1500.0, normalisation=normalisation)
        whole = method.analyse(background(x_b), obs).x_a
        with monkeypatch.context() as patch:
            patch.setattr(neighbours, "MAX_PAIRS", budget)
            patch.setattr(neighbours, "pairs_within", recording)
            blocked = method.analyse(background(x_b), obs).x_a
        torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-12)
    assert max(sizes) <= budget
    assert len(sizes) > 4 * 9  # 9 kernel sums (3 passes; 1 + 2 sums), ≥ 4 chunks each


# --------------------------------------------------------------------------------- dense reference
def dense_reference(method: Interpolation, spec: StateSpec, x_b: torch.Tensor,
                    obs: Observations) -> np.ndarray:
    """The whole successive-correction analysis with every (observation, grid point) and
    (observation, observation) kernel entry evaluated densely, channel by channel, in numpy
    float64 with the tests' great-circle formula (method_fixtures: unit vectors and atan2):
    the algorithm of methods/interp.py's docstring without any neighbour search."""
    c, h, w = spec.shape
    glat, glon = np.repeat(spec.lat, w), np.tile(spec.lon, h)
    x = x_b.double().clone()
    channel = obs.channel.numpy()
    for p in range(method.passes):
        length = method.length_scale_km * method.pass_shrink**p
        d = (obs.values.double() - obs.operator(x)).numpy()
        increment = np.zeros((c, h * w))
        for k in np.unique(channel):
            idx = channel == k
            lat, lon = obs.lat[idx], obs.lon[idx]
            w_go = gaussian(great_circle_km(glat[:, None], glon[:, None], lat[None], lon[None]),
                            length, method.cutoff_scales)
            if method.normalisation == "observations":
                w_oo = gaussian(great_circle_km(lat[:, None], lon[:, None], lat[None], lon[None]),
                                length, method.cutoff_scales)
                increment[k] = w_go @ (d[idx] / (w_oo.sum(axis=1) + method.smoothing))
            else:
                den = w_go.sum(axis=1) + method.smoothing
                increment[k] = np.where(den > 0, (w_go @ d[idx]) / np.where(den > 0, den, 1), 0)
        x = x + torch.as_tensor(increment.reshape(c, h, w))
    return x.numpy()


def polar_and_meridian_observations(spec: StateSpec, seed: int) -> Observations:
    """A "columns" group (every channel at 12 points) and 40 single-channel observations;
    half the points within 6° of a pole or of the 0°/360° meridian, one on the north pole.
    H reads each one's nearest grid point (its position is off the grid)."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.shape

    def points(n):
        lat = np.concatenate([rng.uniform(-90, 90, n - n // 2),
                              rng.choice([-1, 1], n // 2) * rng.uniform(84, 90, n // 2)])
        lon = np.concatenate([rng.uniform(0, 360, n - n // 2),
                              np.mod(rng.uniform(-6, 6, n // 2), 360.0)])
        return lat, lon
    col_lat, col_lon = points(12)
    col_lat[0] = 90.0
    one_lat, one_lon = points(40)
    lat = np.concatenate([np.tile(col_lat, c), one_lat])
    lon = np.concatenate([np.tile(col_lon, c), one_lon])
    channel = np.concatenate([np.repeat(np.arange(c), 12), rng.integers(0, c, 40)])
    i = np.abs(spec.lat[None, :] - lat[:, None]).argmin(axis=1)
    j = np.abs(np.mod(spec.lon[None, :] - lon[:, None] + 180, 360) - 180).argmin(axis=1)
    n = lat.size
    return Observations(values=torch.as_tensor(rng.normal(size=n)),
                        error_std=torch.zeros(n, dtype=torch.float64),
                        channel=torch.as_tensor(channel),
                        flat_index=torch.as_tensor(i * w + j)[:, None],
                        weights=torch.ones(n, 1, dtype=torch.float64), lat=lat, lon=lon,
                        grid_shape=spec.shape)


@pytest.mark.parametrize("normalisation, smoothing", [("observations", 0.0), ("grid", 0.0),
                                                      ("grid", 0.2), ("observations", 0.3)])
@pytest.mark.parametrize("nlat, nlon", [(19, 36), (16, 30)])
def test_analysis_equals_the_dense_reference(monkeypatch, normalisation, smoothing, nlat, nlon):
    """The analysis through the shared neighbour search (in many small chunks) equals the
    dense computation to float64 round-off, near the poles and across 0°/360° too."""
    spec = synthetic_spec(nlat, nlon, 3)  # odd nlat: equiangular with poles; even: Gaussian
    obs = polar_and_meridian_observations(spec, seed=nlat)
    x_b = torch.as_tensor(np.random.default_rng(0).normal(size=spec.shape))
    method = Interpolation(length_scale_km=900.0, passes=3, pass_shrink=0.6, smoothing=smoothing,
                           normalisation=normalisation)
    reference = dense_reference(method, spec, x_b, obs)
    monkeypatch.setattr(neighbours, "MAX_PAIRS", 50)
    x_a = method.load({}, spec, "cpu").analyse(background(x_b), obs).x_a
    increment = np.abs(reference - x_b.numpy()).max()
    assert increment > 0.1
    np.testing.assert_allclose(x_a.numpy(), reference, rtol=0, atol=1e-12 * increment)

