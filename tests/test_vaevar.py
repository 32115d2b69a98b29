"""VAE-Var (methods/vaevar): the cost's gradient, what the analysis depends on, training, and
the fit → load → analyse lifecycle.

Everything runs on a 3 × 8 × 16 grid (z500, u850, t850) with synthetic background-error
samples in which u850 is tied to z500 (u = ∂z/∂i, i the latitude index running south: a
geostrophic-like balance), so a VAE trained on them must learn cross-variable structure.
"""

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from forecast_fixtures import small_spec
from method_fixtures import check_fit_is_pure, check_untrained, odd_grid_case, taylor_errors

from bench.cache import load_state, save_state
from bench.config import ObservationSettings
from bench.observations import observe
from methods.base import Background, Observations, TrainingContext
from methods.vaevar import VAEVar, VAEVarAnalyser
from methods.vaevar.train import train_vae
from methods.vaevar.vae import VAE

SPEC = small_spec(channels=("z500", "u850", "t850"), nlat=8, nlon=16)
Z, U, T = 0, 1, 2


def coupled_samples(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 8, 16): z a sum of 3 Gaussian bumps (width 1.5 cells, circular in longitude),
    u = ∂z/∂i (so u > 0 north of a positive bump, < 0 south of it), t independent bumps."""
    g = torch.Generator().manual_seed(seed)
    _, h, w = SPEC.shape
    i = torch.arange(h, dtype=torch.float32)[:, None]
    j = torch.arange(w, dtype=torch.float32)[None, :]

    def bumps():
        out = torch.zeros(n, h, w)
        for _ in range(3):
            amp = torch.randn(n, 1, 1, generator=g)
            ci = torch.rand(n, 1, 1, generator=g) * (h - 1)
            cj = torch.rand(n, 1, 1, generator=g) * w
            dj = torch.remainder(j - cj + w / 2, w) - w / 2
            out += amp * torch.exp(-((i - ci) ** 2 + dj**2) / (2 * 1.5**2))
        return out

    z = bumps()
    u = torch.gradient(z, dim=1)[0] * 2.0  # ∂z/∂i, scaled to z's size
    return torch.stack([z, u, bumps()], dim=1)


def context(samples: torch.Tensor, seed: int = 0) -> TrainingContext:
    calls = []

    def sample_fn(kind="nmc", **settings):
        calls.append((kind, settings))
        return samples

    def no_truth():
        raise AssertionError("VAE-Var must learn from the samples only")

    ctx = TrainingContext(spec=SPEC, model=None, train_truth=no_truth, samples=sample_fn,
                          device=torch.device("cpu"), seed=seed, progress=False)
    ctx.calls = calls
    return ctx


def background(x_b: torch.Tensor) -> Background:
    return Background(x_b, x_b[None].repeat(2, 1, 1, 1), np.datetime64("2002-01-01"), 6, 0)


def point_obs(values, points, sigma=0.1) -> Observations:
    """Observations at (channel, lat index, lon index) points with the given values."""
    _, h, w = SPEC.shape
    n = len(points)
    return Observations(
        values=torch.as_tensor(values, dtype=torch.float32),
        error_std=torch.full((n,), float(sigma)),
        channel=torch.tensor([p[0] for p in points]),
        flat_index=torch.tensor([[p[1] * w + p[2]] for p in points]),
        weights=torch.ones(n, 1),
        lat=np.array([SPEC.lat[p[1]] for p in points], dtype=np.float64),
        lon=np.array([SPEC.lon[p[2]] for p in points], dtype=np.float64),
        grid_shape=SPEC.shape)


class Trained(NamedTuple):
    method: VAEVar
    state: dict
    analyser: VAEVarAnalyser


@pytest.fixture(scope="module")
def trained():
    """A small VAE-Var trained on 256 coupled samples (≈ 2 s), its state and analyser."""
    method = VAEVar.for_tests(latent_channels=8, widths=(16, 16), downsamplings=1, epochs=40,
                              batch_size=32, lr=3e-3)
    state = method.fit(context(coupled_samples(256)))
    return Trained(method, state, method.load(state, SPEC, "cpu"))


def with_settings(trained: Trained, **changes) -> VAEVarAnalyser:
    """The trained VAE loaded by a method with other analysis settings (a fresh decoder copy:
    changing it leaves the fixture alone)."""
    return dataclasses.replace(trained.method, **changes).load(trained.state, SPEC, "cpu")


def rms(x) -> float:
    return float(x.double().square().mean().sqrt())


# ------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("shape, requested, levels", [
    ((3, 8, 16), 2, 2), ((3, 8, 16), 5, 3), ((69, 32, 64), 2, 2), ((2, 6, 10), 3, 1),
    ((2, 721, 1440), 2, 0)])
def test_architecture_adapts_to_any_grid(shape, requested, levels):
    vae = VAE(shape, latent_channels=2, widths=(4,) * 6, downsamplings=requested)
    assert vae.levels == levels
    recon, mean, _ = vae(torch.randn(1, *shape[:1], 8, 16)) if shape[1] == 721 else \
        vae(torch.randn(2, *shape))
    if shape[1] != 721:
        assert recon.shape == (2, *shape) and mean.shape == (2, *vae.latent_shape)


# ------------------------------------------------------------------------------------ training
def test_training_lowers_reconstruction_error_and_loss():
    torch.manual_seed(0)  # the weights' initialisation
    vae = VAE(SPEC.shape, latent_channels=8, widths=(16, 16), downsamplings=1)
    samples = coupled_samples(128, seed=3)
    samples = samples / samples.std(dim=(0, 2, 3))[:, None, None]  # as fit() scales them
    history = train_vae(vae, samples, epochs=60, batch_size=32, lr=3e-3,
                        recon_sigma=2.0, seed=0, progress=False)
    first, last = history[0], history[-1]
    print(f"epoch 1: mse {first.recon_mse:.4f} kl {first.kl:.2f} loss {first.loss:.2f}; "
          f"epoch {len(history)}: mse {last.recon_mse:.4f} kl {last.kl:.2f} "
          f"loss {last.loss:.2f}")
    assert last.recon_mse < 0.7 * first.recon_mse
    assert last.loss < 0.8 * first.loss
    # the KL term does not fall: it rises from ≈ 0 (encoder near the prior at initialisation)
    # as the latent starts to carry information, but by less than that buys in the likelihood
    # term (Σ Δ(recon − e)² / (2σ²) per sample)
    gain = (first.recon_mse - last.recon_mse) * samples[0].numel() / (2 * 2.0**2)
    assert first.kl < last.kl < gain


def test_fit_is_deterministic_and_its_cached_state_loads_the_same_analyser():
    """fit asks for the samples once; fitting again gives the same weights bit for bit (what
    the runner's cache relies on); the cached form (tuples → lists) loads the same decoder and
    gives the same analysis; fit leaves the method as it was."""
    samples = coupled_samples(64)
    method = VAEVar.for_tests()
    ctx = context(samples)
    state = check_fit_is_pure(method, ctx)
    assert ctx.calls == [("nmc", {"start_stride": 1, "days": 365})]
    again = method.fit(context(samples))
    for key, value in state["vae"].items():
        torch.testing.assert_close(again["vae"][key], value, rtol=0, atol=0)
    assert state["shape"] == list(SPEC.shape) and state["n_samples"] == 64
    assert len(state["history"]) == method.epochs and state["train_seconds"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp) / "state.pt")
        cached = load_state(Path(tmp) / "state.pt")
    first, second = method.load(state, SPEC, "cpu"), method.load(cached, SPEC, "cpu")
    for a, b in zip(first.decoder.state_dict().values(), second.decoder.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(first.scale, second.scale, rtol=0, atol=0)
    obs = point_obs([1.0, -0.5], [(Z, 3, 5), (T, 5, 10)])
    x_b = torch.zeros(SPEC.shape)
    assert torch.equal(first.analyse(background(x_b), obs).x_a,
                       second.analyse(background(x_b), obs).x_a)


def test_load_copies_the_decoder_to_the_analysis_dtype():
    method = VAEVar.for_tests(epochs=1)
    state = method.fit(context(coupled_samples(32)))
    for dtype, decoder, outer in (("float64", torch.float64, torch.float64),
                                  ("float32", torch.float32, torch.float32),
                                  ("mixed", torch.float32, torch.float64)):
        analyser = dataclasses.replace(method, analysis_dtype=dtype).load(state, SPEC, "cpu")
        assert {p.dtype for p in analyser.decoder.parameters()} == {decoder}
        assert analyser.scale.dtype == outer and analyser.scale.shape == (3, 1, 1)
        assert not any(p.requires_grad for p in analyser.decoder.parameters())


def test_mixed_precision_analysis_is_the_float64_one_to_float32_round_off():
    """"mixed": the float32 decoder inside a float64 cost and L-BFGS — the same minimiser
    as float64 up to float32 round-off in D(w), and J's gradient reaches w in float64."""
    method = VAEVar.for_tests(epochs=2)
    state = method.fit(context(coupled_samples(32)))
    obs = point_obs([1.0, -0.5, 0.3], [(Z, 3, 5), (T, 5, 10), (Z, 6, 2)])
    x_b = torch.zeros(SPEC.shape)
    full, mixed = (dataclasses.replace(method, analysis_dtype=d).load(state, SPEC, "cpu")
                   for d in ("float64", "mixed"))
    a, b = full.analyse(background(x_b), obs), mixed.analyse(background(x_b), obs)
    assert not torch.equal(a.x_a, b.x_a)  # the decoder really ran in float32
    torch.testing.assert_close(b.x_a, a.x_a, rtol=0, atol=1e-4)
    w = torch.zeros(1, *mixed.latent_shape, dtype=torch.float64, requires_grad=True)
    j, _ = mixed.cost_function(background(x_b), obs)(w + 0.1)
    j.backward()
    assert j.dtype == w.grad.dtype == torch.float64 and torch.isfinite(w.grad).all()


def test_truth_minus_forecast_samples_are_asked_for_with_a_24h_lead():
    ctx = context(coupled_samples(32))
    VAEVar.for_tests(training_samples="truth_minus_forecast", epochs=1).fit(ctx)
    assert ctx.calls == [("truth_minus_forecast", {"lead_hours": 24, "start_stride": 1,
                                                   "days": 365})]


def test_scale_is_the_per_channel_std_of_the_samples():
    samples = coupled_samples(64) * torch.tensor([1.0, 3.0, 0.5])[:, None, None]
    method = VAEVar.for_tests(epochs=1)
    analyser = method.load(method.fit(context(samples)), SPEC, "cpu")
    torch.testing.assert_close(analyser.scale.flatten().float(), samples.std(dim=(0, 2, 3)))


@pytest.mark.parametrize("field, value", [
    ("lam", 0.0), ("min_obs_error", 0.0), ("training_samples", "climatology"),
    ("downsamplings", 2), ("analysis_dtype", "float16"), ("inner_iterations", 0)])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        VAEVar.for_tests(**{field: value})


def test_config_round_trips_and_lists_are_refused_with_the_field():
    method = VAEVar(widths=(8, 16, 32))
    assert type(method)(**method.config()) == method
    with pytest.raises(ValueError, match="widths.*a tuple of positive integers"):
        VAEVar(widths=[8, 16, 32])  # config.json's lists become tuples in bench.setup


# ------------------------------------------------------------------------------------ analysis
@pytest.mark.parametrize("odd_decoder", [False, True])
def test_taylor_gradient_of_the_cost(trained, odd_decoder):
    g = torch.Generator().manual_seed(1)
    x_b = torch.randn(SPEC.shape, generator=g)
    obs = observe(x_b + 0.3 * torch.randn(SPEC.shape, generator=g), SPEC,
                  ObservationSettings(density=0.3, noise_fraction=0.05), cycle=0)
    # λ = 1: the observation term (through the decoder) dominates the curvature, not ½‖w‖²;
    # float64 throughout, so the check reaches 1e-6 (a float32 decoder's round-off stops at
    # ~1e-3: test_mixed_precision_… compares the mixed analysis with this one instead)
    method = with_settings(trained, lam=1.0, odd_decoder=odd_decoder, analysis_dtype="float64")
    cost = method.cost_function(background(x_b), obs)
    shape = (1, *method.latent_shape)
    errors = taylor_errors(cost, shape, g)
    print("|ratio − 1| for ε = 1e-1 … 1e-6:", ", ".join(f"{e:.1e}" for e in errors))
    # first-order Taylor: the error falls ~10× per decade of ε until round-off
    assert all(b < 0.2 * a for a, b in zip(errors[1:-1], errors[2:], strict=True))
    assert errors[-1] < 1e-4


def test_the_analysis_uses_the_decoder(trained):
    method = with_settings(trained, lam=1.0)
    x_b = torch.zeros(SPEC.shape)
    obs = point_obs([1.0, -0.5], [(Z, 3, 5), (T, 5, 10)])
    before = method.analyse(background(x_b), obs).x_a
    with torch.no_grad():
        last = [m for m in method.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        # double what the decoder produces (a sign flip would not do: with the odd decoder and
        # the symmetric prior, w → −w reaches the same increments)
        last.weight.mul_(2.0)
    after = method.analyse(background(x_b), obs).x_a
    print(f"max |Δx_a| after doubling the decoder's last layer: {(after - before).abs().max():.3f}")
    assert (after - before).abs().max() > 0.1


def test_state_from_uses_a_vae_trained_elsewhere(trained):
    """state_from + load install another VAE's decoder: a VAE whose last decoder layer is
    doubled gives another analysis; the scale must have one entry per channel."""
    method = dataclasses.replace(trained.method, lam=1.0)
    vae = VAE(SPEC.shape, method.latent_channels, method.widths, method.downsamplings)
    vae.decoder.load_state_dict({k: v.float()
                                 for k, v in trained.analyser.decoder.state_dict().items()})
    scale = trained.analyser.scale[:, 0, 0].float()
    obs = point_obs([1.0, -0.5], [(Z, 3, 5), (T, 5, 10)])
    x_b = torch.zeros(SPEC.shape)
    same = method.load(VAEVar.state_from(vae, scale), SPEC, "cpu").analyse(background(x_b), obs)
    reference = with_settings(trained, lam=1.0).analyse(background(x_b), obs)
    assert (same.x_a - reference.x_a).abs().max() < 1e-5
    state = VAEVar.state_from(vae, scale)
    with torch.no_grad():
        [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.mul_(2)
    unchanged = method.load(state, SPEC, "cpu").analyse(background(x_b), obs)  # a copy
    assert torch.equal(unchanged.x_a, same.x_a)
    other = method.load(VAEVar.state_from(vae, scale), SPEC, "cpu").analyse(background(x_b), obs)
    assert (other.x_a - reference.x_a).abs().max() > 0.1
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        VAEVar.state_from(vae, scale[:2])


@pytest.mark.parametrize("odd_decoder, subtract_offset", [(True, False), (False, True),
                                                         (False, False)])
def test_huge_lambda_returns_the_prior_mode(trained, odd_decoder, subtract_offset):
    """λ → ∞: x_a → x_b (odd_decoder or subtract_offset) or their x_b + s ⊙ D(0)."""
    g = torch.Generator().manual_seed(2)
    x_b = torch.randn(SPEC.shape, generator=g)
    obs = observe(x_b + torch.randn(SPEC.shape, generator=g), SPEC,
                  ObservationSettings(density=0.5), cycle=0)
    method = with_settings(trained, lam=1e12, odd_decoder=odd_decoder,
                           subtract_offset=subtract_offset, analysis_dtype="float64")
    x_a = method.analyse(background(x_b), obs).x_a
    with torch.no_grad():
        offset = (method.scale * method.decoder(
            torch.zeros(1, *method.latent_shape, dtype=torch.float64))[0]).float()
    mode = x_b if odd_decoder or subtract_offset else x_b + offset
    gap = float((x_a - mode).abs().max())
    print(f"max |x_a − mode| = {gap:.1e}; max |s D(0)| = {float(offset.abs().max()):.3f}")
    assert gap < 1e-4
    assert float(offset.abs().max()) > 1e-3  # the two modes really differ


@pytest.mark.parametrize("odd_decoder", [False, True])
def test_odd_decoder_makes_the_increment_odd_in_the_innovations(trained, odd_decoder):
    """Innovations d and −d: with odd_decoder the increments are exact negatives (no
    second-order shift common to both); the plain decoder's are not."""
    g = torch.Generator().manual_seed(4)
    x_b = torch.randn(SPEC.shape, generator=g)
    points = [(Z, 2, 3), (U, 5, 9), (T, 4, 12), (Z, 6, 1)]
    d = torch.tensor([1.0, -0.7, 0.8, 0.5])
    h_xb = torch.stack([x_b[c, i, j] for c, i, j in points])
    method = with_settings(trained, lam=1.0, odd_decoder=odd_decoder)
    plus = method.analyse(background(x_b), point_obs(h_xb + d, points)).x_a - x_b
    minus = method.analyse(background(x_b), point_obs(h_xb - d, points)).x_a - x_b
    asymmetry = rms(plus + minus) / rms(plus)
    print(f"odd_decoder={odd_decoder}: rms(δ(d) + δ(−d)) / rms(δ(d)) = {asymmetry:.2e}")
    assert rms(plus) > 0.05  # the observations move the analysis
    if odd_decoder:
        assert asymmetry < 1e-4
    else:
        assert asymmetry > 1e-2


def test_dense_exact_observations_with_small_lambda_are_fitted():
    # a latent as large as the state (no down-sampling, 4 ≥ 3 channels) so D can reach x_t
    method = VAEVar.for_tests(latent_channels=4, widths=(16,), downsamplings=0, epochs=20,
                              lam=1e-3, outer_iterations=3, inner_iterations=50)
    samples = coupled_samples(128)
    analyser = method.load(method.fit(context(samples)), SPEC, "cpu")
    x_b = torch.zeros(SPEC.shape)
    truth = coupled_samples(1, seed=9)[0]
    obs = observe(truth, SPEC, ObservationSettings(density=1.0, noise_fraction=0.0), cycle=0)
    analysis = analyser.analyse(background(x_b), obs)
    x_a = analysis.x_a
    misfit_b = rms(obs.operator(x_b) - obs.values)
    misfit_a = rms(obs.operator(x_a) - obs.values)
    print(f"rms misfit: background {misfit_b:.3f}, analysis {misfit_a:.4f}; "
          f"{analysis.diagnostics}")
    assert misfit_a < 0.1 * misfit_b


def test_a_single_z500_observation_gives_a_balanced_wind_increment(trained):
    x_b = torch.zeros(SPEC.shape)
    i0, j0 = 4, 8
    # λ = 1: R as given; this test is about the structure of B, not the weight of the data
    method = with_settings(trained, lam=1.0)
    x_a = method.analyse(background(x_b), point_obs([1.0], [(Z, i0, j0)], sigma=0.1)).x_a
    dz, du, dt = x_a - x_b
    print(f"Δz at the obs {dz[i0, j0]:.3f}; Δu north {du[i0 - 1, j0]:.3f}, south "
          f"{du[i0 + 1, j0]:.3f}; max|Δu| {du.abs().max():.3f}, max|Δt| {dt.abs().max():.3f}")
    assert dz[i0, j0] > 0.1
    # u = ∂z/∂i in every sample: a positive z increment brings u > 0 north, u < 0 south of it
    assert du[i0 - 1, j0] > 0.2 * dz[i0, j0] and du[i0 + 1, j0] < -0.2 * dz[i0, j0]
    assert du.abs().max() > 2 * dt.abs().max()  # t is independent of z in the samples


def test_diagnostics_report_iterations_and_a_lower_cost(trained):
    obs = point_obs([1.0, 0.5], [(Z, 2, 2), (U, 6, 12)])
    d = trained.analyser.analyse(background(torch.zeros(SPEC.shape)), obs).diagnostics
    method = trained.method
    assert 1 <= d["iterations"] <= method.outer_iterations * method.inner_iterations
    assert d["cost_final"] < d["cost_initial"] and math.isfinite(d["cost_obs_final"])
    assert d["evaluations"] == d["cost_evaluations"] >= d["iterations"]
    assert d["j_min"] == d["cost_final"]


def test_a_state_or_background_of_another_grid_is_refused(trained):
    other = small_spec(channels=("z500", "u850", "t850"), nlat=4, nlon=16)
    with pytest.raises(ValueError, match=r"trained on \(C, H, W\) = \(3, 8, 16\)"):
        trained.method.load(trained.state, other, "cpu")
    with pytest.raises(ValueError, match=r"differ from the \(C, H, W\)"):
        trained.analyser.analyse(background(torch.zeros(3, 4, 16)),
                                 point_obs([1.0], [(Z, 1, 1)]))


def test_untrained_state_analyses_at_an_odd_grid():
    """load(untrained(spec, seed)) on a 9 × 16 equiangular grid: a working analyser (random
    VAE of the configured size, no down-sampling on 9 rows), seeded; the hooks answer too."""
    spec, bg, obs = odd_grid_case()
    method = VAEVar.for_tests()
    state, analyser, analysis = check_untrained(method, spec, bg, obs, seed=2)
    assert "j_min" in analysis.diagnostics
    for key, value in method.untrained(spec, seed=2)["vae"].items():  # seeded
        torch.testing.assert_close(state["vae"][key], value, rtol=0, atol=0)
    kernel = analyser.dominant_kernel(bg, obs)
    assert kernel.unit == "FLOP" and kernel.fn().shape == (1, *analyser.latent_shape)
