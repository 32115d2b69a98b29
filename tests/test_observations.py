"""The observation protocol at grid points: reproducible draws, validation, sampling modes,
noise, missing truth. (H, its adjoint and off-grid stations: test_observations_operator.py.)"""

import math

import numpy as np
import pytest
import torch
from observation_fixtures import assert_same, dataclass_replace, locations, random_truth, small_spec

from bench.config import ObservationSettings
from bench.observations import observe, observed_points


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
