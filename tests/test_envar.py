"""Hybrid 3DEnVar (methods/envar) against exact answers: 3DVar when the ensemble weight is 0,
the Kalman filter with the ensemble's sample covariance when the static weight is 0 and
localisation is off, the adjoint of its control-variable transform, its gradient (Taylor test)
and the normal equations at the CG solution, its localisation correlation, the recentred
members, and its field checks. The method contract is tests/test_method_contract.py
(``-k envar``)."""

import math

import numpy as np
import pytest
import torch
from forecast_fixtures import small_spec
from test_letkf import ensemble, grid_obs
from threedvar_fixtures import gaussian_spec

from bench.config import ObservationSettings
from bench.experiments.synthetic import synthetic_spec
from bench.observations import observe
from bench.state import StateSpec
from methods import METHODS
from methods.base import Background, Observations
from methods.common.spectral import EARTH_RADIUS_M
from methods.envar import EnVar
from methods.envar.cost import Localisation, cost_function, gradient, solve
from methods.letkf import LETKF
from methods.threedvar import ThreeDVar

F64 = torch.float64


def loaded(method: EnVar, spec: StateSpec, seed: int = 1):
    return method.load(method.untrained(spec, seed), spec, "cpu")


def problem(spec: StateSpec, seed: int = 0, members: int = 6, **config):
    """(analyser, transform G, obs, d, σ) of one random case with observations of density 0.3."""
    analyser = loaded(EnVar(members=members, **config), spec)
    background = ensemble(spec, members, seed)
    g = torch.Generator().manual_seed(seed + 100)
    obs = observe(background.x_b + torch.randn(spec.shape, generator=g), spec,
                  ObservationSettings(density=0.3), cycle=seed)
    sigma = obs.error_std.to(F64).clamp_min(analyser.method.min_obs_error)
    d = obs.values.to(F64) - obs.operator(background.x_b.to(F64))
    return analyser, analyser.transform(background), obs, d, sigma


# ----------------------------------------------------------------------------- limits
def test_no_ensemble_weight_is_threedvar_with_conjugate_gradients():
    """β_e² = 0, β_s² = 1: 3DVar's analysis (same U, same observations, same CG) to round-off."""
    spec = synthetic_spec(16, 32, 13)
    background = ensemble(spec, 5, seed=3)
    g = torch.Generator().manual_seed(4)
    obs = observe(background.x_b + torch.randn(spec.shape, generator=g), spec,
                  ObservationSettings(density=0.05), cycle=0)
    envar = EnVar(members=5, beta_static=1.0, beta_ensemble=0.0, max_iterations=40,
                  tolerance=1e-6)
    state = envar.untrained(spec, seed=1)
    three = ThreeDVar(solver="cg", max_iterations=40, tolerance=1e-6).load(state, spec, "cpu")
    x_3d = three.analyse(Background(background.x_b, background.history,
                                    background.valid_time, 6, 0), obs)
    analysis = envar.load(state, spec, "cpu").analyse(background, obs)
    increment = x_3d.x_a - background.x_b
    assert float(increment.abs().max()) > 0.1  # not a tautology: a real increment
    torch.testing.assert_close(analysis.x_a, x_3d.x_a, rtol=0, atol=1e-5)
    assert analysis.diagnostics["iterations"] == x_3d.diagnostics["iterations"]
    assert analysis.diagnostics["j_min"] == pytest.approx(x_3d.diagnostics["j_min"], rel=1e-9)


def kalman_mean(background: Background, obs: Observations) -> torch.Tensor:
    """x_b + P_e Hᵀ (H P_e Hᵀ + R)⁻¹ (y − H x_b), P_e = X'X'ᵀ the members' sample covariance,
    flattened (S,), all in float64 with H as an explicit matrix."""
    xs = background.member_backgrounds.reshape(background.members.shape[0], -1).to(F64)
    x_b = xs.mean(0)
    x_pert = (xs - x_b) / math.sqrt(xs.shape[0] - 1)  # (N, S)
    s = x_b.numel()
    h = obs.operator(torch.eye(s, dtype=F64).reshape(s, *obs.grid_shape)).T  # (P, S)
    p_e = x_pert.T @ x_pert
    r = torch.diag(obs.error_std.to(F64) ** 2)
    gain = p_e @ h.T @ torch.linalg.inv(h @ p_e @ h.T + r)
    return x_b + gain @ (obs.values.to(F64) - h @ x_b)


