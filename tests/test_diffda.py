"""DiffDA (methods/diffda): soft mask, sampler, training and the analysis on a tiny world.

The tiny world: smooth fields advected one cell east per 6 h on an 8 × 16 grid with 3 channels,
forecast by persistence minus a per-channel bias b, so that the training increments
truth − forecast = (shifted − unshifted field) + b have the per-channel mean b exactly.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from forecast_fixtures import advected_trajectory, small_spec

from bench.forecast.base import ForecastModel
from methods.base import Background, Observations, TrainingContext
from methods.diffda import DiffDA
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.mask import soft_mask_and_values
from methods.diffda.sampler import make_scheduler, repaint_sample

BIAS = (1.0, -0.5, 0.0)


class BiasedPersistence(ForecastModel):
    """x_{t+6h} = x_t − b: persistence with a known per-channel bias."""

    def __init__(self, spec, bias=BIAS):
        self.spec, self.history, self.device = spec, 2, torch.device("cpu")
        self.bias = torch.tensor(bias, dtype=torch.float32)[:, None, None]

    def _step(self, frames):
        return frames[:, -1] - self.bias


def grid_observations(spec, state, points, channels=None):
    """Exact grid-point observations of ``state`` at flat ``points`` (all channels or some)."""
    c, h, w = spec.shape
    channels = range(c) if channels is None else channels
    pairs = [(k, p) for k in channels for p in points]
    channel = torch.tensor([k for k, _ in pairs], dtype=torch.long)
    flat = torch.tensor([p for _, p in pairs], dtype=torch.long)
    lat = np.asarray(spec.lat)[flat.numpy() // w]
    lon = np.asarray(spec.lon)[flat.numpy() % w]
    values = state.reshape(c, -1)[channel, flat]
    return Observations(values=values, error_std=torch.zeros_like(values), channel=channel,
                        flat_index=flat[:, None], weights=torch.ones(len(pairs), 1), lat=lat,
                        lon=lon, grid_shape=tuple(spec.shape))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(ctx, trained method, truth, model) shared by the analysis tests (trains ~3 s)."""
    spec = small_spec(nlat=8, nlon=16)
    truth = advected_trajectory(spec, 80, seed=0)
    model = BiasedPersistence(spec)
    ctx = TrainingContext(spec=spec, model=model, train_truth=lambda: truth, samples=None,
                          device=torch.device("cpu"),
                          cache_dir=tmp_path_factory.mktemp("diffda-cache"), seed=0,
                          progress=False)
    method = DiffDA.for_tests(train_steps=150, lr=3e-3)
    method.prepare(ctx)
    return ctx, method, truth, model


def background_at(model, truth, i, lead_hours=6, cycle=0):
    history = truth[i - 1:i + 1].clone()
    x_b = model.rollout(history[None], lead_hours // 6)[0, -1]
    return Background(x_b, history, np.datetime64("2001-01-01"), lead_hours, cycle)


def with_seed(method, ctx, seed):
    twin = dataclasses.replace(method, seed=seed)
    twin.prepare(ctx)  # reloads the trained denoiser from ctx.cache_dir
    return twin


# --------------------------------------------------------------------------------- training
def test_training_loss_falls(world):
    _, method, *_ = world
    losses = method.training["losses"][6]
    assert len(losses) == 150
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])


def test_prepare_reloads_from_the_cache(world):
    ctx, method, *_ = world
    twin = DiffDA.for_tests(train_steps=150, lr=3e-3)
    twin.prepare(ctx)
    assert twin.training["train_seconds"] == method.training["train_seconds"]
    for a, b in zip(twin.denoiser(6)[0].parameters(), method.denoiser(6)[0].parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------------- analysis
def test_without_observations_samples_scatter_around_forecast_plus_training_mean(world):
    ctx, method, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 40)
    empty = grid_observations(spec, truth[41], points=[], channels=[])
    increments = torch.stack([with_seed(method, ctx, s).analyse(background, empty)
                              - background.x_b for s in range(6)])
    _, scale = method.denoiser(6)
    mean = increments.mean(dim=(0, 2, 3))  # per channel, over seeds and the grid
    assert torch.all((mean - torch.tensor(BIAS)).abs() < 0.5 * scale), (mean, scale)
    spread = increments.std(dim=0).mean(dim=(1, 2))  # across seeds
    assert torch.all(spread > 0.05 * scale), spread
    assert torch.all(spread < 3.0 * scale), spread


