"""LETKF (methods/letkf/) against exact answers: the Kalman filter on a linear-Gaussian problem
(the ETKF identity), the single-observation closed form with R-localisation, the inflation and
relaxation formulas, and a per-column reference loop written here with numpy and scipy."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from method_fixtures import great_circle_km

from bench.config import ObservationSettings
from bench.observations import observe, station_observations
from bench.state import StateSpec
from methods.base import Background, Observations, TrainingContext
from methods.common import neighbours
from methods.common.localisation import gaspari_cohn
from methods.letkf import LETKF
from methods.letkf import analysis as letkf_module

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


# ----------------------------------------------------------------------------- 5. batches
def gc_formula(z):
    """Gaspari & Cohn (1999, eq. 4.10) as printed (not the code's factored outer branch)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    return np.where(z <= 1, 1 - 5 / 3 * z**2 + 5 / 8 * z**3 + z**4 / 2 - z**5 / 4,
                    np.where(z < 2, 4 - 5 * z + 5 / 3 * z**2 + 5 / 8 * z**3 - z**4 / 2
                             + z**5 / 12 - 2 / (3 * np.maximum(z, 1)), 0.0))


def expected_channel_weights(names, mode: str, cutoff_lnp: float = math.inf) -> np.ndarray:
    """V[a, b] written out from the channel names: 1 for "all", δ_ab for "own"; "variable":
    GC(|ln p_a − ln p_b| / (cutoff / 2)) within an upper-air variable, δ_ab otherwise."""
    def parse(name):
        return (name[0], float(name[1:])) if name[1:].isdigit() else (name, None)

    out = np.zeros((len(names), len(names)))
    for a, (va, pa) in enumerate(map(parse, names)):
        for b, (vb, pb) in enumerate(map(parse, names)):
            if mode == "all":
                out[a, b] = 1.0
            elif mode == "variable" and va == vb and pa is not None and pb is not None:
                out[a, b] = gc_formula(abs(math.log(pa / pb)) / (cutoff_lnp / 2)) \
                    if math.isfinite(cutoff_lnp) else 1.0
            else:
                out[a, b] = float(a == b)
    return out


def reference_letkf(method: LETKF, spec: StateSpec, background: Background,
                    obs: Observations) -> np.ndarray:
    """Hunt et al. (2007) step by step at each (grid column, channel), numpy and scipy:
    (N, C, G). Channel a of column j is analysed from the observations i with the weight
    GC(r_ij / c) · V[a, channel_i] on their inverse error variance."""
    names = [ch.name for ch in spec.channels]
    v = expected_channel_weights(names, method.channel_localisation,
                                 method.vertical_localisation)
    xs = background.member_backgrounds.reshape(method.members, spec.shape[0], -1).numpy()
    n, c, g = xs.shape
    ys = obs.operator(background.member_backgrounds).numpy()  # (N, P)
    y_mean = ys.mean(0)
    y_pert = (ys - y_mean).T  # Y_b (P, N)
    sigma2 = np.maximum(obs.error_std.numpy(), method.min_obs_error) ** 2
    channel = obs.channel.numpy()
    lat = np.repeat(np.asarray(spec.lat), spec.shape[2])
    lon = np.tile(np.asarray(spec.lon), spec.shape[1])
    out = xs.copy()
    c_half = method.localisation_km / 2
    for j in range(g):
        r = great_circle_km(lat[j], lon[j], obs.lat, obs.lon)
        rho_h = gc_formula(r / c_half) if math.isfinite(c_half) else np.ones_like(r)
        for k in range(c):
            rho = rho_h * v[k, channel]
            local = rho > 1e-14
            if not local.any():
                continue
            yb = y_pert[local]
            cj = yb.T / (sigma2[local] / rho[local])  # C_j = Y_bᵀ R_j⁻¹
            p_a = np.linalg.inv((n - 1) * np.eye(n) / method.inflation + cj @ yb)
            w_a = np.real(scipy.linalg.sqrtm((n - 1) * p_a))
            w_mean = p_a @ cj @ (obs.values.numpy()[local] - y_mean[local])
            x_mean = xs[:, k, j].mean(0)
            x_pert = xs[:, k, j] - x_mean  # X_b (N,)
            x_a = x_pert @ w_a
            if method.rtpp:
                x_a = (1 - method.rtpp) * x_a + method.rtpp * x_pert
            if method.rtps:
                s_b, s_a = x_pert.std(ddof=1), x_a.std(ddof=1)
                x_a = x_a * (1 + method.rtps * (s_b - s_a) / s_a)
            out[:, k, j] = x_mean + x_pert @ w_mean + x_a
    return out


