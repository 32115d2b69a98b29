"""DiffDA (methods/diffda): sampler, training, the analysis on a tiny world, and the
fit → load → analyse lifecycle. The soft mask is tested in tests/test_diffda_mask.py.

The tiny world: smooth fields advected one cell east per 6 h on an 8 × 16 grid with 3 channels,
forecast by persistence minus a per-channel bias b, so that the training increments
truth − forecast = (shifted − unshifted field) + b have the per-channel mean b exactly.
"""

import dataclasses
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from diffda_fixtures import grid_observations, in_memory_samples
from forecast_fixtures import advected_trajectory, small_spec
from method_fixtures import check_fit_is_pure, check_untrained, odd_grid_case

from bench.cache import load_state, save_state
from bench.forecast.base import ForecastModel
from methods.base import Background, TrainingContext
from methods.diffda import DiffDA, DiffDAAnalyser
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.sampler import make_scheduler, repaint_sample

BIAS = (1.0, -0.5, 0.0)


class BiasedPersistence(ForecastModel):
    """x_{t+6h} = x_t − b: persistence with a known per-channel bias."""

    def __init__(self, spec, bias=BIAS):
        self.spec, self.history, self.device = spec, 2, torch.device("cpu")
        self.bias = torch.tensor(bias, dtype=torch.float32)[:, None, None]

    def _step(self, frames):
        return frames[:, -1] - self.bias


class World(NamedTuple):
    ctx: TrainingContext
    method: DiffDA
    state: dict
    analyser: DiffDAAnalyser
    truth: torch.Tensor
    model: ForecastModel


def tiny_context(spec, truth, model) -> TrainingContext:
    samples, targets = in_memory_samples(model, truth)
    return TrainingContext(spec=spec, model=model, train_truth=lambda: truth, samples=samples,
                           sample_targets=targets, device=torch.device("cpu"), seed=0,
                           progress=False)


@pytest.fixture(scope="module")
def world():
    """The tiny world, the trained method, its state and analyser (trains ~3 s)."""
    spec = small_spec(nlat=8, nlon=16)
    truth = advected_trajectory(spec, 80, seed=0)
    model = BiasedPersistence(spec)
    ctx = tiny_context(spec, truth, model)
    method = DiffDA.for_tests(train_steps=150, lr=3e-3)
    state = method.fit(ctx)
    return World(ctx, method, state, method.load(state, spec, "cpu"), truth, model)


def background_at(model, truth, i, lead_hours=6, cycle=0):
    history = truth[i - 1:i + 1].clone()
    x_b = model.rollout(history[None], lead_hours // 6)[0, -1]
    return Background(x_b, history, np.datetime64("2001-01-01"), lead_hours, cycle)


def with_seed(world, seed) -> DiffDAAnalyser:
    """The trained denoisers loaded by the method with another seed."""
    return dataclasses.replace(world.method, seed=seed).load(world.state, world.ctx.spec, "cpu")


# --------------------------------------------------------------------------------- training
def test_training_loss_falls(world):
    losses = world.analyser.training["losses"][6]
    assert len(losses) == 150
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])


def test_fit_is_deterministic_and_its_cached_state_loads_the_same_denoisers(world):
    """Fitting twice gives the same weights bit for bit (what the runner's cache relies on);
    the cached form loads the same denoiser and analysis; fit leaves the method as it was."""
    method = DiffDA.for_tests(train_steps=5)
    state = check_fit_is_pure(method, world.ctx)
    again = method.fit(world.ctx)
    for key, value in state["models"][0]["state"].items():
        torch.testing.assert_close(again["models"][0]["state"][key], value, rtol=0, atol=0)
    assert state["shape"] == list(world.ctx.spec.shape) and state["leads_hours"] == [6]
    assert len(state["models"][0]["losses"]) == 5 and state["models"][0]["n_pairs"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp) / "state.pt")
        cached = load_state(Path(tmp) / "state.pt")
    first = method.load(state, world.ctx.spec, "cpu")
    second = method.load(cached, world.ctx.spec, "cpu")
    assert second.training["train_seconds"] == first.training["train_seconds"]
    for a, b in zip(first.denoiser(6)[0].parameters(), second.denoiser(6)[0].parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bg = background_at(world.model, world.truth, 30)
    obs = grid_observations(world.ctx.spec, world.truth[31], [3, 40])
    assert torch.equal(first.analyse(bg, obs).x_a, second.analyse(bg, obs).x_a)


# --------------------------------------------------------------------------------- analysis
def test_without_observations_samples_scatter_around_forecast_plus_training_mean(world):
    ctx, _, _, analyser, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 40)
    empty = grid_observations(spec, truth[41], points=[], channels=[])
    increments = torch.stack([with_seed(world, s).analyse(background, empty).x_a
                              - background.x_b for s in range(6)])
    _, scale = analyser.denoiser(6)
    mean = increments.mean(dim=(0, 2, 3))  # per channel, over seeds and the grid
    assert torch.all((mean - torch.tensor(BIAS)).abs() < 0.5 * scale), (mean, scale)
    spread = increments.std(dim=0).mean(dim=(1, 2))  # across seeds
    assert torch.all(spread > 0.05 * scale), spread
    assert torch.all(spread < 3.0 * scale), spread


