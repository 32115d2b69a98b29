"""DiffDA's exact Gaussian denoiser (methods/diffda/exact_denoiser.py): the closed form against
dense Gaussian conditioning, the fitted spectrum, sampling without observations, RePaint
injection against the Kalman posterior, and the method's fit → load → analyse with it.

The tiny prior: 2 channels on an 8 × 16 Gauss–Legendre grid (T8: 36 real coefficients per
channel for 128 points), a red and a flat spectrum, a latitude-dependent mean.
"""

import dataclasses

import pytest
import torch
from diffda_fixtures import grid_observations
from forecast_fixtures import advected_trajectory, small_spec
from method_fixtures import check_fit_is_pure, check_untrained, odd_grid_case
from test_diffda import BiasedPersistence, background_at, tiny_context

from methods.common.spectral import Transforms
from methods.diffda import DiffDA
from methods.diffda.exact_denoiser import ExactGaussianDenoiser, fit_prior
from methods.diffda.sampler import make_scheduler, repaint_sample

H, W, C = 8, 16, 2
ALPHAS = make_scheduler().alphas_cumprod
#: λ_{c,l} of the tiny prior: red (channel 0) and flat (channel 1), l = 0 … 7
RED_FLAT = torch.stack([(1 + torch.arange(8, dtype=torch.float64)) ** -1.5,
                        0.5 * torch.ones(8, dtype=torch.float64)])


def tiny_prior(spectrum=RED_FLAT, nugget=(0.0, 0.05)) -> tuple[ExactGaussianDenoiser, Transforms]:
    tr = Transforms("legendre-gauss", H, W)
    mean = 0.3 * torch.randn(C, H, generator=torch.Generator().manual_seed(0),
                             dtype=torch.float64)
    den = ExactGaussianDenoiser(mean, spectrum, torch.tensor(nugget, dtype=torch.float64), tr,
                                ALPHAS)
    return den, tr


def dense_covariance(tr: Transforms, lam: torch.Tensor, nugget: float) -> torch.Tensor:
    """Σ (H·W, H·W) of one channel from the definition: S⁻¹ applied to every unit
    coefficient, a_l0 of variance λ_l, Re and Im of a_lm (m > 0) of variance λ_l / 2 each,
    plus ν I."""
    columns, variances = [], []
    for ell in range(tr.lmax):
        for m in range(min(ell + 1, tr.mmax)):
            for unit, var in ((1.0, lam[ell] if m == 0 else lam[ell] / 2),
                              (1.0j, 0.0 if m == 0 else lam[ell] / 2)):
                e = torch.zeros(tr.lmax, tr.mmax, dtype=torch.complex128)
                e[ell, m] = unit
                columns.append(tr.isht(e).reshape(-1))
                variances.append(var)
    g = torch.stack(columns, dim=1)
    return g @ torch.diag(torch.tensor(variances, dtype=torch.float64)) @ g.T + \
        nugget * torch.eye(H * W, dtype=torch.float64)


# --------------------------------------------------------------------------- closed form
def test_exact_denoiser_is_dense_gaussian_conditioning():
    """ε̂ = √(1−ᾱ)(ᾱΣ + (1−ᾱ)I)⁻¹(z_t − √ᾱ μ) and E[z_0|z_t] = μ + √ᾱ Σ(ᾱΣ + (1−ᾱ)I)⁻¹(z_t −
    √ᾱ μ) with Σ built densely on the grid, at low, middle and high noise; the prior's point
    variance is Σ_l λ_l (2l+1)/4π + ν at every grid point (an isotropic field)."""
    nugget = (0.0, 0.05)
    den, tr = tiny_prior(nugget=nugget)
    g = torch.Generator().manual_seed(1)
    eye = torch.eye(H * W, dtype=torch.float64)
    for c in range(C):
        sigma = dense_covariance(tr, RED_FLAT[c], nugget[c])
        point = (RED_FLAT[c] * (2 * torch.arange(tr.lmax) + 1) / (4 * torch.pi)).sum()
        torch.testing.assert_close(sigma.diagonal(), (point + nugget[c]).expand(H * W))
        mu = den.mean[c][:, None].expand(H, W).reshape(-1)
        for t in (0, 30, 300, 999):
            a = ALPHAS[t].double()
            z = torch.zeros(1, C, H, W, dtype=torch.float64)
            z[0, c] = 2.0 * torch.randn(H, W, generator=g, dtype=torch.float64)
            rhs = z[0, c].reshape(-1) - a.sqrt() * mu
            solved = torch.linalg.solve(a * sigma + (1 - a) * eye, rhs)
            eps = (1 - a).sqrt() * solved
            x0 = mu + a.sqrt() * sigma @ solved
            tol = 1e-9 * eps.abs().max()
            out = den(z, torch.tensor([t]))
            torch.testing.assert_close(out[0, c].reshape(-1), eps, rtol=0, atol=tol)
            torch.testing.assert_close(den.posterior_mean(z, t)[0, c].reshape(-1), x0,
                                       rtol=0, atol=1e-9)


