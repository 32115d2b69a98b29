"""Correctness of 3DVar (methods/threedvar, methods/common/covariance): adjoints, gradient,
closed form, B's variances, geostrophic coupling; statistics from synthetic samples with known
structure, float64; the fit → load → analyse lifecycle and the cost hooks."""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from method_fixtures import check_fit_is_pure, check_untrained
from threedvar_fixtures import OMEGA, gaussian_spec, random_fields, synthetic_samples

from bench.experiments.synthetic import synthetic_spec
from methods.base import Background, Observations, TrainingContext
from methods.common.covariance import BMatrix, estimate
from methods.common.spectral import EARTH_RADIUS_M, Transforms
from methods.threedvar import ThreeDVar, ThreeDVarAnalyser
from methods.threedvar.solvers import cost_and_gradient, cost_function

VARIANCE_SCALE = 0.5


@pytest.fixture(scope="module")
def world():
    spec, samples = synthetic_samples(gaussian_spec(), n=200, seed=0)
    stats = estimate(spec, samples, variance_scale=VARIANCE_SCALE)
    return spec, samples, stats, BMatrix(spec, stats)


def dot_test(f, f_adjoint, in_shape, out_shape, seed=0):
    """|⟨f x, y⟩ − ⟨x, fᵀ y⟩| / (‖f x‖ ‖y‖): ~1e-16 for a correct adjoint."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(in_shape, generator=g, dtype=torch.float64)
    y = torch.randn(out_shape, generator=g, dtype=torch.float64)
    fx, fty = f(x), f_adjoint(y)
    return float(((fx * y).sum() - (x * fty).sum()).abs() / (fx.norm() * y.norm()))


def one_obs(spec, channel, lat, lon, innovation, x_b, sigma=0.1):
    """One grid-point observation of ``channel`` nearest (lat, lon), y = H(x_b) + innovation."""
    c, h, w = spec.shape
    i, j = int(np.abs(spec.lat - lat).argmin()), int(np.abs(spec.lon - lon).argmin())
    k = spec.index(channel)
    y = x_b[k, i, j].double() + innovation
    obs = Observations(
        values=y.reshape(1), error_std=torch.tensor([sigma], dtype=torch.float64),
        channel=torch.tensor([k]), flat_index=torch.tensor([[i * w + j]]),
        weights=torch.ones(1, 1, dtype=torch.float64), lat=np.array([spec.lat[i]]),
        lon=np.array([spec.lon[j]]), grid_shape=(c, h, w))
    return obs, (k, i, j)


def method_with(stats, spec, **config) -> ThreeDVarAnalyser:
    """The analyser of ThreeDVar(**config) with given statistics, on the CPU."""
    return ThreeDVar(**config).load(stats, spec, "cpu")


def background(x_b):
    return Background(x_b, x_b[None], np.datetime64("2002-01-01"), 6, 0)


# --------------------------------------------------------------------------------- spectral
class TestWindsFromPsiChi:
    def test_solid_body_rotation(self):
        spec = gaussian_spec()
        tr = Transforms(spec.grid, *spec.shape[1:])
        phi = torch.deg2rad(torch.tensor(np.array(spec.lat)))[:, None].expand(*spec.shape[1:])
        psi = -OMEGA * EARTH_RADIUS_M * torch.sin(phi)  # ψ̃ = ψ / a, ψ = −Ω a² sin φ
        u, v = tr.winds(psi, torch.zeros_like(psi))
        torch.testing.assert_close(u, OMEGA * EARTH_RADIUS_M * torch.cos(phi), atol=1e-9, rtol=0)
        torch.testing.assert_close(v, torch.zeros_like(v), atol=1e-9, rtol=0)

    def test_non_zonal_formulas(self):
        """ψ̃ = χ̃ = cos φ cos λ: u = −∂ψ̃/∂φ + ∂χ̃/∂λ / cos φ, v = ∂ψ̃/∂λ / cos φ + ∂χ̃/∂φ."""
        spec = gaussian_spec()
        tr = Transforms(spec.grid, *spec.shape[1:])
        phi = torch.deg2rad(torch.tensor(np.array(spec.lat)))[:, None]
        lam = torch.deg2rad(torch.tensor(np.array(spec.lon)))[None, :]
        f = torch.cos(phi) * torch.cos(lam)
        u, v = tr.winds(f, torch.zeros_like(f))
        torch.testing.assert_close(u, torch.sin(phi) * torch.cos(lam), atol=1e-12, rtol=0)
        torch.testing.assert_close(v, -torch.sin(lam).expand_as(v), atol=1e-12, rtol=0)
        u, v = tr.winds(torch.zeros_like(f), f)
        torch.testing.assert_close(u, -torch.sin(lam).expand_as(u), atol=1e-12, rtol=0)
        torch.testing.assert_close(v, -torch.sin(phi) * torch.cos(lam), atol=1e-12, rtol=0)

    def test_psi_chi_inverts_winds(self):
        spec = gaussian_spec()
        tr = Transforms(spec.grid, *spec.shape[1:])
        psi, chi = random_fields(tr, (2,), torch.Generator().manual_seed(1))
        psi2, chi2 = tr.psi_chi(*tr.winds(psi, chi))
        # ~1e-7, not 1e-14: winds of the top degrees need Legendre quadrature beyond 2 lmax − 1
        torch.testing.assert_close(psi2, psi, atol=1e-6, rtol=0)
        torch.testing.assert_close(chi2, chi, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------- adjoints
class TestAdjoints:
    def test_each_operator_and_u(self, world):
        spec, _, _, b = world
        c, h, w = spec.shape
        k, n_coef = b.shape_w
        cases = {
            "U_h": (b.u_h, b.u_h_adjoint, (k, n_coef), (k, h, w)),
            "S": (b.s, b.s_adjoint, (k, h, w), (k, h, w)),
            "U_v": (b.u_v, b.u_v_adjoint, (k, h, w), (b.n_cv, h, w)),
            "U_p": (b.u_p, b.u_p_adjoint, (b.n_cv, h, w), (c, h, w)),
            "U": (b.u, b.u_adjoint, (k, n_coef), (c, h, w)),
            "U batched": (b.u, b.u_adjoint, (3, k, n_coef), (3, c, h, w)),
        }
        errors = {name: dot_test(*case) for name, case in cases.items()}
        print("adjoint relative errors", errors)
        assert all(e < 1e-10 for e in errors.values()), errors

    def test_observation_operator(self, world):
        spec, *_ = world
        from bench.config import ObservationSettings
        from bench.observations import observe
        truth = torch.randn(spec.shape)
        obs = observe(truth, spec, ObservationSettings(density=0.1, seed=3), cycle=0)
        err = dot_test(obs.operator, obs.adjoint, spec.shape, (len(obs),))
        print("H adjoint relative error", err)
        assert err < 1e-10

    def test_the_dot_test_catches_wrong_adjoints(self, world):
        """The test can fail: an affine offset, a transposed balance, a missing wind part."""
        spec, _, stats, b = world
        c, h, w = spec.shape
        k, n_coef = b.shape_w
        offset = dot_test(lambda x: b.u(x) + 0.1, b.u_adjoint, (k, n_coef), (c, h, w))
        bad_stats = dict(stats, betas={n: be.transpose(-1, -2) for n, be in stats["betas"].items()})
        bad = BMatrix(spec, bad_stats)
        transposed = dot_test(b.u_p, bad.u_p_adjoint, (b.n_cv, h, w), (c, h, w))
        no_winds = BMatrix(spec, stats)
        no_winds.wind_rows = ()  # Uᵀ without the wind part
        winds = dot_test(b.u_p, no_winds.u_p_adjoint, (b.n_cv, h, w), (c, h, w))
        # correct adjoints give ~1e-17; these give 1e-4..1e-2 (random sums, ∝ 1/√size)
        assert min(offset, transposed, winds) > 1e-6, (offset, transposed, winds)


# --------------------------------------------------------------------------------- gradient
def test_taylor_gradient(world):
    """(J(w + εh) − J(w)) / (ε ⟨∇J, h⟩) → 1, its distance to 1 shrinking ∝ ε."""
    spec, samples, _, b = world
    x_b = samples[0].float()
    from bench.config import ObservationSettings
    from bench.observations import observe
    obs = observe(samples[1].float(), spec, ObservationSettings(density=0.05, seed=1), cycle=0)
    d = obs.values.double() - obs.operator(x_b.double())
    sigma = torch.full_like(d, 0.3)
    cost = cost_function(b, obs, d, sigma)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(b.shape_w, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(b.shape_w, generator=g, dtype=torch.float64)
    j = cost(w)
    (autograd_grad,) = torch.autograd.grad(j, w)
    j, w = j.detach(), w.detach()  # values from here on
    # the solver's gradient: the hand-written adjoints (what L-BFGS is given)
    j_explicit, grad = cost_and_gradient(b, obs, d, sigma)(w)
    assert abs(float(j_explicit - j)) <= 1e-12 * float(j)
    torch.testing.assert_close(grad, autograd_grad, rtol=1e-10,
                               atol=1e-10 * float(grad.abs().max()))
    eps = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    with torch.no_grad():
        dist = [abs(float((cost(w + e * h) - j) / (e * (grad * h).sum())) - 1) for e in eps]
    print("Taylor |ratio − 1|", dist)
    assert dist[-1] < 1e-4
    for a, c in zip(dist[:-1], dist[1:], strict=True):  # linear decrease: ×0.1 per step
        assert 0.05 < c / a < 0.2, dist


# --------------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_single_observation_matches_closed_form(world, solver):
    """δx = B h (hᵀ B h + σ²)⁻¹ d, B h = U (Uᵀ h) through the adjoint."""
    spec, samples, stats, b = world
    x_b = samples[0].float()
    obs, _ = one_obs(spec, "t500", 40.0, 100.0, 0.8, x_b, sigma=0.2)
    method = method_with(stats, spec, solver=solver, tolerance=1e-8, max_iterations=500)
    analysis = method.analyse(background(x_b.double()), obs)
    increment = analysis.x_a - x_b.double()
    h = obs.adjoint(torch.ones(1, dtype=torch.float64))  # hᵀ as a field
    bh = b.u(b.u_adjoint(h))
    d = float(obs.values[0] - obs.operator(x_b.double())[0])
    expected = bh * d / (float((h * bh).sum()) + 0.2**2)
    err = float((increment - expected).norm() / expected.norm())
    diagnostics = analysis.diagnostics
    print(solver, "single-obs relative error", err, diagnostics)
    assert err < 1e-5
    assert diagnostics["cost_final"] < diagnostics["cost_initial"]
    assert diagnostics["j_min"] == diagnostics["cost_final"]
    assert diagnostics["evaluations"] >= diagnostics["iterations"] >= 1


def test_solvers_agree_and_noise_free_obs_are_fitted(world):
    spec, samples, stats, _ = world
    from bench.config import ObservationSettings
    from bench.observations import observe
    x_b = samples[0].float()
    obs = observe(samples[1].float(), spec, ObservationSettings(density=0.02, seed=2), cycle=0)
    obs = dataclasses.replace(obs, error_std=torch.zeros_like(obs.error_std))  # σ_o = 0
    results = [method_with(stats, spec, solver=s, tolerance=1e-9, max_iterations=2000).analyse(
        background(x_b), obs).x_a for s in ("lbfgs", "cg")]
    assert results[0].dtype == torch.float32
    torch.testing.assert_close(results[0], results[1], atol=2e-4, rtol=0)
    misfit = (obs.operator(results[1].double()) - obs.values).abs().max()
    assert misfit < 0.05 * (obs.operator(x_b.double()) - obs.values).abs().max()


# --------------------------------------------------------------------------------- diag(B)
def test_diag_b_matches_sample_variances(world):
    """Hutchinson: var(U w), w ~ N(0, I), per channel and latitude band, against the samples'
    variance × variance_scale.

    Tolerance: 3 standard errors of the randomised estimate (from the draws) + 8 % for what B
    models only approximately: per-row cross-covariances of global vertical EOF modes and of
    ψ̃ with the unbalanced parts (zero in expectation here; sampling noise of 200 samples), and
    winds implied by an isotropic ψ̃/χ̃ spectrum with latitude-dependent std (not fitted).
    """
    spec, samples, _, b = world
    c, h, w = spec.shape
    g = torch.Generator().manual_seed(5)
    draws = torch.cat([b.u(torch.randn(100, *b.shape_w, generator=g, dtype=torch.float64))
                       .square().mean(dim=-1) for _ in range(20)])  # (2000, C, H)
    bands = 4
    est = draws.reshape(len(draws), c, bands, h // bands).mean(-1)  # (2000, C, bands)
    var_b, se = est.mean(0), est.std(0) / len(est) ** 0.5
    target = samples.var(dim=0).mean(-1).reshape(c, bands, h // bands).mean(-1) * VARIANCE_SCALE
    rel = (var_b - target).abs() / target
    tol = 3 * se / target + 0.08
    print("diag(B) max |rel diff|", float(rel.max()), "median", float(rel.median()),
          "max 3 SE", float((3 * se / target).max()))
    assert (rel < tol).all(), [(spec.names[i], rel[i].tolist()) for i in range(c)]


# --------------------------------------------------------------------------------- balance
@pytest.mark.parametrize("lat", [45.0, -45.0])
def test_z500_observation_gives_geostrophic_winds(world, lat):
    """A negative z500 innovation: a low, cyclonic wind increment — counter-clockwise in the NH
    (u east-going south of the point, west-going north of it; vorticity > 0), clockwise in the
    SH (the mirror image)."""
    spec, samples, stats, b = world
    x_b = torch.zeros(spec.shape)
    obs, (k, i, j) = one_obs(spec, "z500", lat, 90.0, -1.0, x_b, sigma=0.3)
    inc = method_with(stats, spec, tolerance=1e-8).analyse(background(x_b), obs).x_a.double()
    u = inc[spec.index("u500")] * spec.std[spec.index("u500")]
    v = inc[spec.index("v500")] * spec.std[spec.index("v500")]
    assert inc[k, i, j] < -0.3
    hemisphere = np.sign(lat)
    north, south = u[i - 2, j], u[i + 2, j]
    print(lat, "u north/south of the point (m/s)", float(north), float(south))
    assert hemisphere * south > 0.05 and hemisphere * north < -0.05
    psi, _ = b.transforms.psi_chi(u, v)  # vorticity ζ = ∇²ψ has the sign of −ψ at the extremum
    assert hemisphere * psi[i, j] < 0
    assert u.abs().max() > 0.1 * float(spec.std[spec.index("u500")])


# --------------------------------------------------------------------------------- method
def nmc_context(spec, samples, calls=None) -> TrainingContext:
    def nmc(kind="nmc", **settings):
        if calls is not None:
            calls.append(kind)
        return samples.float()

    return TrainingContext(spec=spec, model=None, train_truth=lambda: None, samples=nmc,
                           device=torch.device("cpu"), progress=False)


def test_fit_estimates_the_statistics_and_does_not_mutate_the_method(world):
    """fit = covariance.estimate on the NMC samples (CPU) plus the layout; the method is left
    as it was (no attribute added); the cached form of the state loads the same B."""
    from bench.cache import load_state, save_state
    spec, samples, *_ = world
    calls = []
    method = ThreeDVar(variance_scale=VARIANCE_SCALE)
    state = check_fit_is_pure(method, nmc_context(spec, samples, calls))
    assert calls == ["nmc"]
    assert state["shape"] == list(spec.shape) and state["names"] == list(spec.names)
    reference = estimate(spec, samples.float(), VARIANCE_SCALE)
    for key in ("sigma", "std"):
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp) / "state.pt")
        cached = load_state(Path(tmp) / "state.pt")
    a, b = method.load(state, spec, "cpu").b, method.load(cached, spec, "cpu").b
    torch.testing.assert_close(a.std, b.std, rtol=0, atol=0)
    torch.testing.assert_close(a.amp, b.amp, rtol=0, atol=0)
    x_b = samples[0].float()
    obs, _ = one_obs(spec, "t500", 40.0, 100.0, 0.8, x_b, sigma=0.2)
    assert torch.equal(method.load(state, spec, "cpu").analyse(background(x_b), obs).x_a,
                       method.load(cached, spec, "cpu").analyse(background(x_b), obs).x_a)


def test_load_refuses_statistics_of_another_grid(world):
    spec, samples, *_ = world
    state = ThreeDVar().fit(nmc_context(spec, samples))
    other = gaussian_spec(nlat=8, nlon=16)
    with pytest.raises(ValueError, match=r"3DVar statistics are for \(C, H, W\)"):
        ThreeDVar().load(state, other, "cpu")


def test_untrained_state_analyses_at_an_odd_grid():
    """load(untrained(spec, seed)) on a 9 × 16 equiangular grid (poles included): a working
    analyser whose single-observation increment peaks at the observation; seeded."""
    spec = synthetic_spec(9, 16, 9)
    method = ThreeDVar.for_tests()
    x_b = torch.zeros(spec.shape)
    obs, (k, i, j) = one_obs(spec, "t500", 0.0, 90.0, 1.0, x_b, sigma=0.1)
    state, analyser, analysis = check_untrained(method, spec, background(x_b), obs, seed=3)
    increment = analysis.x_a - x_b
    assert increment[k, i, j] > 0.1
    assert increment[k].abs().argmax() == i * spec.shape[2] + j
    assert "j_min" in analysis.diagnostics
    torch.testing.assert_close(method.untrained(spec, seed=3)["betas"]["t"], state["betas"]["t"])
    kernel = analyser.dominant_kernel(background(x_b), obs)
    assert kernel.unit == "FLOP" and kernel.fn().shape == analyser.b.shape_w


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="solver"):
        ThreeDVar(solver="newton")
    with pytest.raises(ValueError, match="variance_scale"):
        ThreeDVar(variance_scale=0)


# --------------------------------------------------------------------------------- single_obs
def test_single_obs_increments_and_figure(world):
    from matplotlib.figure import Figure

    from bench.experiments.single_obs import figure, single_observation_increments
    spec, _, stats, _ = world
    method = method_with(stats, spec, tolerance=1e-8)
    inc = single_observation_increments(method, spec, "z500", lat=45.0, lon=90.0,
                                        innovation=-100.0, physical=True)
    k = spec.index("z500")
    i, j = np.unravel_index(int(inc[k].abs().argmax()), inc[k].shape)
    assert inc[k, i, j] < 0 and abs(spec.lat[i] - 45.0) < 12 and abs(spec.lon[j] - 90.0) < 12
    fig = figure({"3dvar": inc, "twice": 2 * inc}, spec, "z500", level=500,
                 obs_location=(45.0, 90.0))
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_title()]) == 2


# --------------------------------------------------------------------------------- real world
def _cached_real_world():
    """(spec, NMC samples) of the built-in world if it, its emulator and samples are cached."""
    from bench import cache
    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import emulator_entry, load_or_train
    from bench.samples import SampleSettings, load_or_make_samples, samples_entry
    from bench.worlds import load_world
    try:
        w = load_world("heldsuarez-5.625")
        entry = emulator_entry(w, EmulatorConfig())
        if cache.read_marker(entry) is None or cache.read_marker(
                samples_entry(w, entry.name, SampleSettings("nmc"))) is None:
            return None
        model, _ = load_or_train(w, progress=False)
        return w.spec, load_or_make_samples(w, model, entry.name, SampleSettings("nmc"),
                                            progress=False)
    except Exception:  # noqa: BLE001 - no cached world here: nothing to check
        return None


@pytest.mark.slow
def test_real_world_z500_observation_is_cyclonic():
    """On the built-in Held–Suarez world's NMC statistics: a negative z500 innovation at
    45°N gives a counter-clockwise wind increment, at 45°S a clockwise one."""
    cached = _cached_real_world()
    if cached is None:
        pytest.skip("the built-in world, its emulator or its NMC samples are not cached")
    spec, samples = cached
    method = ThreeDVar(tolerance=1e-6, max_iterations=300).load(
        estimate(spec, samples, variance_scale=0.25), spec, "cpu")
    from bench.experiments.single_obs import single_observation_increments
    for lat in (45.0, -45.0):
        inc = single_observation_increments(method, spec, "z500", lat=lat, lon=129.0,
                                            innovation=-1.0, error_std=0.1).double()
        i = int(np.abs(spec.lat - lat).argmin())
        j = int(np.abs(spec.lon - 129.0).argmin())
        u = inc[spec.index("u500")]
        hemisphere = np.sign(lat)
        assert hemisphere * u[i + 2, j] > 0 and hemisphere * u[i - 2, j] < 0, (
            lat, float(u[i - 2, j]), float(u[i + 2, j]))
