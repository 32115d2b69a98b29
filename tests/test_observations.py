"""The observation protocol: reproducible draws, sampling modes, noise, H and its adjoint."""

import math

import numpy as np
import pytest
import torch

from bench.config import ObservationSettings
from bench.observations import (
    bilinear_weights,
    observe,
    observed_points,
    station_observations,
)
from bench.state import StateSpec

NAMES = ["t850", "z500", "u850"]


def small_spec(**stats) -> StateSpec:
    return StateSpec.create(NAMES, lat=np.linspace(78.75, -78.75, 8), lon=np.arange(16) * 22.5,
                            grid="legendre-gauss", **stats)


def random_truth(spec, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*spec.shape, generator=g, dtype=torch.float64).to(dtype)


def locations(obs):
    return obs.channel.tolist(), obs.flat_index[:, 0].tolist()


def assert_same(a, b):
    assert locations(a) == locations(b)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.error_std, b.error_std)
    np.testing.assert_array_equal(a.lat, b.lat)
    np.testing.assert_array_equal(a.lon, b.lon)


# --------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("sampling", ["columns", "elements"])
def test_draw_depends_only_on_seed_density_and_cycle(sampling):
    spec = small_spec()
    truth = random_truth(spec)
    s = ObservationSettings(density=0.2, sampling=sampling, seed=7)
    first = observe(truth, spec, s, cycle=3)
    # other draws (other cycles, densities, seeds, the global RNGs) in between change nothing
    for k in (0, 5, 1):
        observe(truth, spec, s, cycle=k)
    observe(truth, spec, ObservationSettings(density=0.5, sampling=sampling, seed=7), cycle=3)
    np.random.seed(123)
    np.random.standard_normal(100)
    torch.manual_seed(99)
    torch.randn(100)
    assert_same(first, observe(truth, spec, s, cycle=3))
    # the same locations and the same noise for any truth (any method, any world state)
    other = observe(random_truth(spec, seed=1), spec, s, cycle=3)
    assert locations(other) == locations(first)
    y_minus_hx = first.values - first.operator(truth)
    torch.testing.assert_close(other.values - other.operator(random_truth(spec, seed=1)),
                               y_minus_hx, rtol=0, atol=1e-6)
    assert y_minus_hx.abs().max() > 0


@pytest.mark.parametrize("sampling", ["columns", "elements"])
def test_redraw_gives_new_locations_each_cycle(sampling):
    spec = small_spec()
    truth = random_truth(spec)
    s = ObservationSettings(density=0.1, sampling=sampling)
    a, b = observe(truth, spec, s, 0), observe(truth, spec, s, 1)
    assert locations(a) != locations(b)


@pytest.mark.parametrize("sampling", ["columns", "elements"])
def test_fixed_network_keeps_locations_and_redraws_noise(sampling):
    spec = small_spec()
    truth = random_truth(spec)
    fixed = ObservationSettings(density=0.1, sampling=sampling, redraw=False)
    a, b = observe(truth, spec, fixed, 0), observe(truth, spec, fixed, 4)
    assert locations(a) == locations(b)
    assert not torch.equal(a.values, b.values)
    # cycle 0 of a fixed network is exactly cycle 0 of a redrawn one
    assert_same(a, observe(truth, spec, dataclass_replace(fixed, redraw=True), 0))
    # and cycle 4's noise is cycle 4's noise of the redrawn protocol
    redrawn = observe(truth, spec, dataclass_replace(fixed, redraw=True), 4)
    torch.testing.assert_close(torch.sort(b.values - b.operator(truth)).values,
                               torch.sort(redrawn.values - redrawn.operator(truth)).values,
                               rtol=0, atol=1e-6)


def dataclass_replace(settings, **changes):
    import dataclasses
    return dataclasses.replace(settings, **changes)


def test_different_seed_or_density_gives_different_draws():
    spec = small_spec()
    truth = random_truth(spec)
    a = observe(truth, spec, ObservationSettings(density=0.1, seed=0), 0)
    b = observe(truth, spec, ObservationSettings(density=0.1, seed=1), 0)
    assert locations(a) != locations(b)
    c = observe(truth, spec, ObservationSettings(density=0.1, seed=0, noise_fraction=0), 0)
    d = observe(truth, spec, ObservationSettings(density=0.1, seed=1, noise_fraction=0), 0)
    assert locations(c) != locations(d)


