"""DiffDA's emulator-backbone denoiser (methods/diffda/emulator_denoiser.py): untrained it is the
skip's exact Gaussian answer; it starts from the trained emulator's encoder and residual blocks
(its features are the emulator's); a mismatched or missing emulator is refused by name; and
DiffDA fits, loads and analyses with it."""

from __future__ import annotations

import pytest
import torch
from diffda_fixtures import grid_observations, in_memory_samples
from forecast_fixtures import advected_trajectory, small_spec

from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
from bench.forecast.persistence import Persistence
from methods.base import Background, TrainingContext
from methods.diffda import DiffDA
from methods.diffda.emulator_denoiser import EmulatorBackboneDenoiser, emulator_weights
from methods.diffda.sampler import make_scheduler

WIDTH, BLOCKS = 8, 2


def trained_looking_emulator(spec) -> Emulator:
    """A small emulator with random (not zero) weights everywhere, decoder included."""
    net = EmulatorNet(spec.shape[0], spec.lat, spec.shape[2],
                      EmulatorConfig(width=WIDTH, blocks=BLOCKS))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    return Emulator(net, spec)


def test_untrained_it_is_the_gaussian_answer_of_the_skip():
    """E_z, the FiLM and the decoder start at zero: ε̂ = √(1 − ᾱ_t) z_t for every x̂ and t."""
    spec = small_spec()
    alphas = make_scheduler().alphas_cumprod
    den = EmulatorBackboneDenoiser(spec.shape, spec.lat, WIDTH, BLOCKS, alphas)
    z, x_hat = torch.randn(3, *spec.shape), torch.randn(3, *spec.shape)
    t = torch.tensor([0, 400, 999])
    want = (1 - alphas[t]).sqrt().reshape(-1, 1, 1, 1) * z
    torch.testing.assert_close(den(z, t, x_hat), want)


def test_it_starts_from_the_emulators_features():
    spec = small_spec()
    emulator = trained_looking_emulator(spec)
    den = EmulatorBackboneDenoiser(spec.shape, spec.lat, WIDTH, BLOCKS)
    den.start_from(emulator_weights(emulator))
    x = torch.randn(2, *spec.shape)
    net = emulator.net
    inputs = torch.cat([x, x, net.latitude_features.expand(2, -1, -1, -1)], dim=1)
    emulator_features = net.blocks(net.encode(inputs))
    with torch.no_grad():
        condition = torch.cat([x, x, den.latitude_features.expand(2, -1, -1, -1)], dim=1)
        denoiser_features = den.blocks(den.encode(condition))
    torch.testing.assert_close(denoiser_features, emulator_features)
    fresh = EmulatorBackboneDenoiser(spec.shape, spec.lat, WIDTH, BLOCKS)
    assert not torch.allclose(fresh.encode.weight, den.encode.weight)


def test_a_mismatched_or_missing_emulator_is_refused_by_name():
    spec = small_spec()
    weights = emulator_weights(trained_looking_emulator(spec))
    with pytest.raises(ValueError, match="backbone_width"):
        EmulatorBackboneDenoiser(spec.shape, spec.lat, 2 * WIDTH, BLOCKS).start_from(weights)
    with pytest.raises(ValueError, match="residual blocks"):
        EmulatorBackboneDenoiser(spec.shape, spec.lat, WIDTH, BLOCKS + 1).start_from(weights)
    with pytest.raises(ValueError, match="--model emulator"):
        emulator_weights(Persistence(spec))
    with pytest.raises(ValueError, match="denoiser"):
        DiffDA(denoiser="graphcast")


def fit(spec, model, truth, **overrides):
    samples, targets = in_memory_samples(model, truth)
    ctx = TrainingContext(spec=spec, model=model, train_truth=lambda: truth, samples=samples,
                          sample_targets=targets, device=torch.device("cpu"), seed=0,
                          progress=False)
    method = DiffDA.for_tests(denoiser="emulator_backbone", backbone_width=WIDTH,
                              backbone_blocks=BLOCKS, **overrides)
    return method, method.fit(ctx)


def test_diffda_fits_from_the_emulator_and_analyses():
    """One step at a negligible learning rate leaves the encoder at the emulator's with
    emulator_init, at a random draw without; the fitted state loads and analyses."""
    spec = small_spec()
    truth = advected_trajectory(spec, 40, seed=0)
    model = trained_looking_emulator(spec)
    start = model.net.encode.weight
    method, state = fit(spec, model, truth, train_steps=1, lr=1e-9)
    torch.testing.assert_close(state["models"][0]["state"]["encode.weight"], start)
    _, scratch = fit(spec, model, truth, train_steps=1, lr=1e-9, emulator_init=False)
    assert not torch.allclose(scratch["models"][0]["state"]["encode.weight"], start)
    analyser = method.load(state, spec, "cpu")
    x_b = truth[20]
    obs = grid_observations(spec, truth[21], points=[3, 40, 77])
    analysis = analyser.analyse(Background(x_b, truth[19:21], None, 6, 0), obs)
    assert analysis.x_a.shape == x_b.shape and torch.isfinite(analysis.x_a).all()
    assert not torch.equal(analysis.x_a, x_b)  # the observations moved it
    key = DiffDA(denoiser="emulator_backbone", emulator_init=False).cache_config()
    assert key["denoiser"] == "emulator_backbone" and key["emulator_init"] is False
    assert not {"denoiser", "backbone_width", "emulator_init"} & set(DiffDA().cache_config())