@pytest.mark.parametrize("n_obs", [1, 5])
def test_no_static_weight_without_localisation_is_the_ensemble_kalman_mean(n_obs):
    """β_s² = 0, β_e² = 1, L = ∞: the mean is the Kalman filter's with P_e = X'X'ᵀ."""
    spec = small_spec(nlat=8, nlon=16)
    background = ensemble(spec, 6, seed=n_obs)
    rng = np.random.default_rng(n_obs)
    c, h, w = spec.shape
    channel, point = rng.integers(0, c, n_obs), rng.choice(h * w, n_obs, replace=False)
    truth = background.x_b.reshape(c, -1)[channel, point].to(F64)
    obs = grid_obs(spec, channel, point, truth + torch.as_tensor(rng.normal(0, 1, n_obs)), 0.1)
    method = EnVar(members=6, beta_static=0.0, beta_ensemble=1.0, localisation_km=math.inf,
                   max_iterations=200, tolerance=1e-12)
    analysis = loaded(method, spec).analyse(background, obs)
    expected = kalman_mean(background, obs)
    assert float((expected - background.x_b.reshape(-1)).abs().max()) > 0.1
    torch.testing.assert_close(analysis.x_a.reshape(-1).to(F64), expected, rtol=0, atol=1e-5)


def test_localisation_is_a_unit_variance_gaussian_correlation():
    """C_loc = Λ Λᵀ: 1 on the diagonal, ≈ exp(−d² / 2L²) with distance, symmetric; L = ∞: 1."""
    spec = gaussian_spec(16, 32, levels=(500,))  # the SHT's own Gauss–Legendre latitudes
    analyser = loaded(EnVar(members=4, localisation_km=1500.0), spec)
    h, w = spec.shape[1:]
    delta = torch.zeros(h * w, h, w, dtype=F64)
    delta.view(h * w, -1)[torch.arange(h * w), torch.arange(h * w)] = 1.0
    corr = analyser.loc(analyser.loc.adjoint(delta)).reshape(h * w, h * w)
    torch.testing.assert_close(torch.diagonal(corr), torch.ones(h * w, dtype=F64), atol=1e-7,
                               rtol=0)  # torch-harmonics' Legendre tables: float32 round-off
    torch.testing.assert_close(corr, corr.T, atol=1e-14, rtol=0)
    lat, lon = np.meshgrid(np.deg2rad(spec.lat), np.deg2rad(spec.lon), indexing="ij")
    lat, lon = lat.reshape(-1), lon.reshape(-1)
    cos = (np.sin(lat)[:, None] * np.sin(lat)[None] +
           np.cos(lat)[:, None] * np.cos(lat)[None] * np.cos(lon[:, None] - lon[None]))
    d_km = EARTH_RADIUS_M / 1e3 * np.arccos(np.clip(cos, -1, 1))
    gauss = np.exp(-d_km**2 / (2 * 1500.0**2))
    near = d_km < 3000
    assert np.abs(corr.numpy()[near] - gauss[near]).max() < 0.05
    assert np.abs(corr.numpy()[d_km > 6000]).max() < 0.02
    flat = Localisation(analyser.b.transforms, math.inf)
    assert flat.n_loc == 1
    torch.testing.assert_close(flat(torch.ones(1, dtype=F64)), torch.ones(h, w, dtype=F64))


# ----------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("groups", ["all", "variable"])
def test_transform_adjoint_dot_test(groups):
    """⟨G z, y⟩ = ⟨z, Gᵀ y⟩ for the hybrid transform (U and the Schur products with Λ)."""
    spec = synthetic_spec(9, 16, 9)
    _, g, *_ = problem(spec, channel_groups=groups)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(g.size, generator=gen, dtype=F64)
    y = torch.randn(spec.shape, generator=gen, dtype=F64)
    gz, gty = g(z), g.adjoint(y)
    assert float(((gz * y).sum() - (z * gty).sum()).abs() / (gz.norm() * y.norm())) < 1e-12
    assert g.shape_alpha[1] == (1 if groups == "all" else len({c.variable for c in spec.channels}))