# --------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_density_outside_unit_interval_is_an_error(density):
    with pytest.raises(ValueError, match=r"density.*\(0, 1\]") as err:
        ObservationSettings(density=density)
    assert repr(density) in str(err.value)


def test_density_one_is_valid_and_observes_everything():
    spec = small_spec()
    obs = observe(random_truth(spec), spec, ObservationSettings(density=1.0), 0)
    assert len(obs) == math.prod(spec.shape)
    assert observed_points(obs) == 8 * 16


def test_bad_sampling_noise_seed_and_channels_are_errors():
    with pytest.raises(ValueError, match="'random'.*columns, elements"):
        ObservationSettings(density=0.1, sampling="random")
    with pytest.raises(ValueError, match="noise_fraction.*-0.01"):
        ObservationSettings(density=0.1, noise_fraction=-0.01)
    with pytest.raises(ValueError, match="noise_fraction"):
        ObservationSettings(density=0.1, noise_fraction=float("nan"))
    with pytest.raises(ValueError, match="seed"):
        ObservationSettings(density=0.1, seed=-1)
    with pytest.raises(ValueError, match="duplicates"):
        ObservationSettings(density=0.1, channels=("t850", "t850"))
    spec = small_spec()
    truth = random_truth(spec)
    with pytest.raises(ValueError, match="unknown channel 'q700'"):
        observe(truth, spec, ObservationSettings(density=0.1, channels=("q700",)), 0)
    with pytest.raises(ValueError, match="clim_std"):
        observe(truth, spec, ObservationSettings(density=0.1), 0, clim_std=np.ones(2))
    with pytest.raises(ValueError, match="cycle"):
        observe(truth, spec, ObservationSettings(density=0.1), -1)
    with pytest.raises(ValueError, match="shape"):
        observe(truth[:2], spec, ObservationSettings(density=0.1), 0)


