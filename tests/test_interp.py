"""Interpolation (successive correction): closed forms for one and two observations, geometry on
the sphere, skill on a smooth field, convergence over passes, configuration. The kernel sums on
the shared neighbour search are tested in tests/test_interp_neighbours.py."""

import dataclasses

import numpy as np
import pytest
import torch
from interp_fixtures import (
    SPEC,
    C,
    H,
    W,
    background,
    dense_setup,
    gaussian,
    grid_obs,
    loaded,
)
from method_fixtures import R_EARTH_KM, check_untrained, great_circle_km, odd_grid_case

from bench.state import StateSpec
from methods import METHODS
from methods.base import Observations
from methods.common import neighbours
from methods.interp import Interpolation


# --------------------------------------------------------------------------------- helpers
def distances_to_grid(lat, lon):
    """(H, W) great-circle distances (km) from one point to every grid point."""
    return great_circle_km(lat, lon, SPEC.lat[:, None], SPEC.lon[None, :])


def weighted_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    weights = torch.tensor(SPEC.latitude_weights())[None, :, None]
    return float(((a - b).double().square() * weights).mean().sqrt())


# --------------------------------------------------------------------------------- tests
def test_registered():
    assert METHODS["interp"] is Interpolation


def test_no_observations_returns_background_exactly():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(0))
    x_a = loaded().analyse(background(x_b), grid_obs([])).x_a
    assert torch.equal(x_a, x_b)
    assert x_a is not x_b


def test_observation_equal_to_background_changes_nothing():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(1))
    obs = grid_obs([(0, 4, 7, float(x_b[0, 4, 7])), (2, 9, 20, float(x_b[2, 9, 20]))])
    for normalisation in ("grid", "observations"):
        x_a = loaded(normalisation=normalisation).analyse(background(x_b), obs).x_a
        assert torch.equal(x_a, x_b)


@pytest.mark.parametrize("position", [(5, 3), (0, 31), (12, 16)])
def test_single_observation_bratseth_closed_form(position):
    """"observations" normalisation, ε² = 0, one pass: Δx_g = w(r_g) d, w(r) = exp(−r²/2L²)."""
    i, j = position
    length, d = 1500.0, 2.0
    x_b = torch.zeros(C, H, W, dtype=torch.float64)
    method = loaded(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(x_b), grid_obs([(1, i, j, d)], dtype=torch.float64)).x_a
    expected = d * gaussian(distances_to_grid(SPEC.lat[i], SPEC.lon[j]), length)
    np.testing.assert_allclose(x_a[1].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert float(x_a[1, i, j]) == pytest.approx(d, rel=1e-12)  # the observed point gets d
    assert (x_a[1] == 0).any() and (x_a[1] != 0).sum() > 1  # zero beyond the cutoff only
    assert torch.equal(x_a[[0, 2]], x_b[[0, 2]])  # other channels untouched


def test_single_observation_decay_ratio_at_grid_points():
    """The ratio of increments between two points is the ratio of the kernels at their
    great-circle distances (float32 state, the harness's dtype)."""
    i, j, length = 6, 10, 2000.0
    method = loaded(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W)), grid_obs([(0, i, j, 1.0)])).x_a
    for (a, b) in [((i, j + 1), (i + 1, j)), ((i - 2, j), (i, j + 3))]:
        ra = great_circle_km(SPEC.lat[a[0]], SPEC.lon[a[1]], SPEC.lat[i], SPEC.lon[j])
        rb = great_circle_km(SPEC.lat[b[0]], SPEC.lon[b[1]], SPEC.lat[i], SPEC.lon[j])
        ratio = float(x_a[0, a[0], a[1]] / x_a[0, b[0], b[1]])
        assert ratio == pytest.approx(np.exp(-(ra**2 - rb**2) / (2 * length**2)), rel=1e-5)


def test_single_observation_successive_passes_closed_form():
    """With ε² > 0 the pass-p innovation at the observation is d (ε²/(1+ε²))^p, so
    Δx_g = Σ_p w_p(r_g) d (ε²/(1+ε²))^p / (1+ε²), with L_p = L · shrink^p."""
    i, j, d, length, shrink, eps2, passes = 7, 12, -1.5, 2500.0, 0.6, 0.5, 4
    method = loaded(length_scale_km=length, passes=passes, pass_shrink=shrink, smoothing=eps2,
                      normalisation="observations")
    x_b = torch.full((C, H, W), 0.25, dtype=torch.float64)
    x_a = method.analyse(background(x_b), grid_obs([(2, i, j, 0.25 + d)], torch.float64)).x_a
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
    method = loaded(length_scale_km=length, passes=1, smoothing=eps2, normalisation="grid")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)),
                         grid_obs([(0, i, j, d)], torch.float64)).x_a
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
    method = loaded(length_scale_km=length, normalisation=normalisation)
    x_b = torch.zeros(C, H, W, dtype=torch.float64)

    def increment(points):
        return method.analyse(background(x_b), grid_obs(points, torch.float64)).x_a - x_b

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
    x_a = loaded(passes=1, normalisation=normalisation).analyse(background(x_b), obs).x_a
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
    method = loaded(length_scale_km=1500.0, normalisation=normalisation)
    together = method.analyse(background(x_b), grid_obs(points, torch.float64)).x_a
    for c in range(C):
        alone = method.analyse(background(x_b),
                               grid_obs([p for p in points if p[0] == c], torch.float64)).x_a
        torch.testing.assert_close(together[c], alone[c], rtol=0, atol=1e-12)
        assert not torch.equal(together[c], x_b[c])