def test_fit_prior_recovers_the_spectrum_nugget_and_mean_of_exact_draws():
    """fit_prior on exact draws of N(μ, Σ) returns λ_l within 4 standard errors
    (√(2 / (N (2l+1))) relative), ν and μ: the estimator and the prior use one convention."""
    den, tr = tiny_prior()
    n = 2000
    draws = den.sample(n, torch.Generator().manual_seed(2))
    fitted = fit_prior(draws, tr)
    ls = torch.arange(tr.lmax, dtype=torch.float64)
    se = (2.0 / (n * (2 * ls + 1))).sqrt()
    ratio = fitted["spectrum"] / RED_FLAT
    assert torch.all((ratio - 1).abs() < 4 * se + 0.01), ratio
    assert abs(fitted["nugget"][0]) < 1e-12
    assert abs(fitted["nugget"][1] / 0.05 - 1) < 0.05, fitted["nugget"]
    assert (fitted["mean"] - den.mean).abs().max() < 4.5 * zonal_mean_se(den, n).max()


def zonal_mean_se(den: ExactGaussianDenoiser, n: int) -> torch.Tensor:
    """Standard error (C, H) of the zonal and sample mean of n draws: √(A_{c,0}[i, i] / (W n)),
    A_{c,0} the m = 0 block (the zonal mean is F_0 / √W)."""
    a0 = (den.eigvecs[:, 0].square() * den.eigvals[:, 0, None, :]).sum(dim=-1)
    return (a0 / (W * n)).sqrt()


# --------------------------------------------------------------------------- sampling
def test_sampling_without_observations_draws_from_the_prior():
    """RePaint with m = 0 and the exact denoiser (1000 DDPM steps) draws N(μ, Σ): the fitted
    λ_l of 300 samples within 4 standard errors + 2 % (the discretisation's shortfall at
    1000 steps is ≤ 1.2 % for these eigenvalues, sampler recursion), the mean within 4
    standard errors, and nothing outside T8 where ν = 0. At 40 steps the same check fails
    (variance 0.83 of the prior's for d ≈ 1: DDPM's strided ancestral steps under-disperse)."""
    flat = torch.stack([0.8 * torch.ones(8, dtype=torch.float64),
                        torch.linspace(1.0, 0.5, 8, dtype=torch.float64)])
    den, tr = tiny_prior(flat, nugget=(0.0, 0.0))
    n = 300
    zeros = torch.zeros(n, C, H, W, dtype=torch.float64)
    ls = torch.arange(tr.lmax, dtype=torch.float64)
    bound = 4 * (2.0 / (n * (2 * ls + 1))).sqrt() + 0.02
    out, _ = repaint_sample(den, make_scheduler(), zeros, zeros, zeros, steps=1000,
                            jump_length=1, resamples=1,
                            generator=torch.Generator().manual_seed(3))
    fitted = fit_prior(out, tr)
    assert torch.all((fitted["spectrum"] / flat - 1).abs() < bound), fitted["spectrum"] / flat
    assert float(fitted["nugget"].max()) < 1e-6
    assert (fitted["mean"] - den.mean).abs().max() < 4.5 * zonal_mean_se(den, n).max()
    coarse, _ = repaint_sample(den, make_scheduler(), zeros, zeros, zeros, steps=40,
                               jump_length=1, resamples=1,
                               generator=torch.Generator().manual_seed(3))
    assert not torch.all((fit_prior(coarse, tr)["spectrum"] / flat - 1).abs() < bound)