# --------------------------------------------------------------------------------- sampling modes
@pytest.mark.parametrize("density", [0.05, 0.3, 0.77])
def test_columns_observe_every_channel_at_each_chosen_point(density):
    spec = small_spec()
    obs = observe(random_truth(spec), spec, ObservationSettings(density=density), 2)
    c, h, w = spec.shape
    n = round(density * h * w)
    assert len(obs) == c * n
    assert observed_points(obs) == n
    per_channel = [set(obs.flat_index[obs.channel == k, 0].tolist()) for k in range(c)]
    assert all(len(p) == n for p in per_channel)
    assert per_channel[0] == per_channel[1] == per_channel[2]
    # K = 1, weight 1; lat/lon are the grid's at the flat index
    assert obs.flat_index.shape == (len(obs), 1)
    assert torch.equal(obs.weights, torch.ones(len(obs), 1))
    flat = obs.flat_index[:, 0].numpy()
    np.testing.assert_array_equal(obs.lat, spec.lat[flat // w])
    np.testing.assert_array_equal(obs.lon, spec.lon[flat % w])
    # deterministic order: by channel, then flat index
    key = (obs.channel * h * w + obs.flat_index[:, 0]).tolist()
    assert key == sorted(key)


def test_elements_choose_channel_and_point_independently():
    spec = small_spec()
    c, h, w = spec.shape
    obs = observe(random_truth(spec), spec, ObservationSettings(density=0.3, sampling="elements"),
                  0)
    assert len(obs) == round(0.3 * c * h * w)
    elements = list(zip(*locations(obs), strict=True))
    assert len(set(elements)) == len(elements)  # without replacement
    counts = np.bincount(obs.flat_index[:, 0].numpy(), minlength=h * w)
    # some points carry one channel, some several: not the columns protocol
    assert counts.max() > 1 and (counts == 1).any()
    per_channel = [set(obs.flat_index[obs.channel == k, 0].tolist()) for k in range(c)]
    assert per_channel[0] != per_channel[1]
    key = (obs.channel * h * w + obs.flat_index[:, 0]).tolist()
    assert key == sorted(key)


@pytest.mark.parametrize("sampling", ["columns", "elements"])
def test_channel_subset_is_observed_in_spec_order(sampling):
    spec = small_spec()
    s = ObservationSettings(density=0.25, sampling=sampling, channels=("u850", "t850"))
    obs = observe(random_truth(spec), spec, s, 0)
    assert set(obs.channel.tolist()) == {0, 2}
    # columns: the points times the 2 channels; elements: a fraction of the 2 · H · W elements
    assert len(obs) == (2 * round(0.25 * 8 * 16) if sampling == "columns"
                        else round(0.25 * 2 * 8 * 16))
    # the order the names are given in does not change the draw
    swapped = dataclass_replace(s, channels=("t850", "u850"))
    assert_same(obs, observe(random_truth(spec), spec, swapped, 0))


def test_tiny_density_still_observes_one_point():
    spec = small_spec()
    obs = observe(random_truth(spec), spec, ObservationSettings(density=1e-6), 0)
    assert observed_points(obs) == 1 and len(obs) == 3


# --------------------------------------------------------------------------------- noise
def test_noise_free_observations_equal_the_truth():
    spec = small_spec()
    truth = random_truth(spec)
    obs = observe(truth, spec, ObservationSettings(density=0.4, noise_fraction=0.0), 1)
    c, h, w = spec.shape
    want = truth.reshape(-1)[obs.channel * h * w + obs.flat_index[:, 0]]
    assert torch.equal(obs.values, want)
    assert torch.equal(obs.error_std, torch.zeros(len(obs)))
    assert obs.values.dtype == torch.float32 and obs.error_std.dtype == torch.float32


def test_noise_has_the_stated_std():
    spec = small_spec()
    truth = random_truth(spec, dtype=torch.float64)
    s = ObservationSettings(density=1.0, noise_fraction=0.03, seed=11)
    res = []
    for k in range(20):
        obs = observe(truth, spec, s, k)
        assert torch.equal(obs.error_std, torch.full((len(obs),), 0.03, dtype=torch.float64))
        res.append(obs.values - obs.operator(truth))
    r = torch.cat(res).numpy() / 0.03  # should be N(0, 1), n = 20 · 384 = 7680 draws
    n = r.size
    # std of the sample mean is 1/√n and of the sample std ≈ 1/√(2n): 5σ bounds
    assert abs(r.mean()) < 5 / math.sqrt(n)
    assert abs(r.std() - 1) < 5 / math.sqrt(2 * n)


def test_noise_follows_the_climatological_std_per_channel():
    std = np.array([5.0, 800.0, 7.0])  # normalisation std (physical units)
    spec = small_spec(mean=np.zeros(3), std=std)
    clim = np.array([10.0, 400.0, 7.0])  # climatological std (physical units)
    truth = random_truth(spec, dtype=torch.float64)
    s = ObservationSettings(density=1.0, noise_fraction=0.1, seed=3)
    sigma_c = 0.1 * clim / std  # normalised: [0.2, 0.05, 0.1]
    res = [[] for _ in range(3)]
    for k in range(30):
        obs = observe(truth, spec, s, k, clim_std=clim)
        torch.testing.assert_close(obs.error_std, torch.as_tensor(sigma_c)[obs.channel])
        d = obs.values - obs.operator(truth)
        for ch in range(3):
            res[ch].append(d[obs.channel == ch])
    for ch in range(3):
        r = torch.cat(res[ch]).numpy() / sigma_c[ch]
        assert abs(r.std() - 1) < 5 / math.sqrt(2 * r.size)


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
@pytest.mark.parametrize("sampling", ["columns", "elements"])
def test_missing_truth_values_are_dropped_and_counted(sampling):
    spec = small_spec()
    truth = random_truth(spec)
    holed = truth.clone()
    holed[0, 2, :] = float("nan")  # a row of t850 missing
    holed[1, 5, 7] = float("nan")
    s = ObservationSettings(density=1.0, sampling=sampling)
    full = observe(truth, spec, s, 0)
    obs = observe(holed, spec, s, 0)
    assert obs.dropped == 17 and len(obs) == len(full) - 17
    assert torch.isfinite(obs.values).all()
    # the surviving observations are those of the complete truth, noise included
    keep = torch.isfinite(holed.reshape(-1)[full.channel * 128 + full.flat_index[:, 0]])
    assert torch.equal(obs.values, full.values[keep])
    assert torch.equal(obs.channel, full.channel[keep])


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
