"""The observation operator H (linear, exact adjoint, differentiable, dense view) and off-grid
stations (bilinear interpolation, wrap, clamping, noise, missing values)."""

import math

import numpy as np
import pytest
import torch
from observation_fixtures import NAMES, random_truth, small_spec

from bench.config import ObservationSettings
from bench.observations import (
    bilinear_weights,
    observe,
    observed_points,
    station_observations,
)


# --------------------------------------------------------------------------------- operator H
def station_obs(spec, truth, seed=0):
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-90, 90, 25)
    lon = rng.uniform(-30, 400, 25)
    return station_observations(truth, spec, lat, lon, ["z500", "t850"], 0.1, rng)


def all_operators(spec, truth):
    return {
        "columns": observe(truth, spec, ObservationSettings(density=0.3), 0),
        "elements": observe(truth, spec, ObservationSettings(density=0.3, sampling="elements"), 0),
        "stations": station_obs(spec, truth),
    }


@pytest.mark.parametrize("kind", ["columns", "elements", "stations"])
def test_operator_is_linear_and_its_adjoint_is_exact(kind):
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    obs = all_operators(spec, truth)[kind]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, *spec.shape, generator=g, dtype=torch.float64)  # batched
    z = torch.randn(*spec.shape, generator=g, dtype=torch.float64)
    r = torch.randn(2, len(obs), generator=g, dtype=torch.float64)
    hx = obs.operator(x)
    assert hx.shape == (2, len(obs))
    torch.testing.assert_close(obs.operator(2.5 * x - 3 * z), 2.5 * hx - 3 * obs.operator(z),
                               rtol=0, atol=1e-12)
    lhs = (hx * r).sum(dim=-1)
    rhs = (x * obs.adjoint(r)).sum(dim=(-3, -2, -1))
    assert torch.all((lhs - rhs).abs() <= 1e-12 * lhs.abs().clamp(min=1))


@pytest.mark.parametrize("kind", ["columns", "elements", "stations"])
def test_operator_is_differentiable(kind):
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    obs = all_operators(spec, truth)[kind]
    x = torch.randn(*spec.shape, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(len(obs), dtype=torch.float64)
    (obs.operator(x) * upstream).sum().backward()
    torch.testing.assert_close(x.grad, obs.adjoint(upstream), rtol=0, atol=1e-12)


def test_dense_view_of_columns():
    spec = small_spec()
    obs = observe(random_truth(spec), spec, ObservationSettings(density=0.2), 0)
    mask, values = obs.dense()
    assert mask.shape == values.shape == spec.shape
    assert int(mask.sum()) == len(obs)
    # boolean indexing walks (C, H, W) in order, the order of the observations
    assert torch.equal(values[mask.bool()], obs.values)
    assert torch.all(values[~mask.bool()] == 0)
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[1], mask[2])


# --------------------------------------------------------------------------------- stations
def linear_field(spec, a=0.3, b=0.02, c=-0.005):
    lat = torch.tensor(spec.lat)[:, None]  # copies: the spec's arrays are read-only
    lon = torch.tensor(spec.lon)[None, :]
    f = a + b * lat + c * lon  # (H, W), linear in lat and lon (except across the wrap)
    return f.expand(len(NAMES), -1, -1).clone()


def test_station_inside_a_cell_reproduces_a_bilinear_field_exactly():
    spec = small_spec()
    truth = linear_field(spec)
    lat = np.array([40.1, -12.3, 5.0, -70.0])
    lon = np.array([30.0, 200.7, 10.0, 330.0])  # inside cells, not in the wrap cell
    obs = station_observations(truth, spec, lat, lon, ["t850"], 0.0, 0)
    want = 0.3 + 0.02 * lat - 0.005 * lon
    torch.testing.assert_close(obs.values, torch.as_tensor(want), rtol=0, atol=1e-12)
    assert obs.flat_index.shape == (4, 4)
    torch.testing.assert_close(obs.weights.sum(1), torch.ones(4, dtype=torch.float64))
    np.testing.assert_array_equal(obs.lat, lat)
    assert torch.equal(obs.error_std, torch.zeros(4, dtype=torch.float64))


def test_station_longitude_wraps_periodically():
    spec = small_spec()
    truth = torch.zeros(spec.shape, dtype=torch.float64)
    truth[:, :, 0] = 1.0  # lon 0
    truth[:, :, 15] = 3.0  # lon 337.5
    u = (359.0 - 337.5) / 22.5
    want = 3.0 + u * (1.0 - 3.0)
    for lon in (359.0, -1.0, 719.0):
        obs = station_observations(truth, spec, [10.0], [lon], ["z500"], 0.0, 0)
        torch.testing.assert_close(obs.values, torch.tensor([want], dtype=torch.float64))
        cols = set((obs.flat_index[0, obs.weights[0] > 0] % 16).tolist())
        assert cols == {15, 0}


