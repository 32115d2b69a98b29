"""Interpolation (successive correction): closed forms for one and two observations, geometry on
the sphere, skill on a smooth field, convergence over passes, configuration."""

import dataclasses

import numpy as np
import pytest
import torch

from bench.state import StateSpec
from methods import METHODS
from methods import interp as interp_module
from methods.base import Background, Observations, TrainingContext
from methods.interp import Interpolation

R_EARTH_KM = 6371.0
SPEC = StateSpec.create(
    ["t850", "z500", "u850"], lat=np.linspace(84.375, -84.375, 16), lon=np.arange(32) * 11.25,
    grid="legendre-gauss")
C, H, W = SPEC.shape


# --------------------------------------------------------------------------------- helpers
def context(spec: StateSpec = SPEC) -> TrainingContext:
    def unused(*args, **kwargs):
        raise AssertionError("Interpolation must not need training data")

    return TrainingContext(spec=spec, model=None, train_truth=unused, samples=unused,
                           device=torch.device("cpu"), cache_dir=None)


def prepared(**config) -> Interpolation:
    method = Interpolation(**config)
    method.prepare(context())
    return method


def background(x_b: torch.Tensor) -> Background:
    return Background(x_b=x_b, history=x_b[None], valid_time=np.datetime64("2020-01-01T00"),
                      lead_hours=6, cycle=0)


def grid_obs(points, dtype=torch.float32) -> Observations:
    """Grid-point observations (K = 1) from (channel, lat_index, lon_index, value) tuples."""
    n = len(points)
    ch, i, j, y = (np.array([p[k] for p in points]) for k in range(4)) if n else ([],) * 4
    i, j = np.asarray(i, dtype=int), np.asarray(j, dtype=int)
    return Observations(
        values=torch.as_tensor(np.asarray(y, dtype=float), dtype=dtype),
        error_std=torch.zeros(n, dtype=dtype),
        channel=torch.as_tensor(np.asarray(ch, dtype=int), dtype=torch.long),
        flat_index=torch.as_tensor(i * W + j, dtype=torch.long).reshape(n, 1),
        weights=torch.ones(n, 1, dtype=dtype),
        lat=SPEC.lat[i], lon=SPEC.lon[j], grid_shape=(C, H, W))


def great_circle_km(lat1, lon1, lat2, lon2):
    """Distance through unit vectors and atan2 — a different formula from the code's haversine."""
    def unit(lat, lon):
        lat, lon = np.deg2rad(lat), np.deg2rad(lon)
        return np.stack(np.broadcast_arrays(np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                            np.sin(lat)), axis=-1)
    p, q = unit(lat1, lon1), unit(lat2, lon2)
    return R_EARTH_KM * np.arctan2(np.linalg.norm(np.cross(p, q), axis=-1), (p * q).sum(-1))


def distances_to_grid(lat, lon):
    """(H, W) great-circle distances (km) from one point to every grid point."""
    return great_circle_km(lat, lon, SPEC.lat[:, None], SPEC.lon[None, :])


def gaussian(r, length, cutoff_scales=3.0):
    return np.where(r < cutoff_scales * length, np.exp(-0.5 * (r / length) ** 2), 0.0)


def smooth_field(phase: float) -> np.ndarray:
    """(H, W) smooth field of wavenumbers 1–2, different per phase."""
    lat, lon = np.deg2rad(SPEC.lat)[:, None], np.deg2rad(SPEC.lon)[None, :]
    return (np.cos(lat) * np.cos(lon - phase) + 0.6 * np.sin(2 * lat)
            + 0.4 * np.cos(lat) ** 2 * np.sin(2 * lon + phase))


def dense_setup():
    """Truth, a smooth background error, and noise-free observations at half the grid points
    (checkerboard) of every channel."""
    truth = np.stack([smooth_field(0.3 * k) for k in range(C)])
    error = np.stack([np.roll(smooth_field(1.0 + k), 5, axis=1) for k in range(C)])
    x_b = torch.tensor(truth + error, dtype=torch.float64)
    points = [(c, i, j, truth[c, i, j]) for c in range(C) for i in range(H) for j in range(W)
              if (i + j) % 2 == 0]
    return torch.tensor(truth), x_b, grid_obs(points, dtype=torch.float64)


def weighted_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    weights = torch.tensor(SPEC.latitude_weights())[None, :, None]
    return float(((a - b).double().square() * weights).mean().sqrt())


# --------------------------------------------------------------------------------- tests
def test_registered():
    assert METHODS["interp"] is Interpolation


def test_no_observations_returns_background_exactly():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(0))
    x_a = prepared().analyse(background(x_b), grid_obs([]))
    assert torch.equal(x_a, x_b)
    assert x_a is not x_b