def kalman_case(frac=0.5):
    """Truth from the prior, exact observations at a random half of the points (all channels),
    the closed-form posterior mean μ + Σ_{·O} Σ_OO⁻¹ (y − μ_O) and the hard mask."""
    nugget = (0.02, 0.05)
    den, tr = tiny_prior(nugget=nugget)
    truth = den.sample(1, torch.Generator().manual_seed(5))[0]
    observed = torch.rand(H * W, generator=torch.Generator().manual_seed(6)) < frac
    mask = observed.reshape(H, W).expand(C, H, W).double()
    post = torch.zeros(C, H, W, dtype=torch.float64)
    for c in range(C):
        sigma = dense_covariance(tr, RED_FLAT[c], nugget[c])
        mu = den.mean[c][:, None].expand(H, W).reshape(-1)
        gain = sigma[:, observed] @ torch.linalg.inv(sigma[observed][:, observed])
        post[c] = (mu + gain @ (truth[c].reshape(-1)[observed] - mu[observed])).reshape(H, W)
    return den, truth, mask, post


def repaint_mean_error(den, truth, mask, post, n, **settings) -> float:
    """‖mean of n RePaint samples − Kalman mean‖ / ‖prior mean − Kalman mean‖ where unobserved;
    also checks the samples equal the observations where observed."""
    known = (truth * mask).expand(n, C, H, W)
    out, _ = repaint_sample(den, make_scheduler(), torch.zeros_like(known), known,
                            mask.expand(n, C, H, W), generator=torch.Generator().manual_seed(1),
                            **settings)
    torch.testing.assert_close(out[:, mask > 0], known[:, mask > 0], rtol=0, atol=1e-12)
    free = mask == 0
    prior_mean = den.mean[:, :, None].expand(C, H, W)
    return float((out.mean(dim=0) - post)[free].norm() / (prior_mean - post)[free].norm())


def test_repaint_injection_with_the_exact_prior_approaches_the_kalman_posterior():
    """Dense (50 %) exact observations, hard mask: the mean of 200 RePaint samples is within
    0.3 of the Kalman posterior mean (relative to the prior mean's distance from it; the
    samples' own noise is ≈ 0.06 of it); without resampling RePaint leaves more of the
    increment out (≈ 0.47: the known part is injected from independent noise and the unknown
    part is not harmonised); without injection it would be 1."""
    den, truth, mask, post = kalman_case()
    resampled = repaint_mean_error(den, truth, mask, post, 200, steps=50, jump_length=5,
                                   resamples=5)
    plain = repaint_mean_error(den, truth, mask, post, 200, steps=50, jump_length=5,
                               resamples=1)
    assert resampled < 0.3, resampled
    assert plain > resampled + 0.1, (plain, resampled)


# --------------------------------------------------------------------------- the method
@pytest.fixture(scope="module")
def tiny():
    spec = small_spec(nlat=8, nlon=16)
    truth = advected_trajectory(spec, 80, seed=0)
    model = BiasedPersistence(spec)
    return spec, truth, model, tiny_context(spec, truth, model)