def test_dense_exact_observations_are_matched(world):
    ctx, method, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 30)
    h, w = spec.shape[1:]
    obs = grid_observations(spec, truth[31], points=range(h * w))
    x_a = method.analyse(background, obs)
    misfit_a = (obs.operator(x_a) - obs.values).square().mean().sqrt()
    misfit_b = (obs.operator(background.x_b) - obs.values).square().mean().sqrt()
    assert misfit_b > 0.3
    assert misfit_a < 1e-4 * misfit_b
    assert method.diagnostics()["mask_mean"] == pytest.approx(1.0)


def test_sparse_observations_are_matched_where_observed(world):
    ctx, method, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 30)
    obs = grid_observations(spec, truth[31], points=[5, 27, 50, 77, 100, 120])
    x_a = method.analyse(background, obs)
    misfit_a = (obs.operator(x_a) - obs.values).abs().max()
    misfit_b = (obs.operator(background.x_b) - obs.values).abs().max()
    assert misfit_a < 1e-4 * misfit_b


def test_sampling_is_deterministic_for_a_seed(world):
    ctx, method, truth, model = world
    background = background_at(model, truth, 20)
    obs = grid_observations(ctx.spec, truth[21], points=[3, 40, 90])
    first = method.analyse(background, obs)
    torch.testing.assert_close(method.analyse(background, obs), first, rtol=0, atol=0)
    other_seed = with_seed(method, ctx, 1).analyse(background, obs)
    assert (other_seed - first).abs().max() > 1e-3
    other_cycle = method.analyse(dataclasses.replace(background, cycle=1), obs)
    assert (other_cycle - first).abs().max() > 1e-3


def test_diagnostics_count_the_denoiser_calls(world):
    ctx, method, truth, model = world
    method.analyse(background_at(model, truth, 20), grid_observations(ctx.spec, truth[21], [7]))
    diag = method.diagnostics()
    # steps + (r − 1)(steps − j) = 10 + 1 · 5 for the test configuration (10 / 5 / 2)
    assert diag["denoiser_calls"] == 15 == diag["sampling_steps"]
    assert diag["undo_steps"] == 5 and diag["model_lead_hours"] == 6


def test_the_model_of_the_nearest_lead_is_used(world, tmp_path):
    ctx, _, truth, model = world
    method = DiffDA.for_tests(leads_hours=(6, 12), train_steps=2)
    method.prepare(dataclasses.replace(ctx, cache_dir=tmp_path))
    assert method.denoiser(6) is not method.denoiser(12)
    assert method.denoiser(48) is method.denoiser(12)
    assert method.denoiser(9) is method.denoiser(6)  # a tie goes to the shorter lead
    method.analyse(background_at(model, truth, 20, lead_hours=12),
                   grid_observations(ctx.spec, truth[22], [7]))
    assert method.diagnostics()["model_lead_hours"] == 12


def test_set_denoisers_installs_given_networks(world):
    """Denoisers handed over with set_denoisers (trained elsewhere) give the analysis prepare()
    gives; a mismatch of leads or grid is refused with the values named."""
    ctx, method, truth, model = world
    spec = ctx.spec
    twin = dataclasses.replace(method)
    twin.set_denoisers({lead: method._models[lead] for lead in method.leads_hours},
                       spec.lat, spec.lon)
    bg, obs = background_at(model, truth, 30), grid_observations(spec, truth[31], [3, 40])
    assert torch.equal(twin.analyse(bg, obs), method.analyse(bg, obs))
    first = method._models[method.leads_hours[0]]
    with pytest.raises(ValueError, match=r"leads \[7\] h"):
        twin.set_denoisers({7: first}, spec.lat, spec.lon)
    with pytest.raises(ValueError, match="4×16 grid"):
        twin.set_denoisers({lead: first for lead in method.leads_hours}, spec.lat[:4], spec.lon)