def test_observation_equal_to_background_changes_nothing():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(1))
    obs = grid_obs([(0, 4, 7, float(x_b[0, 4, 7])), (2, 9, 20, float(x_b[2, 9, 20]))])
    for normalisation in ("grid", "observations"):
        x_a = prepared(normalisation=normalisation).analyse(background(x_b), obs)
        assert torch.equal(x_a, x_b)


@pytest.mark.parametrize("position", [(5, 3), (0, 31), (12, 16)])
def test_single_observation_bratseth_closed_form(position):
    """"observations" normalisation, ε² = 0, one pass: Δx_g = w(r_g) d, w(r) = exp(−r²/2L²)."""
    i, j = position
    length, d = 1500.0, 2.0
    x_b = torch.zeros(C, H, W, dtype=torch.float64)
    method = prepared(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(x_b), grid_obs([(1, i, j, d)], dtype=torch.float64))
    expected = d * gaussian(distances_to_grid(SPEC.lat[i], SPEC.lon[j]), length)
    np.testing.assert_allclose(x_a[1].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert float(x_a[1, i, j]) == pytest.approx(d, rel=1e-12)  # the observed point gets d
    assert (x_a[1] == 0).any() and (x_a[1] != 0).sum() > 1  # zero beyond the cutoff only
    assert torch.equal(x_a[[0, 2]], x_b[[0, 2]])  # other channels untouched


def test_single_observation_decay_ratio_at_grid_points():
    """The ratio of increments between two points is the ratio of the kernels at their
    great-circle distances (float32 state, the harness's dtype)."""
    i, j, length = 6, 10, 2000.0
    method = prepared(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W)), grid_obs([(0, i, j, 1.0)]))
    for (a, b) in [((i, j + 1), (i + 1, j)), ((i - 2, j), (i, j + 3))]:
        ra = great_circle_km(SPEC.lat[a[0]], SPEC.lon[a[1]], SPEC.lat[i], SPEC.lon[j])
        rb = great_circle_km(SPEC.lat[b[0]], SPEC.lon[b[1]], SPEC.lat[i], SPEC.lon[j])
        ratio = float(x_a[0, a[0], a[1]] / x_a[0, b[0], b[1]])
        assert ratio == pytest.approx(np.exp(-(ra**2 - rb**2) / (2 * length**2)), rel=1e-5)


def test_single_observation_successive_passes_closed_form():
    """With ε² > 0 the pass-p innovation at the observation is d (ε²/(1+ε²))^p, so
    Δx_g = Σ_p w_p(r_g) d (ε²/(1+ε²))^p / (1+ε²), with L_p = L · shrink^p."""
    i, j, d, length, shrink, eps2, passes = 7, 12, -1.5, 2500.0, 0.6, 0.5, 4
    method = prepared(length_scale_km=length, passes=passes, pass_shrink=shrink, smoothing=eps2,
                      normalisation="observations")
    x_b = torch.full((C, H, W), 0.25, dtype=torch.float64)
    x_a = method.analyse(background(x_b), grid_obs([(2, i, j, 0.25 + d)], torch.float64))
    r = distances_to_grid(SPEC.lat[i], SPEC.lon[j])
    q = eps2 / (1 + eps2)
    expected = sum(gaussian(r, length * shrink**p) * d * q**p / (1 + eps2) for p in range(passes))
    np.testing.assert_allclose((x_a - x_b)[2].numpy(), expected, rtol=1e-10, atol=1e-12)
    # the observed point approaches the observation as passes grow: residual d q^passes
    assert float(x_a[2, i, j] - x_b[2, i, j]) == pytest.approx(d * (1 - q**passes), rel=1e-10)