def test_distance_is_great_circle_across_the_pole():
    """An observation at 84.375° N, lon 0 reaches lon 180 at the same latitude: 11.25° over the
    pole (1251 km), not 180° of longitude."""
    length, d = 1000.0, 1.0
    method = loaded(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)),
                         grid_obs([(0, 0, 0, d)], torch.float64)).x_a
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
    method = loaded(length_scale_km=length, passes=1, normalisation="observations")
    x_a = method.analyse(background(torch.zeros(C, H, W, dtype=torch.float64)), obs).x_a[0]
    assert float(x_a[i, 0]) > 0.9 * y
    assert float(x_a[i, 0]) == pytest.approx(float(x_a[i, 31]), rel=1e-12)
    assert float(x_a[i, 1]) == pytest.approx(float(x_a[i, 30]), rel=1e-12)
    expected = y * gaussian(distances_to_grid(SPEC.lat[i], 354.375), length)
    np.testing.assert_allclose(x_a.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_dense_observations_recover_a_smooth_field():
    """Noise-free observations at half the grid points of a smooth truth: the analysis error is
    a small fraction of the background error, and lower at unobserved points too."""
    truth, x_b, obs = dense_setup()
    x_a = loaded(length_scale_km=1500.0).analyse(background(x_b), obs).x_a
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
        method = loaded(length_scale_km=1500.0, passes=passes, pass_shrink=shrink,
                          normalisation=normalisation)
        analysis = method.analyse(background(x_b), obs)
        x_a = analysis.x_a
        misfits.append(float((obs.values - obs.operator(x_a)).square().mean().sqrt()))
        diagnostics = analysis.diagnostics
        assert diagnostics["evaluations"] == diagnostics["iterations"] == passes
        assert diagnostics["rms_residual"] == pytest.approx(misfits[-1])
        assert diagnostics["rms_innovation"] == pytest.approx(
            float((obs.values - obs.operator(x_b)).square().mean().sqrt()))
    assert all(b < a for a, b in zip(misfits, misfits[1:], strict=False)), misfits
    assert misfits[-1] < 0.5 * misfits[0]



def test_dtype_device_and_determinism():
    x_b = torch.randn(C, H, W, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(3)
    points = [(int(rng.integers(C)), int(rng.integers(H)), int(rng.integers(W)),
               float(rng.normal())) for _ in range(40)]
    method = loaded()
    first = method.analyse(background(x_b), grid_obs(points)).x_a
    second = method.analyse(background(x_b), grid_obs(points)).x_a
    assert first.dtype == x_b.dtype and first.device == x_b.device and first.shape == x_b.shape
    assert torch.equal(first, second)
    assert not torch.equal(first, x_b)


def test_config_round_trip_and_nothing_is_learnt():
    """Interp learns nothing: the default fit (not cached), an empty untrained state; load
    leaves the method as it was."""
    method = Interpolation(length_scale_km=800.0, passes=2, pass_shrink=0.7, cutoff_scales=2.5,
                           smoothing=0.1, normalisation="observations", seed=4)
    assert Interpolation(**method.config()) == method
    config = method.config()
    assert not method.learns and method.untrained(SPEC, 0) == {}
    analyser = method.load({}, SPEC, "cpu")
    assert analyser.method is method and method.config() == config
    assert Interpolation(**config) == method
    assert set(vars(method)) == set(config) == {f.name for f in dataclasses.fields(Interpolation)}


def test_grid_mismatch_raises():
    other = StateSpec.create(["t850"], lat=np.linspace(80, -80, 8), lon=np.arange(16) * 22.5,
                             grid="equiangular")
    analyser = Interpolation().load({}, other, "cpu")
    with pytest.raises(ValueError, match=r"8 × 16 grid"):
        analyser.analyse(background(torch.zeros(C, H, W)), grid_obs([(0, 1, 1, 1.0)]))


def test_loads_and_analyses_at_an_odd_grid_and_answers_the_cost_hooks():
    """load(untrained(spec, seed)) on a 9 × 16 equiangular grid (poles included) analyses;
    memory_estimate and dominant_kernel answer (bytes: the sums are sparse)."""
    spec, bg, obs = odd_grid_case()
    method = Interpolation(length_scale_km=2000.0)
    _, analyser, analysis = check_untrained(method, spec, bg, obs)
    assert analysis.diagnostics["rms_residual"] < analysis.diagnostics["rms_innovation"]
    assert method.memory_estimate(spec, n_obs=len(obs)).analysis >= neighbours.chunk_bytes()
    kernel = analyser.dominant_kernel(bg, obs)
    assert kernel.unit == "B" and kernel.work > 1
    assert kernel.fn()[0].shape == (9 * 16, 3)


@pytest.mark.parametrize("bad", [
    {"length_scale_km": 0.0}, {"passes": 0}, {"pass_shrink": 1.5}, {"pass_shrink": 0.0},
    {"cutoff_scales": -1.0}, {"smoothing": -0.1}, {"normalisation": "station"},
])
def test_invalid_hyperparameters_raise(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=rf"Interpolation\.{name} = .* expected"):
        Interpolation(**bad)
