"""LETKF (methods/letkf/) against exact answers: the Kalman filter on a linear-Gaussian problem
(the ETKF identity), the single-observation closed form with R-localisation, the inflation and
relaxation formulas, and a per-column reference loop written here with numpy and scipy."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from method_fixtures import great_circle_km

from bench.config import ObservationSettings
from bench.observations import observe
from bench.state import StateSpec
from methods.base import Background, Observations
from methods.common.localisation import gaspari_cohn
from methods.letkf import LETKF

F64 = torch.float64
#: the multivariate LETKF of Hunt et al. (2007): every observation updates every channel
MULTI = {"channel_localisation": "all"}


def plain(**settings) -> LETKF:
    """The LETKF without additive inflation: the filter of Hunt et al. (2007) the exact answers
    below check (additive inflation: section 8)."""
    return LETKF(**{"additive_inflation": 0.0, **settings})


def spec_of(nlat: int, nlon: int, channels=("t850", "z500")) -> StateSpec:
    lat = np.linspace(80.0, -80.0, nlat) if nlat > 2 else np.array([30.0, -30.0])
    return StateSpec.create(list(channels), lat, np.arange(nlon) * 360.0 / nlon, "equiangular")


def ensemble(spec: StateSpec, n: int, seed: int, spread: float = 0.5, dtype=F64) -> Background:
    """N members with smooth random perturbations around a random mean (2 history frames)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(spec.shape, generator=g, dtype=F64)
    eps = torch.randn(n, *spec.shape, generator=g, dtype=F64)
    eps = eps + eps.roll(1, -1) + eps.roll(-1, -1) + 0.5 * eps.roll(1, -2)
    members = (mean + spread * eps).to(dtype)
    frames = torch.stack([members - 0.1, members], dim=1)  # (N, 2, C, H, W)
    return Background(members.mean(0), frames.mean(0), np.datetime64("2001-01-01"), 6, 0,
                      members=frames)