def test_dense_exact_observations_are_matched(world):
    ctx, _, _, analyser, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 30)
    h, w = spec.shape[1:]
    obs = grid_observations(spec, truth[31], points=range(h * w))
    analysis = analyser.analyse(background, obs)
    misfit_a = (obs.operator(analysis.x_a) - obs.values).square().mean().sqrt()
    misfit_b = (obs.operator(background.x_b) - obs.values).square().mean().sqrt()
    assert misfit_b > 0.3
    assert misfit_a < 1e-4 * misfit_b
    assert analysis.diagnostics["mask_mean"] == pytest.approx(1.0)


def test_sparse_observations_are_matched_where_observed(world):
    ctx, _, _, analyser, truth, model = world
    spec = ctx.spec
    background = background_at(model, truth, 30)
    obs = grid_observations(spec, truth[31], points=[5, 27, 50, 77, 100, 120])
    x_a = analyser.analyse(background, obs).x_a
    misfit_a = (obs.operator(x_a) - obs.values).abs().max()
    misfit_b = (obs.operator(background.x_b) - obs.values).abs().max()
    assert misfit_a < 1e-4 * misfit_b


def test_sampling_is_deterministic_for_a_seed(world):
    ctx, _, _, analyser, truth, model = world
    background = background_at(model, truth, 20)
    obs = grid_observations(ctx.spec, truth[21], points=[3, 40, 90])
    first = analyser.analyse(background, obs).x_a
    torch.testing.assert_close(analyser.analyse(background, obs).x_a, first, rtol=0, atol=0)
    other_seed = with_seed(world, 1).analyse(background, obs).x_a
    assert (other_seed - first).abs().max() > 1e-3
    other_cycle = analyser.analyse(dataclasses.replace(background, cycle=1), obs).x_a
    assert (other_cycle - first).abs().max() > 1e-3


def test_diagnostics_count_the_denoiser_calls(world):
    ctx, _, _, analyser, truth, model = world
    diag = analyser.analyse(background_at(model, truth, 20),
                            grid_observations(ctx.spec, truth[21], [7])).diagnostics
    # steps + (r − 1)(steps − j) = 10 + 1 · 5 for the test configuration (10 / 5 / 2)
    assert diag["denoiser_calls"] == 15 == diag["sampling_steps"] == diag["evaluations"]
    assert diag["iterations"] == diag["sampling_steps"]
    assert diag["undo_steps"] == 5 and diag["model_lead_hours"] == 6


def test_the_model_of_the_nearest_lead_is_used(world):
    ctx, _, _, _, truth, model = world
    method = DiffDA.for_tests(leads_hours=(6, 12), train_steps=2)
    analyser = method.load(method.fit(ctx), ctx.spec, "cpu")
    assert analyser.denoiser(6) is not analyser.denoiser(12)
    assert analyser.denoiser(48) is analyser.denoiser(12)
    assert analyser.denoiser(9) is analyser.denoiser(6)  # a tie goes to the shorter lead
    analysis = analyser.analyse(background_at(model, truth, 20, lead_hours=12),
                                grid_observations(ctx.spec, truth[22], [7]))
    assert analysis.diagnostics["model_lead_hours"] == 12


def test_state_from_installs_given_networks(world):
    """Denoisers handed over with state_from (trained elsewhere) give the analysis fit's state
    gives; a mismatch of leads or grid is refused with the values named."""
    ctx, method, _, analyser, truth, model = world
    spec = ctx.spec
    twin = method.load(method.state_from(analyser.models), spec, "cpu")
    bg, obs = background_at(model, truth, 30), grid_observations(spec, truth[31], [3, 40])
    assert torch.equal(twin.analyse(bg, obs).x_a, analyser.analyse(bg, obs).x_a)
    first = analyser.models[method.leads_hours[0]]
    with pytest.raises(ValueError, match=r"leads \[7\] h"):
        method.state_from({7: first})
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        method.state_from({6: (first[0], first[1][:2])})
    other = small_spec(nlat=4, nlon=16)
    with pytest.raises(ValueError, match="4×16 grid"):
        method.load(world.state, other, "cpu")
    with pytest.raises(ValueError, match=r"leads \[6\] h"):
        DiffDA.for_tests(leads_hours=(6, 12)).load(world.state, spec, "cpu")


def test_untrained_state_analyses_at_an_odd_grid():
    """load(untrained(spec, seed)) on a 9 × 16 equiangular grid (poles included): a working
    analyser with random denoisers of the configured size, seeded; the hooks answer too."""
    spec, bg, obs = odd_grid_case()
    method = DiffDA.for_tests()
    state, analyser, analysis = check_untrained(method, spec, bg, obs, seed=1)
    assert analysis.diagnostics["evaluations"] == 15
    for key, value in method.untrained(spec, seed=1)["models"][0]["state"].items():  # seeded
        torch.testing.assert_close(state["models"][0]["state"][key], value, rtol=0, atol=0)
    kernel = analyser.dominant_kernel(bg, obs)
    assert kernel.unit == "FLOP" and kernel.fn().shape == (1, *spec.shape)


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
    """config.json holds lists; the harness (bench.setup.build_method) turns them back into
    the tuples the frozen method needs, and the method refuses a list given directly."""
    import json

    from bench.config import RunConfig
    from bench.setup import build_method

    method = DiffDA.paper_sampling()
    config = json.loads(json.dumps({k: v for k, v in method.config().items() if k != "seed"}))
    cfg = RunConfig(methods=("diffda",), method_settings={"diffda": config})
    assert build_method(cfg, "diffda") == method
    assert (method.steps, method.jump_length, method.resamples) == (300, 10, 10)
    with pytest.raises(ValueError, match="leads_hours.*a tuple of integers"):
        DiffDA(leads_hours=[6, 48])