@pytest.mark.parametrize("eps2", [0.0, 0.3])
def test_single_observation_grid_normalisation_closed_form(eps2):
    """"grid" normalisation: Δx_g = w d / (w + ε²); with ε² = 0 the full d inside the cutoff."""
    i, j, d, length = 3, 25, 0.8, 1200.0
    method = prepared(length_scale_km=length, passes=1, smoothing=eps2, normalisation="grid")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)),
                         grid_obs([(0, i, j, d)], torch.float64))
    w = gaussian(distances_to_grid(SPEC.lat[i], SPEC.lon[j]), length)
    expected = np.where(w > 0, d * w / np.where(w > 0, w + eps2, 1.0), 0.0)
    np.testing.assert_allclose(x_a[0].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert float(x_a[0, i, j]) == pytest.approx(d / (1 + eps2), rel=1e-12)
    assert (x_a[0] == 0).any()
    assert not x_a[1:].any()


@pytest.mark.parametrize("normalisation", ["grid", "observations"])
def test_distant_observations_act_independently(normalisation):
    """Two observations of one channel further apart than twice the cutoff: the analysis is the
    background plus the two single-observation increments."""
    length = 1000.0
    a, b = (2, 4, 1.0), (12, 22, -2.0)
    assert great_circle_km(SPEC.lat[a[0]], SPEC.lon[a[1]], SPEC.lat[b[0]], SPEC.lon[b[1]]) > \
        2 * 3 * length
    method = prepared(length_scale_km=length, normalisation=normalisation)
    x_b = torch.zeros(C, H, W, dtype=torch.float64)

    def increment(points):
        return method.analyse(background(x_b), grid_obs(points, torch.float64)) - x_b

    both = increment([(0, *a), (0, *b)])
    np.testing.assert_allclose(both.numpy(), (increment([(0, *a)]) + increment([(0, *b)])).numpy(),
                               rtol=0, atol=1e-12)
    assert float(both[0, a[0], a[1]]) == pytest.approx(a[2])
    assert float(both[0, b[0], b[1]]) == pytest.approx(b[2])


@pytest.mark.parametrize("normalisation", ["grid", "observations"])
def test_duplicate_observations_average(normalisation):
    """Two observations at one point: one pass moves the point to their mean (both schemes)."""
    x_b = torch.zeros(C, H, W, dtype=torch.float64)
    obs = grid_obs([(1, 8, 8, 1.0), (1, 8, 8, 3.0)], torch.float64)
    x_a = prepared(passes=1, normalisation=normalisation).analyse(background(x_b), obs)
    assert float(x_a[1, 8, 8]) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("normalisation", ["grid", "observations"])
def test_channels_are_analysed_from_their_own_observations(normalisation):
    """Channels 0 and 1 observed at the same points (one shared kernel), channel 2 elsewhere:
    each channel's analysis equals the analysis from that channel's observations alone."""
    rng = np.random.default_rng(5)
    x_b = torch.tensor(rng.normal(size=(C, H, W)))
    shared = [(int(i), int(j)) for i, j in zip(rng.integers(H, size=30), rng.integers(W, size=30),
                                               strict=True)]
    points = [(c, i, j, float(rng.normal())) for c in (0, 1) for i, j in shared]
    points += [(2, int(i), int(j), float(rng.normal()))
               for i, j in zip(rng.integers(H, size=20), rng.integers(W, size=20), strict=True)]
    method = prepared(length_scale_km=1500.0, normalisation=normalisation)
    together = method.analyse(background(x_b), grid_obs(points, torch.float64))
    for c in range(C):
        alone = method.analyse(background(x_b),
                               grid_obs([p for p in points if p[0] == c], torch.float64))
        torch.testing.assert_close(together[c], alone[c], rtol=0, atol=1e-12)
        assert not torch.equal(together[c], x_b[c])


def test_distance_is_great_circle_across_the_pole():
    """An observation at 84.375° N, lon 0 reaches lon 180 at the same latitude: 11.25° over the
    pole (1251 km), not 180° of longitude."""
    length, d = 1000.0, 1.0
    method = prepared(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)),
                         grid_obs([(0, 0, 0, d)], torch.float64))
    r = great_circle_km(SPEC.lat[0], 0.0, SPEC.lat[0], 180.0)
    assert r == pytest.approx(2 * (90 - 84.375) * np.pi / 180 * R_EARTH_KM)
    assert float(x_a[0, 0, 16]) == pytest.approx(d * np.exp(-0.5 * (r / length) ** 2), rel=1e-10)
    assert float(x_a[0, 0, 16]) > 0.4
    assert float(x_a[0, 7, 16]) == 0.0  # near the equator, lon 180 is far away