def test_diffda_with_the_exact_denoiser_fits_without_training_and_analyses(tiny):
    """fit is pure and deterministic, trains nothing, and its prior is fit_prior of the
    scaled training increments; the analysis uses it (matches the observations where observed,
    deterministic for a seed, different for another seed); the default's cache key is
    unchanged and the exact one differs."""
    spec, truth, model, ctx = tiny
    method = DiffDA.for_tests(denoiser="exact_gaussian")
    state = check_fit_is_pure(method, ctx)
    entry = state["models"][0]
    assert entry["losses"] == [] and "state" not in entry and entry["n_pairs"] > 0
    start = model.history - 1
    starts = torch.arange(start, truth.shape[0] - 1)
    increments = truth[starts + 1] - model.rollout(
        torch.stack([truth[i - 1:i + 1] for i in starts.tolist()]), 1)[:, -1]
    scale = increments.std(dim=(0, 2, 3))
    torch.testing.assert_close(entry["scale"], scale)
    expected = fit_prior(increments / scale[:, None, None], Transforms.for_spec(spec))
    torch.testing.assert_close(entry["prior"]["spectrum"], expected["spectrum"])
    analyser = method.load(state, spec, "cpu")
    bg = background_at(model, truth, 40)
    obs = grid_observations(spec, truth[41], [5, 40, 77])
    first = analyser.analyse(bg, obs).x_a
    assert torch.equal(first, method.load(state, spec, "cpu").analyse(bg, obs).x_a)
    other = dataclasses.replace(method, seed=1).load(state, spec, "cpu").analyse(bg, obs).x_a
    assert not torch.equal(first, other)
    flat = first.reshape(3, -1)[:, [5, 40, 77]]
    torch.testing.assert_close(flat, truth[41].reshape(3, -1)[:, [5, 40, 77]], rtol=0,
                               atol=1e-5)
    assert "denoiser" not in DiffDA().cache_config()
    assert DiffDA(denoiser="exact_gaussian").cache_config()["denoiser"] == "exact_gaussian"
    with pytest.raises(ValueError, match="not a learned denoiser"):
        DiffDA.for_tests().load(state, spec, "cpu")
    with pytest.raises(ValueError, match="DiffDA.denoiser"):
        DiffDA(denoiser="gaussian")


def test_untrained_exact_prior_analyses_at_an_odd_grid():
    spec, bg, obs = odd_grid_case()
    method = DiffDA.for_tests(denoiser="exact_gaussian")
    _, analyser, analysis = check_untrained(method, spec, bg, obs, seed=1)
    assert analysis.diagnostics["evaluations"] == 15
    assert analyser.dominant_kernel(bg, obs).fn().shape == (1, *spec.shape)
    assert method.memory_estimate(spec, 10).model > 0


def test_a_soft_mask_re_applied_at_every_step_acts_as_a_hard_one():
    """The diagnosis of the 1 % divergence (method.py): the blend x = m ⊙ known + (1 − m) ⊙
    unknown is applied at each of the N reverse steps, and where the prior passes the signal
    (noise below its variance) the unknown part follows x_t, so it converges to the known
    value: m_eff ≈ 1 − (1 − m)^N. With m = 0.2 everywhere and a known plateau of 3, the
    exact-prior samples end near 3, not near the one-shot blend 0.2 · 3 + 0.8 · μ."""
    flat = torch.stack([2.0 * torch.ones(8, dtype=torch.float64)] * C)
    den, _ = tiny_prior(flat, nugget=(0.0, 0.0))
    n = 50
    known = torch.full((n, C, H, W), 3.0, dtype=torch.float64)
    out, _ = repaint_sample(den, make_scheduler(), torch.zeros_like(known), known,
                            torch.full_like(known, 0.2), steps=40, jump_length=5,
                            resamples=1, generator=torch.Generator().manual_seed(4))
    one_shot = 0.2 * 3.0 + 0.8 * den.mean[:, :, None]
    reached = out.mean(dim=0)
    assert float(reached.mean()) > 2.7, float(reached.mean())
    assert float((reached - one_shot).abs().min()) > 1.5


def test_the_fit_reads_its_samples_in_batches_scaled_and_signed():
    """fitted_entry scales (and, for known-prior draws, negates) a batch at a time: the prior
    equals fit_prior's on the whole scaled array and the mean flips with the sign."""
    from methods.diffda.exact_denoiser import fitted_entry

    spec = small_spec(channels=("t850", "z500"), nlat=H, nlon=W)
    d = advected_trajectory(spec, 40, seed=3) + 0.3
    scale = torch.tensor([0.5, 2.0])
    whole = fit_prior(d / scale[None, :, None, None], Transforms.for_spec(spec))
    batched = fitted_entry(d, scale, spec)["prior"]
    negated = fitted_entry(d, scale, spec, sign=-1.0)["prior"]
    for key in ("mean", "spectrum", "nugget"):
        torch.testing.assert_close(batched[key], whole[key])
    torch.testing.assert_close(negated["mean"], -whole["mean"])
    torch.testing.assert_close(negated["spectrum"], whole["spectrum"])