def test_station_on_a_grid_point_gives_the_grid_value():
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    obs = station_observations(truth, spec, [spec.lat[3]], [spec.lon[5]], ["u850"], 0.0, 0)
    assert obs.values.item() == truth[2, 3, 5].item()
    assert observed_points(obs) == 1
    # the gridded view puts it on that point
    mask, values = obs.dense()
    assert mask[2, 3, 5] == 1 and int(mask.sum()) == 1 and values[2, 3, 5] == truth[2, 3, 5]


def test_station_beyond_the_last_rows_clamps_to_them():
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    lon = 22.5 * 2 + 5.625  # a quarter of the way from column 2 to column 3
    obs = station_observations(truth, spec, [89.0, 78.75, -90.0], [lon] * 3, ["t850"], 0.0, 0)
    north = 0.75 * truth[0, 0, 2] + 0.25 * truth[0, 0, 3]
    south = 0.75 * truth[0, 7, 2] + 0.25 * truth[0, 7, 3]
    torch.testing.assert_close(obs.values, torch.stack([north, north, south]), rtol=0,
                               atol=1e-12)


def test_station_weights_against_a_direct_formula():
    spec = small_spec()
    flat, weights = bilinear_weights(spec, np.array([50.0]), np.array([100.0]))
    # rows 1 (56.25°) and 2 (33.75°); columns 4 (90°) and 5 (112.5°)
    t = (56.25 - 50.0) / 22.5
    u = (100.0 - 90.0) / 22.5
    assert flat[0].tolist() == [1 * 16 + 4, 1 * 16 + 5, 2 * 16 + 4, 2 * 16 + 5]
    np.testing.assert_allclose(weights[0], [(1 - t) * (1 - u), (1 - t) * u, t * (1 - u), t * u],
                               rtol=0, atol=1e-15)


def test_station_noise_and_ordering():
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-80, 80, 2000), rng.uniform(0, 360, 2000)
    sig = np.array([0.05, 0.2])
    obs = station_observations(truth, spec, lat, lon, ["z500", "t850"], sig, 1)
    # ordered by spec channel (t850 = 0 first), then station; σ follows its name
    assert obs.channel.tolist() == [0] * 2000 + [1] * 2000
    np.testing.assert_array_equal(obs.lat, np.tile(lat, 2))
    assert obs.error_std[:2000].unique().tolist() == [0.2]
    assert obs.error_std[2000:].unique().tolist() == [0.05]
    assert observed_points(obs) == 2000
    r = ((obs.values - obs.operator(truth)) / obs.error_std).numpy()
    assert abs(r.std() - 1) < 5 / math.sqrt(2 * r.size)
    # the same seed gives the same observations
    again = station_observations(truth, spec, lat, lon, ["t850", "z500"], sig[::-1], 1)
    assert torch.equal(again.values, obs.values)
    with pytest.raises(ValueError, match="error_std_normalised"):
        station_observations(truth, spec, lat, lon, ["t850"], -1.0, 1)
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        station_observations(truth, spec, [95.0], [0.0], ["t850"], 0.1, 1)


# --------------------------------------------------------------------------------- missing data
def test_missing_values_near_stations():
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    truth[0, 3, 6] = float("nan")
    lat = [spec.lat[3], spec.lat[3] - 1.0, spec.lat[4]]
    lon = [spec.lon[5], spec.lon[5] + 1.0, spec.lon[6]]
    obs = station_observations(truth, spec, lat, lon, ["t850"], 0.1, 0)
    # station 0 sits on (3, 5): (3, 6) has weight 0 and is harmless; station 1 needs (3, 6)
    assert obs.dropped == 1 and len(obs) == 2
    assert torch.isfinite(obs.values).all()
    np.testing.assert_array_equal(obs.lat, [lat[0], lat[2]])


# --------------------------------------------------------------------------------- device
@pytest.mark.gpu
def test_observations_live_on_the_truth_device():
    spec = small_spec()
    truth = random_truth(spec).cuda()
    s = ObservationSettings(density=0.3, sampling="elements")
    obs = observe(truth, spec, s, 2)
    cpu = observe(truth.cpu(), spec, s, 2)
    for name in ("values", "error_std", "channel", "flat_index", "weights"):
        assert getattr(obs, name).device.type == "cuda"
    assert torch.equal(obs.values.cpu(), cpu.values)
    st = station_obs(spec, truth)
    torch.testing.assert_close(st.values.cpu(), station_obs(spec, truth.cpu()).values)
