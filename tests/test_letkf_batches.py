"""LETKF (methods/letkf/) batched over columns against a per-column reference loop written here
with numpy and scipy, and its channel localisations ("own", "variable", "all")."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from method_fixtures import great_circle_km
from test_letkf import (
    F64,
    MULTI,
    analyse,
    ensemble,
    grid_obs,
    plain,
    spec_of,
)

from bench.config import ObservationSettings
from bench.observations import observe, station_observations
from bench.state import StateSpec
from methods.base import Background, Observations
from methods.common import neighbours
from methods.letkf import LETKF
from methods.letkf import analysis as letkf_module


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
