"""VAE-Var (methods/vaevar): the cost's gradient, what the analysis depends on, training.

Everything runs on a 3 × 8 × 16 grid (z500, u850, t850) with synthetic background-error
samples in which u850 is tied to z500 (u = ∂z/∂i, i the latitude index running south: a
geostrophic-like balance), so a VAE trained on them must learn cross-variable structure.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from forecast_fixtures import small_spec

from bench.config import ObservationSettings
from bench.observations import observe
from methods.base import Background, Observations, TrainingContext
from methods.vaevar import VAEVar
from methods.vaevar.train import train_vae
from methods.vaevar.vae import VAE, sphere_pad

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


def context(tmp_path, samples: torch.Tensor, seed: int = 0) -> TrainingContext:
    calls = []

    def sample_fn(kind="nmc", **settings):
        calls.append((kind, settings))
        return samples

    def no_truth():
        raise AssertionError("VAE-Var must learn from the samples only")

    ctx = TrainingContext(spec=SPEC, model=None, train_truth=no_truth, samples=sample_fn,
                          device=torch.device("cpu"), cache_dir=tmp_path / "cache", seed=seed,
                          progress=False)
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small VAE-Var trained on 256 coupled samples (≈ 2 s)."""
    method = VAEVar.for_tests(latent_channels=8, widths=(16, 16), downsamplings=1, epochs=40,
                              batch_size=32, lr=3e-3)
    method.prepare(context(tmp_path_factory.mktemp("vae"), coupled_samples(256)))
    return method


def with_settings(prepared: VAEVar, **changes) -> VAEVar:
    """A copy of a prepared method with other analysis settings and the same trained VAE."""
    method = dataclasses.replace(prepared, **changes)
    for name in ("_decoder", "_scale", "_latent_shape", "_shape", "_training"):
        object.__setattr__(method, name, getattr(prepared, name))
    return method


def rms(x) -> float:
    return float(x.double().square().mean().sqrt())


# ------------------------------------------------------------------------------------ network
def test_sphere_pad_wraps_longitude_and_crosses_the_poles():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 4, 8)
    p = sphere_pad(x, 1)
    assert p.shape == (1, 6, 10)
    torch.testing.assert_close(p[0, 1:-1, 0], x[0, :, -1])  # west of lon 0 is the last column
    torch.testing.assert_close(p[0, 1:-1, -1], x[0, :, 0])
    # north of the first row: the first row, 180° away
    torch.testing.assert_close(p[0, 0, 1:-1], x[0, 0].roll(4))
    torch.testing.assert_close(p[0, -1, 1:-1], x[0, -1].roll(4))


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
def test_training_lowers_reconstruction_error_and_loss(tmp_path):
    torch.manual_seed(0)  # the weights' initialisation
    vae = VAE(SPEC.shape, latent_channels=8, widths=(16, 16), downsamplings=1)
    samples = coupled_samples(128, seed=3)
    samples = samples / samples.std(dim=(0, 2, 3))[:, None, None]  # as prepare() scales them
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