@pytest.mark.parametrize("mode", ["all", "own", "variable"])
@pytest.mark.parametrize("sampling", ["columns", "elements", "stations"])
def test_batched_analysis_is_the_per_column_loop_for_any_batch_size(sampling, mode,
                                                                    monkeypatch):
    """The vectorised analysis against the (column, channel) loop, with every channel choice;
    then in batches of 1–2 columns and tiny pair chunks, and with every local analysis solved
    in ensemble space (N × N) or in observation space (r × r): the same analysis."""
    spec = spec_of(7, 12, ("t850", "t700", "t500", "z500", "t2m"))
    c = spec.shape[0]
    background = ensemble(spec, 8, seed=9)
    truth = background.x_b + 0.5 * torch.randn(spec.shape, generator=torch.Generator()
                                                 .manual_seed(0), dtype=F64)
    if sampling == "stations":
        rng = np.random.default_rng(2)
        obs = station_observations(truth, spec, rng.uniform(-85, 85, 9),
                                   rng.uniform(0, 360, 9), ["t850", "t500", "t2m"], 0.2, 4)
        method = plain(members=8, localisation_km=4000.0, inflation=1.1, rtpp=0.0, rtps=0.6,
                       channel_localisation=mode, vertical_localisation=1.0)
    else:
        obs = observe(truth, spec, ObservationSettings(density=0.06, sampling=sampling,
                                                       noise_fraction=0.2), cycle=0)
        method = plain(members=8, localisation_km=3500.0, inflation=1.3, rtpp=0.4,
                       channel_localisation=mode, vertical_localisation=1.0)
    expected = reference_letkf(method, spec, background, obs)
    same = np.isclose(expected, background.member_backgrounds.reshape(expected.shape).numpy(),
                      rtol=0, atol=0).all(0)
    assert 0 < (~same).sum() < same.size  # some grid values analysed, some not
    got = analyse(method, spec, background, obs).members.reshape(expected.shape).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    again = analyse(method, spec, background, obs).members.reshape(expected.shape).numpy()
    assert np.array_equal(again, got)  # deterministic, bit for bit
    # batches of 1–2 columns, one location at a time, tiny pair chunks: the same analysis
    with monkeypatch.context() as patch:
        patch.setattr(letkf_module, "BATCH_BYTES", letkf_module.column_bytes(8, c) * 2)
        patch.setattr(neighbours, "MAX_PAIRS", 3)
        small = analyse(method, spec, background, obs).members.reshape(expected.shape).numpy()
    np.testing.assert_allclose(small, got, rtol=0, atol=1e-12)
    # every local analysis through the N × N eigendecomposition / the r × r one
    for low_rank in (0.0, math.inf):
        monkeypatch.setattr(letkf_module, "LOW_RANK", low_rank)
        other = analyse(method, spec, background, obs).members.reshape(expected.shape).numpy()
        np.testing.assert_allclose(other, expected, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- 6. channels
def test_own_an_observation_of_one_channel_changes_no_other_channel():
    """channel_localisation="own": observations of channel a leave every other channel's
    members bit for bit, and move channel a's ("all" moves them all)."""
    spec = spec_of(8, 16, ("t850", "z500", "u850", "t2m"))
    n = 10
    background = ensemble(spec, n, seed=12)
    xs = background.member_backgrounds
    rng = np.random.default_rng(5)
    obs = grid_obs(spec, [1] * 6, rng.choice(8 * 16, 6, replace=False), rng.normal(size=6), 0.2)
    own = analyse(plain(members=n, localisation_km=4000.0, channel_localisation="own",
                        inflation=1.4), spec, background, obs).members
    for k in (0, 2, 3):
        assert torch.equal(own[:, k], xs[:, k])
    assert (own[:, 1] - xs[:, 1]).abs().max() > 0.1
    multi = analyse(plain(members=n, localisation_km=4000.0, inflation=1.4, **MULTI), spec,
                    background, obs).members
    assert all((multi[:, k] - xs[:, k]).abs().max() > 1e-3 for k in (0, 2, 3))
    torch.testing.assert_close(own[:, 1], multi[:, 1], rtol=0, atol=1e-12)


def test_own_is_the_multivariate_analysis_of_each_one_channel_problem():
    """"own" on C channels, channel by channel, equals "all" on the one-channel problem made
    of that channel and its observations (with RTPS and inflation)."""
    names = ("t850", "z500", "u850")
    spec = spec_of(8, 16, names)
    n = 9
    background = ensemble(spec, n, seed=13)
    rng = np.random.default_rng(8)
    k_obs = 30
    obs = grid_obs(spec, rng.integers(0, 3, k_obs), rng.choice(8 * 16, k_obs, replace=False),
                   rng.normal(size=k_obs), 0.1)
    settings = {"members": n, "localisation_km": 3000.0, "inflation": 1.2, "rtpp": 0.0,
                "rtps": 0.5}
    own = analyse(plain(channel_localisation="own", **settings), spec, background, obs)
    for k, name in enumerate(names):
        one_spec = spec_of(8, 16, (name,))
        frames = background.members[:, :, k:k + 1]
        one = Background(frames[:, -1].mean(0), frames.mean(0), background.valid_time, 6, 0,
                         members=frames)
        mine = (obs.channel == k).numpy()
        one_obs = grid_obs(one_spec, [0] * int(mine.sum()), obs.flat_index[mine, 0].numpy(),
                           obs.values[mine], 0.1)
        single = analyse(plain(**settings, **MULTI), one_spec, one, one_obs)
        torch.testing.assert_close(own.members[:, k], single.members[:, 0], rtol=0, atol=1e-12)
        assert (single.members[:, 0] - frames[:, -1, 0]).abs().max() > 0.1


def test_variable_single_observation_weights_by_log_pressure_distance():
    """"variable": one observation of t500 moves channel t_p at column j by the closed form of
    the single-observation test with the weight ρ_j · GC(|ln(p / 500)| / c_v), c_v half the
    vertical cut-off: t400 (ln 1.25 = 0.223) and t700 (ln 1.4 = 0.336) by their weights, t200
    (ln 2.5 = 0.916 > 2 c_v = 0.8) and z500 and t2m not at all."""
    names = ("t200", "t400", "t500", "t700", "z500", "t2m")
    spec = spec_of(8, 16, names)
    n, g0, sigma, cut, vertical = 12, 3 * 16 + 5, 0.3, 5000.0, 0.8
    background = ensemble(spec, n, seed=14)
    xs = background.member_backgrounds.reshape(n, len(names), -1)
    x_b = xs.mean(0)
    y_b = xs[:, 2, g0]
    obs = grid_obs(spec, [2], [g0], [float(x_b[2, g0]) + 1.0], sigma)
    method = plain(members=n, localisation_km=cut, rtpp=0.0, channel_localisation="variable",
                   vertical_localisation=vertical)
    increment = analyse(method, spec, background, obs).x_a.reshape(len(names), -1) - x_b
    var = y_b.var()
    cov = ((xs - x_b) * (y_b - y_b.mean())[:, None, None]).sum(0) / (n - 1)  # (C, G)
    lat = np.repeat(np.asarray(spec.lat), 16)
    lon = np.tile(np.asarray(spec.lon), 8)
    rho_h = torch.as_tensor(gc_formula(great_circle_km(lat, lon, lat[g0], lon[g0]) / (cut / 2)))
    v = torch.as_tensor(gc_formula(np.abs(np.log(np.array([200.0, 400, 500, 700]) / 500))
                                   / (vertical / 2)))
    assert v[2] == 1 and v[0] == 0 and 0 < v[3] < v[1] < 1
    for k in range(4):
        rho = rho_h * v[k]
        expected = rho * cov[k] * 1.0 / (sigma**2 + rho * var)
        torch.testing.assert_close(increment[k], expected, rtol=0, atol=1e-12)
    assert increment[0].abs().max() == 0 and increment[4:].abs().max() == 0
    assert increment[1].abs().max() > 1e-2 and increment[3].abs().max() > 1e-2


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


# ----------------------------------------------------------------------------- 8. additive
def pool_state(spec: StateSpec, size: int, seed: int, channels=None) -> dict:
    """A known pool of ``size`` random fields (float64), nonzero only in ``channels``."""
    eps = torch.randn(size, *spec.shape, generator=torch.Generator().manual_seed(seed),
                      dtype=F64)
    if channels is not None:
        mask = torch.zeros(spec.shape[0], dtype=torch.bool)
        mask[list(channels)] = True
        eps[:, ~mask] = 0.0
    return {"additive_pool": eps, "shape": list(spec.shape), "names": list(spec.names)}


def with_members(background: Background, members: torch.Tensor, cycle: int | None = None
                 ) -> Background:
    """``background`` with its members' backgrounds replaced (and its cycle)."""
    frames = background.members.clone()
    frames[:, -1] = members
    return dataclasses.replace(background, x_b=members.mean(0), members=frames,
                               cycle=background.cycle if cycle is None else cycle)


def added(method: LETKF, state: dict, spec: StateSpec, background: Background
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, picks): what the analysis adds to the members where nothing is observed (N, C, H,
    W), and the pool samples it drew, found as the N distinct samples with D = α (ε_pick −
    mean ε_pick)."""
    none = random_obs(spec, 0, seed=0)
    d = method.load(state, spec, "cpu").analyse(background, none).members.to(F64) \
        - background.member_backgrounds.to(F64)
    eps = state["additive_pool"].reshape(state["additive_pool"].shape[0], -1).to(F64)
    step = (d - d[0]).reshape(d.shape[0], -1) / method.additive_inflation
    for first in range(eps.shape[0]):  # ε_pick_n = ε_pick_0 + (D_n − D_0) / α
        distance = torch.cdist(eps[first] + step, eps)
        if bool((distance.min(1).values < 1e-9).all()):
            return d, distance.argmin(1)
    raise AssertionError("the additive perturbations are not differences of pool samples")


def test_no_additive_inflation_is_the_letkf_without_it_and_fits_nothing():
    """α = 0: fit returns {} without asking for samples, untrained is {}, a pool handed to load
    is ignored: the analysis is the plain LETKF's (the per-column reference loop), bit for bit
    with and without the pool; the memory estimate holds no pool."""
    spec = spec_of(7, 12, ("t850", "z500", "t2m"))
    background = ensemble(spec, 8, seed=21)
    obs = random_obs(spec, 20, seed=22)
    method = plain(members=8, localisation_km=3500.0, inflation=1.2, rtpp=0.5)
    assert method.learns and method.fit(None) == {} and method.untrained(spec) == {}
    bare = analyse(method, spec, background, obs)
    pooled = method.load(pool_state(spec, 16, seed=1), spec, "cpu").analyse(background, obs)
    assert torch.equal(bare.members, pooled.members) and torch.equal(bare.x_a, pooled.x_a)
    expected = reference_letkf(method, spec, background, obs)
    np.testing.assert_allclose(bare.members.reshape(expected.shape).numpy(), expected, rtol=0,
                               atol=1e-10)
    assert bare.diagnostics["spread_additive"] == 0.0
    on = dataclasses.replace(method, additive_inflation=1.0, additive_pool=100)
    c, h, w = spec.shape
    assert on.memory_estimate(spec, 20).model - method.memory_estimate(
        spec, 20).model == 2.0 * 100 * c * h * w


def test_additive_draw_is_centred_distinct_pool_samples_scaled_by_alpha():
    """Nothing observed: the members come back as x_b⁽ⁿ⁾ + α (ε_{j_n} − mean ε_j) for N distinct
    pool samples j; the mean is unchanged; the draw is the same for the same (seed, cycle), bit
    for bit (a new analyser too), and differs between cycles and seeds."""
    spec = spec_of(4, 8)
    n, alpha = 6, 0.7
    background = ensemble(spec, n, seed=23)
    state = pool_state(spec, 15, seed=2)
    method = LETKF(members=n, additive_inflation=alpha, additive_pool=15)
    d, picks = added(method, state, spec, background)
    assert picks.unique().numel() == n
    eps = state["additive_pool"][picks]
    torch.testing.assert_close(d, alpha * (eps - eps.mean(0)), rtol=0, atol=1e-12)
    torch.testing.assert_close(d.mean(0), torch.zeros(spec.shape, dtype=F64), rtol=0,
                               atol=1e-14)
    again, same = added(method, state, spec, background)
    assert torch.equal(again, d) and torch.equal(same, picks)
    later = with_members(background, background.member_backgrounds, cycle=1)
    assert not torch.equal(added(method, state, spec, later)[1], picks)
    other = dataclasses.replace(method, seed=1)
    assert not torch.equal(added(other, state, spec, background)[1], picks)


def test_additive_inflation_adds_the_pool_spread_to_the_prior_of_the_local_analyses():
    """Members spread in t850 only, a pool in z500 only (no cross-covariance): the prior the
    local analyses use has spread² = the members' + α² × the draw's (spread_prior, spread_additive
    diagnostics), the draw's being α² Σ var(ε_pick) / (C G); and the analysis is the plain LETKF
    (with RTPP, relaxing to the inflated prior) of the members plus the draw — the global one
    the Kalman filter with their sample covariance."""
    spec = spec_of(4, 8)
    n, alpha = 8, 1.3
    c, h, w = spec.shape
    background = ensemble(spec, n, seed=24)
    xs = background.member_backgrounds.clone()
    xs[:, 1] = xs[:, 1].mean(0)  # no spread in z500
    background = with_members(background, xs)
    state = pool_state(spec, 12, seed=3, channels=[1])
    obs = random_obs(spec, 10, seed=25)
    settings = {"members": n, "localisation_km": 4000.0, "rtpp": 0.4}
    method = LETKF(additive_inflation=alpha, additive_pool=12, **settings)
    d, picks = added(method, state, spec, background)
    analysis = method.load(state, spec, "cpu").analyse(background, obs)
    diag = analysis.diagnostics
    spread_f2 = float(xs.var(0).mean())
    spread_d2 = alpha**2 * float(state["additive_pool"][picks].var(0).sum()) / (c * h * w)
    assert diag["spread_additive"] ** 2 == pytest.approx(spread_d2, rel=1e-12)
    assert diag["spread_prior"] ** 2 == pytest.approx(spread_f2 + spread_d2, rel=1e-12)
    assert spread_d2 > 0.1 * spread_f2
    inflated = with_members(background, xs + d)
    expected = reference_letkf(plain(**settings), spec, inflated, obs)
    np.testing.assert_allclose(analysis.members.reshape(expected.shape).numpy(), expected,
                               rtol=0, atol=1e-10)
    # the global filter: the Kalman filter with the inflated members' sample covariance
    kalman_settings = {**settings, "localisation_km": math.inf, "rtpp": 0.0, **MULTI}
    globally = LETKF(additive_inflation=alpha, additive_pool=12, **kalman_settings).load(
        state, spec, "cpu").analyse(background, obs)
    mean, cov = moments(globally.members)
    k_mean, k_cov = kalman(inflated, obs)
    torch.testing.assert_close(mean, k_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(cov, k_cov, rtol=0, atol=1e-11)


def test_fit_keeps_an_evenly_spaced_subset_of_six_hour_forecast_errors():
    """fit asks ctx.samples for truth − 6 h forecast samples (one start every additive_stride
    frames) and keeps at most additive_pool of them, evenly spaced, in float16, with the grid's
    layout; untrained makes a pool of the configured size; the cache key depends on whether
    α > 0, not on its value or on analysis settings."""
    spec = spec_of(4, 8)
    calls = []
    eps = torch.randn(50, *spec.shape, generator=torch.Generator().manual_seed(4))

    def samples(kind="nmc", **settings):
        calls.append((kind, settings))
        return eps

    ctx = TrainingContext(spec=spec, model=None, train_truth=lambda: None, samples=samples,
                          device=torch.device("cpu"))
    method = LETKF(additive_inflation=1.0, additive_pool=20)
    state = method.fit(ctx)
    assert calls == [("truth_minus_forecast", {"lead_hours": 6, "start_stride": 4})]
    pool = state["additive_pool"]
    assert pool.dtype == torch.float16 and tuple(pool.shape) == (20, *spec.shape)
    assert torch.equal(pool, eps[torch.arange(20) * 50 // 20].half())
    assert state["shape"] == list(spec.shape) and state["names"] == list(spec.names)
    everything = dataclasses.replace(method, additive_pool=80, additive_stride=2).fit(ctx)
    assert torch.equal(everything["additive_pool"], eps.half()) and calls[-1][1] == {
        "lead_hours": 6, "start_stride": 2}
    random = method.untrained(spec_of(6, 10), seed=3)["additive_pool"]
    assert tuple(random.shape) == (20, 2, 6, 10) and random.float().std() > 0
    key = method.cache_config()
    assert dataclasses.replace(method, additive_inflation=0.3, rtpp=0.9, localisation_km=1e3,
                               seed=4).cache_config() == key
    for changed in ({"additive_inflation": 0.0}, {"additive_pool": 64}, {"additive_stride": 1}):
        assert dataclasses.replace(method, **changed).cache_config() != key


def test_additive_pool_is_checked_at_load_and_an_untrained_one_analyses():
    spec = spec_of(4, 8)
    method = LETKF(members=8, additive_inflation=1.0, additive_pool=16)
    analysis = method.load(method.untrained(spec, seed=1), spec, "cpu").analyse(
        ensemble(spec, 8, seed=26, dtype=torch.float32), random_obs(spec, 6, seed=27))
    assert analysis.members.dtype == torch.float32 and torch.isfinite(analysis.members).all()
    assert analysis.diagnostics["spread_additive"] > 0
    with pytest.raises(ValueError, match="pool"):
        method.load({}, spec, "cpu")
    with pytest.raises(ValueError, match="fewer than"):
        method.load(pool_state(spec, 5, seed=0), spec, "cpu")
    with pytest.raises(ValueError, match="fit on this world"):
        method.load(pool_state(spec_of(4, 6), 16, seed=0), spec, "cpu")