def grid_obs(spec: StateSpec, channel, point, values, sigma) -> Observations:
    """Grid-point observations of (channel, flat point) with the given values and σ_o."""
    _, _, w = spec.shape
    point = np.asarray(point)
    n = point.size
    return Observations(
        values=torch.as_tensor(values, dtype=F64), error_std=torch.full((n,), sigma, dtype=F64),
        channel=torch.as_tensor(channel), flat_index=torch.as_tensor(point)[:, None],
        weights=torch.ones(n, 1, dtype=F64), lat=np.asarray(spec.lat)[point // w],
        lon=np.asarray(spec.lon)[point % w], grid_shape=spec.shape)


def analyse(method: LETKF, spec: StateSpec, background: Background, obs: Observations):
    return method.load({}, spec, "cpu").analyse(background, obs)


def moments(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (S,), covariance (S, S)) of (N, C, H, W) members, flattened."""
    flat = members.reshape(members.shape[0], -1).to(F64)
    x = flat - flat.mean(0)
    return flat.mean(0), x.T @ x / (flat.shape[0] - 1)


def kalman(background: Background, obs: Observations, inflation: float = 1.0):
    """The Kalman filter with the ensemble's sample covariance ρ P_b: (mean, covariance)."""
    x_b, p_b = moments(background.member_backgrounds)
    p_b = inflation * p_b
    s = x_b.numel()
    h = obs.operator(torch.eye(s, dtype=F64).reshape(s, *obs.grid_shape)).T  # (P, S)
    r = torch.diag(obs.error_std.to(F64) ** 2)
    k = p_b @ h.T @ torch.linalg.inv(h @ p_b @ h.T + r)
    return x_b + k @ (obs.values - h @ x_b), (torch.eye(s, dtype=F64) - k @ h) @ p_b


def random_obs(spec: StateSpec, k: int, seed: int, sigma: float = 0.3) -> Observations:
    rng = np.random.default_rng(seed)
    c, h, w = spec.shape
    return grid_obs(spec, rng.integers(0, c, k), rng.choice(h * w, k, replace=False),
                    rng.normal(size=k), sigma)


# ----------------------------------------------------------------------------- 1. Kalman
@pytest.mark.parametrize("localisation_km", [math.inf, 1e12])
@pytest.mark.parametrize("n", [24, 6])
def test_global_letkf_is_the_kalman_filter_with_the_ensemble_covariance(n, localisation_km):
    """Localisation off, no inflation: the analysis mean is x_b + K (y − H x_b) and the analysis
    covariance (I − K H) P_b, P_b the members' sample covariance, to round-off — with N larger
    than the state (16) and with N smaller (a rank-deficient P_b)."""
    spec = spec_of(2, 4)
    background = ensemble(spec, n, seed=n)
    obs = random_obs(spec, 6, seed=1)
    method = plain(members=n, localisation_km=localisation_km, rtpp=0.0, **MULTI)
    analysis = analyse(method, spec, background, obs)
    mean, cov = moments(analysis.members)
    k_mean, k_cov = kalman(background, obs)
    torch.testing.assert_close(mean, k_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(cov, k_cov, rtol=0, atol=1e-11)
    torch.testing.assert_close(analysis.x_a.reshape(-1), k_mean, rtol=0, atol=1e-11)
    # not a tautology: the update is large compared with the tolerance
    assert (k_mean - moments(background.member_backgrounds)[0]).abs().max() > 0.1
    assert analysis.diagnostics["evaluations"] == 8 and analysis.diagnostics["local_obs"] == 6


# ----------------------------------------------------------------------------- 3. one obs
def test_single_observation_increment_is_the_closed_form():
    """One observation y of x[k, g₀] with error σ_o: at a column j at distance r_j, with
    ρ_j = GC(r_j / c), every channel's mean increment is
        Δx̄_cj = ρ_j cov(x_cj, y_b) d / (σ_o² + ρ_j var(y_b)),   d = y − ȳ_b
    (R-localisation: the regression on an observation of error σ_o² / ρ_j — not B-localisation's
    ρ_j cov d / (σ_o² + var)); at g₀ the scalar Kalman gain var / (var + σ_o²) with the ensemble
    variance, and the analysis variance there var σ_o² / (var + σ_o²). Beyond 2c nothing moves."""
    spec = spec_of(8, 16, ("t850", "z500", "u850"))
    n, k, g0, sigma, cut = 10, 1, 3 * 16 + 5, 0.4, 5000.0
    background = ensemble(spec, n, seed=4)
    xs = background.member_backgrounds.reshape(n, 3, -1)
    x_b = xs.mean(0)
    y_b = xs[:, k, g0]
    obs = grid_obs(spec, [k], [g0], [float(x_b[k, g0]) + 1.0], sigma)
    analysis = analyse(plain(members=n, localisation_km=cut, rtpp=0.0, **MULTI), spec,
                       background, obs)
    increment = analysis.x_a.reshape(3, -1) - x_b

    d = 1.0
    var = y_b.var()
    cov = ((xs - x_b) * (y_b - y_b.mean())[:, None, None]).sum(0) / (n - 1)  # (C, G)
    lat = np.repeat(np.asarray(spec.lat), 16)
    lon = np.tile(np.asarray(spec.lon), 8)
    rho = torch.as_tensor(gaspari_cohn(great_circle_km(lat, lon, lat[g0], lon[g0]) / (cut / 2)))
    expected = rho * cov * d / (sigma**2 + rho * var)
    torch.testing.assert_close(increment, expected, rtol=0, atol=1e-12)
    assert float(increment[k, g0]) == pytest.approx(float(var / (var + sigma**2)), rel=1e-12)
    var_a = analysis.members.reshape(n, 3, -1)[:, k, g0].var()
    assert float(var_a) == pytest.approx(float(var * sigma**2 / (var + sigma**2)), rel=1e-10)
    # localisation: beyond the cut-off the members are the background's, bit for bit
    far = rho == 0
    assert far.any() and (~far).sum() > 1
    assert torch.equal(analysis.members.reshape(n, 3, -1)[:, :, far], xs[:, :, far])
    assert analysis.diagnostics["evaluations"] == int((~far).sum())


def test_a_distant_observation_changes_nothing():
    """Adding an observation farther than the cut-off from every column of a region leaves that
    region's analysis exactly as it was."""
    spec = spec_of(8, 16)
    background = ensemble(spec, 8, seed=2)
    near = grid_obs(spec, [0], [2 * 16 + 3], [1.0], 0.3)  # northern mid-latitudes
    both = grid_obs(spec, [0, 1], [2 * 16 + 3, 6 * 16 + 11], [1.0, -2.0], 0.3)
    method = plain(members=8, localisation_km=3000.0, rtpp=0.0, **MULTI)
    a, b = (analyse(method, spec, background, o).members.reshape(8, 2, -1) for o in (near, both))
    lat = np.repeat(np.asarray(spec.lat), 16)
    lon = np.tile(np.asarray(spec.lon), 8)
    beyond = great_circle_km(lat, lon, both.lat[1], both.lon[1]) > 3000.0 * (1 + 1e-9)
    torch.testing.assert_close(a[:, :, beyond], b[:, :, beyond], rtol=0, atol=1e-15)
    assert (a[:, :, ~beyond] - b[:, :, ~beyond]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- 4. spread
def test_inflation_is_the_kalman_filter_with_inflated_covariance():
    spec = spec_of(2, 4)
    background = ensemble(spec, 20, seed=7)
    obs = random_obs(spec, 5, seed=3)
    analysis = analyse(plain(members=20, localisation_km=math.inf, inflation=1.7, rtpp=0.0,
                             **MULTI), spec, background, obs)
    mean, cov = moments(analysis.members)
    k_mean, k_cov = kalman(background, obs, inflation=1.7)
    torch.testing.assert_close(mean, k_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(cov, k_cov, rtol=0, atol=1e-11)
    assert analysis.diagnostics["inflation"] == 1.7


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_rtpp_and_rtps_are_their_formulas(alpha):
    """RTPP: X_a ← (1 − α) X_a + α X_b; RTPS: X_a ← X_a (1 + α (σ_b − σ_a) / σ_a) per grid
    value, so the spread is (1 − α) σ_a + α σ_b. The mean is unchanged; unobserved columns
    keep their background members."""
    spec = spec_of(8, 16)
    n = 8
    background = ensemble(spec, n, seed=5)
    obs = random_obs(spec, 12, seed=6)
    xs = background.member_backgrounds.reshape(n, 2, -1)
    x_pb = xs - xs.mean(0)

    def run(**relax):
        a = analyse(plain(members=n, localisation_km=2500.0, inflation=1.2, **relax, **MULTI),
                    spec, background, obs)
        members = a.members.reshape(n, 2, -1)
        return members.mean(0), members - members.mean(0), a.diagnostics

    mean0, x_a, _ = run(rtpp=0.0)
    mean, x_rtpp, diag = run(rtpp=alpha)
    torch.testing.assert_close(mean, mean0, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_rtpp, (1 - alpha) * x_a + alpha * x_pb, rtol=0, atol=1e-12)
    sigma_b, sigma_a = x_pb.std(0), x_a.std(0)
    mean, x_rtps, diag = run(rtpp=0.0, rtps=alpha)
    torch.testing.assert_close(mean, mean0, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_rtps, x_a * (1 + alpha * (sigma_b - sigma_a) / sigma_a),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(x_rtps.std(0), (1 - alpha) * sigma_a + alpha * sigma_b,
                               rtol=0, atol=1e-12)
    unobserved = (x_a == x_pb).all(0).all(0)
    assert unobserved.any() and not unobserved.all()
    assert diag["relaxation"] > 1.0
    assert diag["spread_analysis"] < diag["spread_prior"] or alpha == 1.0  # α = 1: σ_b again
    with pytest.raises(ValueError, match="rtpp.*rtps"):
        LETKF(rtpp=0.5, rtps=0.5)


# ----------------------------------------------------------------------------- 7. behaviour
def test_small_ensemble_analysis_beats_the_background():
    """for_tests()'s 8 members and a truth drawn like a member (large-scale fields with a
    component shared by the channels): the analysis mean is closer to the truth than the
    background mean, the analysed spread smaller; float32 stays float32."""
    spec = spec_of(16, 32, ("t850", "z500", "u850"))
    method = dataclasses.replace(LETKF.for_tests(), localisation_km=3000.0,
                                 additive_inflation=0.0)
    assert method.members == 8
    c = spec.shape[0]
    eps = torch.randn(9, 1 + c, *spec.shape[1:], generator=torch.Generator().manual_seed(11))
    for _ in range(6):
        eps = (eps + eps.roll(1, -1) + eps.roll(-1, -1) + eps.roll(1, -2) + eps.roll(-1, -2)) / 5
    eps = eps[:, :1] + eps[:, 1:]  # (9, C, H, W): a shared component plus each channel's own
    eps = eps / eps.std()
    truth, members = eps[0], eps[1:]
    frames = torch.stack([members, members], dim=1)
    background = Background(members.mean(0), frames.mean(0), np.datetime64("2001-01-01"), 6, 0,
                            members=frames)
    obs = observe(truth, spec, ObservationSettings(density=0.05, noise_fraction=0.2), cycle=0)
    analysis = analyse(method, spec, background, obs)
    assert analysis.x_a.dtype == torch.float32 and analysis.members.dtype == torch.float32
    rmse_b = float((background.x_b - truth).square().mean().sqrt())
    rmse_a = float((analysis.x_a - truth).square().mean().sqrt())
    assert rmse_a < 0.9 * rmse_b
    d = analysis.diagnostics
    assert d["spread_analysis"] < d["spread_prior"] and d["iterations"] == 1
    assert 0 < d["evaluations"] <= 16 * 32 * c and d["local_obs"] > 0  # (column, channel) pairs


def test_fields_are_checked_and_no_observations_keep_the_background():
    for bad in ({"members": 1}, {"localisation_km": 0.0}, {"inflation": 0.9}, {"rtpp": 1.5},
                {"rtps": -0.1}, {"min_obs_error": 0.0}, {"channel_localisation": "level"},
                {"vertical_localisation": 0.0}, {"additive_inflation": -0.5},
                {"additive_pool": 10, "additive_inflation": 1.0}, {"additive_stride": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LETKF(**bad)
    spec = spec_of(4, 8)
    background = ensemble(spec, 5, seed=1)
    none = random_obs(spec, 0, seed=0)
    analysis = analyse(plain(members=5, inflation=1.5), spec, background, none)
    assert torch.equal(analysis.members, background.member_backgrounds)
    assert analysis.diagnostics["evaluations"] == 0 and analysis.diagnostics["iterations"] == 0
    with pytest.raises(ValueError, match="members"):
        analyse(plain(members=6), spec, background, none)