def test_prepare_caches_the_vae_and_reloads_without_training(tmp_path):
    samples = coupled_samples(64)
    first = VAEVar.for_tests()
    ctx = context(tmp_path, samples)
    first.prepare(ctx)
    assert ctx.calls == [("nmc", {"start_stride": 1})]
    again = VAEVar.for_tests()
    ctx2 = context(tmp_path, samples * 0 + float("nan"))  # would poison any retraining
    again.prepare(ctx2)
    assert ctx2.calls == []
    for a, b in zip(first.decoder.state_dict().values(), again.decoder.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(first.scale, again.scale, rtol=0, atol=0)


def test_truth_minus_forecast_samples_are_asked_for_with_a_24h_lead(tmp_path):
    ctx = context(tmp_path, coupled_samples(32))
    VAEVar.for_tests(training_samples="truth_minus_forecast", epochs=1).prepare(ctx)
    assert ctx.calls == [("truth_minus_forecast", {"lead_hours": 24, "start_stride": 1})]


def test_scale_is_the_per_channel_std_of_the_samples(tmp_path):
    samples = coupled_samples(64) * torch.tensor([1.0, 3.0, 0.5])[:, None, None]
    method = VAEVar.for_tests(epochs=1)
    method.prepare(context(tmp_path, samples))
    torch.testing.assert_close(method.scale.flatten().float(), samples.std(dim=(0, 2, 3)))


@pytest.mark.parametrize("field, value", [
    ("lam", 0.0), ("min_obs_error", 0.0), ("training_samples", "climatology"),
    ("downsamplings", 2), ("analysis_dtype", "float16"), ("inner_iterations", 0)])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        VAEVar.for_tests(**{field: value})


def test_config_from_json_lists_round_trips():
    method = VAEVar(widths=[8, 16, 32])
    assert method.widths == (8, 16, 32)
    assert type(method)(**method.config()) == method


# ------------------------------------------------------------------------------------ analysis
@pytest.mark.parametrize("odd_decoder", [False, True])
def test_taylor_gradient_of_the_cost(trained, odd_decoder):
    g = torch.Generator().manual_seed(1)
    x_b = torch.randn(SPEC.shape, generator=g)
    obs = observe(x_b + 0.3 * torch.randn(SPEC.shape, generator=g), SPEC,
                  ObservationSettings(density=0.3, noise_fraction=0.05), cycle=0)
    # λ = 1: the observation term (through the decoder) dominates the curvature, not ½‖w‖²
    method = with_settings(trained, lam=1.0, odd_decoder=odd_decoder)
    cost = method.cost_function(background(x_b), obs)
    shape = (1, *trained._latent_shape)
    w = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    h = torch.randn(shape, generator=g, dtype=torch.float64)
    j = cost(w)[0]
    (grad,) = torch.autograd.grad(j, w)
    slope = float((grad * h).sum())
    errors = []
    for eps in 10.0 ** -np.arange(1, 7):
        with torch.no_grad():
            ratio = (float(cost(w + eps * h)[0]) - float(j.detach())) / (eps * slope)
        errors.append(abs(ratio - 1))
    print("|ratio − 1| for ε = 1e-1 … 1e-6:", ", ".join(f"{e:.1e}" for e in errors))
    # first-order Taylor: the error falls ~10× per decade of ε until round-off
    assert all(b < 0.2 * a for a, b in zip(errors[1:-1], errors[2:], strict=True))
    assert errors[-1] < 1e-4


def test_the_analysis_uses_the_decoder(trained, tmp_path):
    method = VAEVar(**trained.config())
    method.prepare(context(tmp_path, coupled_samples(256)))
    method = with_settings(method, lam=1.0)
    x_b = torch.zeros(SPEC.shape)
    obs = point_obs([1.0, -0.5], [(Z, 3, 5), (T, 5, 10)])
    before = method.analyse(background(x_b), obs)
    with torch.no_grad():
        last = [m for m in method.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        # double what the decoder produces (a sign flip would not do: with the odd decoder and
        # the symmetric prior, w → −w reaches the same increments)
        last.weight.mul_(2.0)
    after = method.analyse(background(x_b), obs)
    print(f"max |Δx_a| after doubling the decoder's last layer: {(after - before).abs().max():.3f}")
    assert (after - before).abs().max() > 0.1


def test_set_vae_uses_a_vae_trained_elsewhere(trained):
    """set_vae installs another VAE's decoder: a VAE whose last decoder layer is doubled gives
    another analysis; the scale must have one entry per channel."""
    from methods.vaevar.vae import VAE

    vae = VAE(SPEC.shape, trained.latent_channels, trained.widths, trained.downsamplings)
    vae.decoder.load_state_dict({k: v.float() for k, v in trained.decoder.state_dict().items()})
    scale = trained.scale[:, 0, 0].float()
    twin = with_settings(trained, lam=1.0)
    twin.set_vae(vae, scale)
    obs = point_obs([1.0, -0.5], [(Z, 3, 5), (T, 5, 10)])
    same = twin.analyse(background(torch.zeros(SPEC.shape)), obs)
    reference = with_settings(trained, lam=1.0).analyse(background(torch.zeros(SPEC.shape)), obs)
    assert (same - reference).abs().max() < 1e-5
    with torch.no_grad():
        [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.mul_(2)
    twin.set_vae(vae, scale)
    other = twin.analyse(background(torch.zeros(SPEC.shape)), obs)
    assert (other - reference).abs().max() > 0.1
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        twin.set_vae(vae, scale[:2])


@pytest.mark.parametrize("odd_decoder, subtract_offset", [(True, False), (False, True),
                                                         (False, False)])
def test_huge_lambda_returns_the_prior_mode(trained, odd_decoder, subtract_offset):
    """λ → ∞: x_a → x_b (odd_decoder or subtract_offset) or their x_b + s ⊙ D(0)."""
    g = torch.Generator().manual_seed(2)
    x_b = torch.randn(SPEC.shape, generator=g)
    obs = observe(x_b + torch.randn(SPEC.shape, generator=g), SPEC,
                  ObservationSettings(density=0.5), cycle=0)
    method = with_settings(trained, lam=1e12, odd_decoder=odd_decoder,
                           subtract_offset=subtract_offset)
    x_a = method.analyse(background(x_b), obs)
    with torch.no_grad():
        offset = (method.scale * method.decoder(
            torch.zeros(1, *method._latent_shape, dtype=torch.float64))[0]).float()
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
    plus = method.analyse(background(x_b), point_obs(h_xb + d, points)) - x_b
    minus = method.analyse(background(x_b), point_obs(h_xb - d, points)) - x_b
    asymmetry = rms(plus + minus) / rms(plus)
    print(f"odd_decoder={odd_decoder}: rms(δ(d) + δ(−d)) / rms(δ(d)) = {asymmetry:.2e}")
    assert rms(plus) > 0.05  # the observations move the analysis
    if odd_decoder:
        assert asymmetry < 1e-4
    else:
        assert asymmetry > 1e-2


def test_dense_exact_observations_with_small_lambda_are_fitted(tmp_path):
    # a latent as large as the state (no down-sampling, 4 ≥ 3 channels) so D can reach x_t
    method = VAEVar.for_tests(latent_channels=4, widths=(16,), downsamplings=0, epochs=20,
                              lam=1e-3, outer_iterations=3, inner_iterations=50)
    samples = coupled_samples(128)
    method.prepare(context(tmp_path, samples))
    x_b = torch.zeros(SPEC.shape)
    truth = coupled_samples(1, seed=9)[0]
    obs = observe(truth, SPEC, ObservationSettings(density=1.0, noise_fraction=0.0), cycle=0)
    x_a = method.analyse(background(x_b), obs)
    misfit_b = rms(obs.operator(x_b) - obs.values)
    misfit_a = rms(obs.operator(x_a) - obs.values)
    print(f"rms misfit: background {misfit_b:.3f}, analysis {misfit_a:.4f}; "
          f"{method.diagnostics()}")
    assert misfit_a < 0.1 * misfit_b


def test_a_single_z500_observation_gives_a_balanced_wind_increment(trained):
    x_b = torch.zeros(SPEC.shape)
    i0, j0 = 4, 8
    # λ = 1: R as given; this test is about the structure of B, not the weight of the data
    method = with_settings(trained, lam=1.0)
    x_a = method.analyse(background(x_b), point_obs([1.0], [(Z, i0, j0)], sigma=0.1))
    dz, du, dt = x_a - x_b
    print(f"Δz at the obs {dz[i0, j0]:.3f}; Δu north {du[i0 - 1, j0]:.3f}, south "
          f"{du[i0 + 1, j0]:.3f}; max|Δu| {du.abs().max():.3f}, max|Δt| {dt.abs().max():.3f}")
    assert dz[i0, j0] > 0.1
    # u = ∂z/∂i in every sample: a positive z increment brings u > 0 north, u < 0 south of it
    assert du[i0 - 1, j0] > 0.2 * dz[i0, j0] and du[i0 + 1, j0] < -0.2 * dz[i0, j0]
    assert du.abs().max() > 2 * dt.abs().max()  # t is independent of z in the samples


def test_diagnostics_report_iterations_and_a_lower_cost(trained):
    obs = point_obs([1.0, 0.5], [(Z, 2, 2), (U, 6, 12)])
    trained.analyse(background(torch.zeros(SPEC.shape)), obs)
    d = trained.diagnostics()
    assert 1 <= d["iterations"] <= trained.outer_iterations * trained.inner_iterations
    assert d["cost_final"] < d["cost_initial"] and math.isfinite(d["cost_obs_final"])


def test_analysis_before_prepare_is_an_error():
    with pytest.raises(RuntimeError, match="prepare"):
        VAEVar.for_tests().analyse(background(torch.zeros(SPEC.shape)),
                                   point_obs([1.0], [(Z, 1, 1)]))