def test_longitude_wraps():
    """An off-grid observation at lon 354.375° (midway between 348.75° and 360° = 0°) acts
    symmetrically on lon 0° and lon 348.75°, and on lon 11.25° and 337.5°."""
    i, length, y = 8, 1500.0, 1.0
    obs = Observations(
        values=torch.tensor([y], dtype=torch.float64),
        error_std=torch.zeros(1, dtype=torch.float64),
        channel=torch.tensor([0]), flat_index=torch.tensor([[i * W + 31, i * W + 0]]),
        weights=torch.tensor([[0.5, 0.5]], dtype=torch.float64),
        lat=np.array([SPEC.lat[i]]), lon=np.array([354.375]), grid_shape=(C, H, W))
    method = prepared(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)), obs)[0]
    assert float(x_a[i, 0]) > 0.9 * y
    assert float(x_a[i, 0]) == pytest.approx(float(x_a[i, 31]), rel=1e-12)
    assert float(x_a[i, 1]) == pytest.approx(float(x_a[i, 30]), rel=1e-12)
    expected = y * gaussian(distances_to_grid(SPEC.lat[i], 354.375), length)
    np.testing.assert_allclose(x_a.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_dense_observations_recover_a_smooth_field():
    """Noise-free observations at half the grid points of a smooth truth: the analysis error is
    a small fraction of the background error, and lower at unobserved points too."""
    truth, x_b, obs = dense_setup()
    x_a = prepared(length_scale_km=1500.0).analyse(background(x_b), obs)
    background_error, analysis_error = weighted_rmse(x_b, truth), weighted_rmse(x_a, truth)
    assert background_error > 0.5
    assert analysis_error < 0.02 * background_error  # measured: 0.0019
    unobserved = torch.ones(C, H, W, dtype=torch.bool)
    unobserved.view(C, -1)[obs.channel, obs.flat_index[:, 0]] = False
    assert (x_a - truth)[unobserved].abs().mean() < 0.03 * (x_b - truth)[unobserved].abs().mean()


@pytest.mark.parametrize("normalisation", ["grid", "observations"])
@pytest.mark.parametrize("shrink", [1.0, 0.5])
def test_more_passes_reduce_the_misfit(normalisation, shrink):
    truth, x_b, obs = dense_setup()
    misfits = []
    for passes in (1, 2, 3, 4):
        method = prepared(length_scale_km=1500.0, passes=passes, pass_shrink=shrink,
                          normalisation=normalisation)
        x_a = method.analyse(background(x_b), obs)
        misfits.append(float((obs.values - obs.operator(x_a)).square().mean().sqrt()))
        diagnostics = method.diagnostics()
        assert diagnostics["rms_residual"] == pytest.approx(misfits[-1])
        assert diagnostics["rms_innovation"] == pytest.approx(
            float((obs.values - obs.operator(x_b)).square().mean().sqrt()))
    assert all(b < a for a, b in zip(misfits, misfits[1:], strict=False)), misfits
    assert misfits[-1] < 0.5 * misfits[0]


def test_blocked_kernel_matches_one_block(monkeypatch):
    """Small kernel blocks (many per channel) bound the block size and give the same analysis."""
    _, x_b, obs = dense_setup()
    budget = 600
    sizes = []

    def recording(*args):
        r = great_circle(*args)
        sizes.append(r.numel())
        return r

    great_circle = interp_module._great_circle_km
    for normalisation in ("grid", "observations"):
        method = prepared(length_scale_km=1500.0, normalisation=normalisation)
        whole = method.analyse(background(x_b), obs)
        with monkeypatch.context() as patch:
            patch.setattr(interp_module, "_KERNEL_BUDGET", budget)
            patch.setattr(interp_module, "_great_circle_km", recording)
            blocked = method.analyse(background(x_b), obs)
        torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-12)
    assert max(sizes) <= budget
    assert len(sizes) > 4 * 9  # 9 kernel evaluations (3 passes; 1 + 2 kernels), ≥ 4 blocks each


def test_dtype_device_and_determinism():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(3)
    points = [(int(rng.integers(C)), int(rng.integers(H)), int(rng.integers(W)),
               float(rng.normal())) for _ in range(40)]
    method = prepared()
    first = method.analyse(background(x_b), grid_obs(points))
    second = method.analyse(background(x_b), grid_obs(points))
    assert first.dtype == x_b.dtype and first.device == x_b.device and first.shape == x_b.shape
    assert torch.equal(first, second)
    assert not torch.equal(first, x_b)


def test_config_round_trip_and_prepared_state_stays_out_of_it():
    method = Interpolation(length_scale_km=800.0, passes=2, pass_shrink=0.7, cutoff_scales=2.5,
                           smoothing=0.1, normalisation="observations", seed=4)
    assert Interpolation(**method.config()) == method
    config = method.config()
    method.prepare(context())
    assert method.config() == config
    assert Interpolation(**config) == method
    assert set(config) == {f.name for f in dataclasses.fields(Interpolation)}


def test_analyse_before_prepare_raises():
    with pytest.raises(RuntimeError, match=r"call prepare\(ctx\)"):
        Interpolation().analyse(background(torch.zeros(C, H, W)), grid_obs([(0, 1, 1, 1.0)]))


def test_grid_mismatch_raises():
    other = StateSpec.create(["t850"], lat=np.linspace(80, -80, 8), lon=np.arange(16) * 22.5,
                             grid="equiangular")
    method = Interpolation()
    method.prepare(context(other))
    with pytest.raises(ValueError, match=r"8 × 16 grid"):
        method.analyse(background(torch.zeros(C, H, W)), grid_obs([(0, 1, 1, 1.0)]))


@pytest.mark.parametrize("bad", [
    {"length_scale_km": 0.0}, {"passes": 0}, {"pass_shrink": 1.5}, {"pass_shrink": 0.0},
    {"cutoff_scales": -1.0}, {"smoothing": -0.1}, {"normalisation": "station"},
])
def test_invalid_hyperparameters_raise(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=rf"Interpolation\.{name} = .* expected"):
        Interpolation(**bad)