def test_gradient_taylor_test_and_normal_equations():
    """(J(z + ε p) − J(z)) / (ε ∇J·p) → 1 as ε → 0 (linearly: J is quadratic); the CG
    solution satisfies A z = b (∇J(z_a) = 0) to the requested tolerance."""
    spec = synthetic_spec(16, 32, 13)
    _, g, obs, d, sigma = problem(spec, seed=5, min_obs_error=0.1)  # CG converges fast
    cost, grad = cost_function(g, obs, d, sigma), gradient(g, obs, d, sigma)
    gen = torch.Generator().manual_seed(7)
    z = 0.1 * torch.randn(g.size, generator=gen, dtype=F64)
    p = torch.randn(g.size, generator=gen, dtype=F64)
    slope = float(grad(z) @ p)
    errors = [abs(float(cost(z + eps * p) - cost(z)) / (eps * slope) - 1)
              for eps in (1e-2, 1e-3, 1e-4)]
    # J is quadratic: the ratio's error is ε pᵀAp / (2 ∇J·p), exactly linear in ε
    assert errors[1] / errors[0] == pytest.approx(0.1, rel=1e-3)
    assert errors[2] / errors[1] == pytest.approx(0.1, rel=1e-3) and errors[2] < 1e-2
    # and the central difference is exact up to round-off
    central = float(cost(z + 1e-3 * p) - cost(z - 1e-3 * p)) / 2e-3
    assert central == pytest.approx(slope, rel=1e-8)
    g0 = grad(torch.zeros(g.size, dtype=F64))
    z_a, iterations = solve(g, obs, d, sigma, max_iterations=500, tolerance=1e-8)
    assert 0 < iterations < 500
    assert float(grad(z_a).norm()) <= 1e-8 * float(g0.norm()) * 1.01
    assert float(cost(z_a)) < float(cost(torch.zeros_like(z_a)))


# ----------------------------------------------------------------------------- members
def test_members_are_the_letkf_members_recentred_on_the_envar_mean():
    spec = small_spec(nlat=8, nlon=16)
    background = ensemble(spec, 6, seed=2)
    g = torch.Generator().manual_seed(9)
    obs = observe(background.x_b + torch.randn(spec.shape, generator=g), spec,
                  ObservationSettings(density=0.2), cycle=0)
    method = EnVar(members=6)
    state = method.untrained(spec, seed=1)
    analysis = method.load(state, spec, "cpu").analyse(background, obs)
    letkf = LETKF(members=6, seed=method.seed).load(state, spec, "cpu").analyse(background, obs)
    torch.testing.assert_close(analysis.members.mean(0), analysis.x_a)
    torch.testing.assert_close(analysis.members - analysis.x_a,
                               letkf.members - letkf.members.mean(0), rtol=0, atol=1e-5)
    assert float((analysis.x_a - letkf.x_a).abs().max()) > 1e-3  # the mean is EnVar's


# ----------------------------------------------------------------------------- fields
def test_fields_are_checked_in_one_line_and_registered():
    for bad in ({"members": 1}, {"beta_static": -0.1}, {"beta_ensemble": math.nan},
                {"beta_static": 0.0, "beta_ensemble": 0.0}, {"localisation_km": 0.0},
                {"channel_groups": "level"}, {"min_obs_error": 0.0}, {"max_iterations": 0},
                {"tolerance": 1.0}, {"variance_scale": 0.0}):
        with pytest.raises(ValueError, match=list(bad)[-1]) as error:
            EnVar(**bad)
        assert "\n" not in str(error.value) and str(error.value).startswith("EnVar.")
    assert METHODS["envar"] is EnVar and EnVar.members == 20
    spec = small_spec(nlat=8, nlon=16)
    with pytest.raises(ValueError, match="members"):
        loaded(EnVar(members=5), spec).analyse(ensemble(spec, 6, seed=0),
                                               grid_obs(spec, [0], [3], [0.0], 0.1))