# --------------------------------------------------------------------------------- soft mask
def test_soft_mask_is_one_at_observations_and_decays_as_a_gaussian():
    spec = small_spec(channels=("t850", "z500"), nlat=16, nlon=32)
    lat = np.asarray(spec.lat)
    h, w = 16, 32
    sigma = 1.5
    state = torch.zeros(2, h, w)
    obs = grid_observations(spec, state, points=[3 * w + 0], channels=[1])
    mask, _ = soft_mask_and_values(obs, torch.ones(1), spec.lat, spec.lon, sigma, 3.0)

    def gauss(d2):
        return math.exp(-d2 / (2 * sigma**2))

    cos3 = math.cos(math.radians(lat[3]))
    cos34 = math.cos(math.radians(0.5 * (lat[3] + lat[4])))
    assert mask[1, 3, 0] == 1.0
    assert mask[1, 3, 1] == pytest.approx(gauss(cos3**2), rel=1e-5)  # cos(lat) in longitude
    assert mask[1, 3, 2] == pytest.approx(gauss((2 * cos3) ** 2), rel=1e-5)
    assert mask[1, 3, w - 1] == pytest.approx(mask[1, 3, 1])  # periodic in longitude
    assert mask[1, 3, w - 2] == pytest.approx(mask[1, 3, 2])
    assert mask[1, 4, 0] == pytest.approx(gauss(1.0), rel=1e-5)  # one row south
    assert mask[1, 2, 0] == pytest.approx(gauss(1.0), rel=1e-5)
    assert mask[1, 4, 1] == pytest.approx(gauss(1.0 + cos34**2), rel=1e-5)
    assert mask[1, 3, 8] == 0.0  # 8 · cos(47°) ≈ 5.4 grid spacings > cutoff 3σ = 4.5
    assert mask[1, 9, 0] == 0.0
    assert (mask[0] == 0).all()  # only the observed channel
    # the kernel is wider in longitude near the pole than near the equator
    polar = grid_observations(spec, state, points=[0 * w + 10], channels=[0])
    polar_mask, _ = soft_mask_and_values(polar, torch.ones(1), spec.lat, spec.lon, sigma, 3.0)
    assert polar_mask[0, 0, 12] > mask[1, 3, 2]


def test_spread_increments_interpolate_the_observations():
    spec = small_spec(channels=("t850",), nlat=16, nlon=32)
    state = torch.zeros(1, 16, 32)
    w = 32
    obs = grid_observations(spec, state, points=[7 * w + 4, 7 * w + 6])
    d = torch.tensor([2.0, -1.0])
    mask, values = soft_mask_and_values(obs, d, spec.lat, spec.lon, 1.5, 3.0)
    assert values[0, 7, 4] == pytest.approx(2.0) and values[0, 7, 6] == pytest.approx(-1.0)
    assert values[0, 7, 5] == pytest.approx(0.5, abs=1e-6)  # equal weights: the mean
    k4 = mask[0, 8, 4]  # one row south of the first: weights k4 and k(√(1 + (2cos)²))
    lat = np.asarray(spec.lat)
    cos = math.cos(math.radians(0.5 * (lat[7] + lat[8])))
    k6 = math.exp(-(1 + (2 * cos) ** 2) / (2 * 1.5**2))
    assert values[0, 8, 4] == pytest.approx((2.0 * float(k4) - k6) / (float(k4) + k6), rel=1e-5)
    assert values[0, 0, 20] == 0.0 and mask[0, 0, 20] == 0.0  # beyond the cutoff


# --------------------------------------------------------------------------------- pieces
def test_denoiser_pads_circularly_and_crops_back():
    net = ConditionalDenoiser((2, 7, 15), block_out_channels=(8, 16, 16), lon_pad=3)
    assert net.h_padded % 4 == 0 and net.w_padded % 4 == 0 and net.w_padded >= 15 + 6
    x = torch.randn(1, 2, 7, 15)
    padded = net.pad(x)
    torch.testing.assert_close(net.crop(padded), x)
    west = net.pad_west
    torch.testing.assert_close(padded[..., net.pad_north:net.pad_north + 7, :west],
                               x[..., -west:])
    out = net(x, torch.tensor([10]), torch.randn(1, 2, 7, 15))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_sampler_recovers_a_known_sample_with_an_exact_denoiser():
    z0 = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    scheduler = make_scheduler()
    alphas = scheduler.alphas_cumprod

    def exact(z, t, x_hat):  # ε = (z_t − √ᾱ_t z_0) / √(1 − ᾱ_t)
        a = alphas[int(t)]
        return (z - a.sqrt() * z0) / (1 - a).sqrt()

    zeros = torch.zeros_like(z0)
    for steps, jump, resamples in [(10, 5, 1), (20, 5, 3)]:
        out, stats = repaint_sample(exact, scheduler, zeros, zeros, zeros, steps=steps,
                                    jump_length=jump, resamples=resamples,
                                    generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out, z0, rtol=0, atol=1e-5)
        assert stats.denoiser_calls == steps + (resamples - 1) * (steps - jump)


@pytest.mark.parametrize("field, value", [("leads_hours", (5,)), ("steps", 0),
                                          ("jump_length", 60), ("resamples", 0),
                                          ("mask_sigma", 0.0), ("eta", 2.0)])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"DiffDA.{field}"):
        DiffDA(**{field: value})


def test_config_round_trips_through_json_lists():
    method = DiffDA.paper_sampling()
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in method.config().items()}
    assert DiffDA(**config) == method
    assert (method.steps, method.jump_length, method.resamples) == (300, 10, 10)
