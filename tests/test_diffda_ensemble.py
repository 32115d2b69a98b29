"""Ensemble DiffDA (methods/diffda): K samples per analysis averaged into x_a
(``samples_per_analysis``), and ``members`` > 0, one sample per member conditioned on that
member's background. Untrained (random) denoisers: the tests check the sampling bookkeeping
(seeding, batching, means), not the analysis quality (tests/test_diffda.py does that).
"""

import dataclasses

import numpy as np
import pytest
import torch
from diffda_fixtures import grid_observations
from forecast_fixtures import advected_trajectory, small_spec

from methods.base import Background
from methods.diffda import DiffDA
from methods.diffda.sampler import make_scheduler, repaint_sample

SPEC = small_spec(nlat=8, nlon=16)
CYCLE = 3


@pytest.fixture(scope="module")
def case():
    """(state, truth frames, observations, background): random denoisers on the tiny grid."""
    truth = advected_trajectory(SPEC, 4, seed=0)
    state = DiffDA.for_tests(seed=7).untrained(SPEC, seed=1)
    obs = grid_observations(SPEC, truth[2], points=[3, 40, 77, 100])
    history = truth[0:2].clone()
    background = Background(history[-1], history, np.datetime64("2001-01-01"), 6, CYCLE)
    return state, truth, obs, background


def analyser(state, **fields):
    return DiffDA.for_tests(seed=7, **fields).load(state, SPEC, "cpu")


def reference_sample(analyser_, background, obs, x_b, key):
    """x_b + s ⊙ z_0 from one unbatched sampler run (the pre-ensemble analysis' code path),
    with d against ``x_b`` and the generator seeded from SeedSequence(key)."""
    m = analyser_.method
    denoiser, scale = analyser_.denoiser(background.lead_hours)
    mask, known = analyser_.observed_increments(background, obs, x_b)
    seed = int(np.random.SeedSequence(key).generate_state(1)[0])
    with torch.no_grad():
        z0, _ = repaint_sample(denoiser, make_scheduler(m.eta), x_b.to(torch.float32), known,
                               mask, steps=m.steps, jump_length=m.jump_length,
                               resamples=m.resamples,
                               generator=torch.Generator().manual_seed(seed))
    return x_b.to(torch.float32) + scale[:, None, None] * z0


def with_members(background, count, shift=None):
    """``background`` with ``count`` members: x_b plus distinct smooth offsets per member
    (member 0 further shifted by ``shift``)."""
    offsets = 0.2 * torch.arange(1, count + 1, dtype=torch.float32)[:, None, None, None, None]
    members = background.history[None] + offsets * torch.cos(
        torch.linspace(0, 6.28, SPEC.shape[2]))
    if shift is not None:
        members[0] = members[0] + shift
    return dataclasses.replace(background, members=members)


def test_one_sample_is_the_single_sample_analysis_bit_for_bit(case):
    state, _, obs, background = case
    default = analyser(state).analyse(background, obs)
    explicit = analyser(state, samples_per_analysis=1).analyse(background, obs)
    reference = reference_sample(analyser(state), background, obs, background.x_b, [7, CYCLE])
    assert torch.equal(default.x_a, reference)
    assert torch.equal(explicit.x_a, reference)
    assert default.members is None and "sample_spread" not in default.diagnostics


def test_k_samples_average_to_the_analysis(case):
    state, _, obs, background = case
    one = analyser(state).analyse(background, obs)
    analysis = analyser(state, samples_per_analysis=4).analyse(background, obs)
    reference = analyser(state)
    samples = torch.stack([
        reference_sample(reference, background, obs, background.x_b,
                         [7, CYCLE] + ([k] if k else [])) for k in range(4)])
    torch.testing.assert_close(analysis.x_a, samples.mean(dim=0), rtol=0, atol=1e-5)
    assert not torch.allclose(analysis.x_a, one.x_a)
    assert analysis.members is None
    spread = analysis.diagnostics["sample_spread"]
    assert np.isfinite(spread) and spread > 0
    assert spread == pytest.approx(float(samples.std(dim=0).mean()), rel=1e-4)
    assert analysis.diagnostics["evaluations"] == 4 * one.diagnostics["evaluations"]


def test_members_are_one_sample_each_on_their_own_background(case):
    state, _, obs, background = case
    ensemble = with_members(background, 3)
    analysis = analyser(state, members=3).analyse(ensemble, obs)
    c, h, w = SPEC.shape
    assert analysis.members.shape == (3, c, h, w)
    torch.testing.assert_close(analysis.members.mean(dim=0), analysis.x_a)
    reference = analyser(state, members=3)
    for n in range(3):
        expected = reference_sample(reference, background, obs,
                                    ensemble.member_backgrounds[n], [7, CYCLE, n])
        torch.testing.assert_close(analysis.members[n], expected, rtol=0, atol=1e-5)
    spread = analysis.diagnostics["sample_spread"]
    assert np.isfinite(spread) and spread > 0

    shifted = with_members(background, 3, shift=0.5)
    moved = analyser(state, members=3).analyse(shifted, obs)
    torch.testing.assert_close(moved.members[1:], analysis.members[1:], rtol=0, atol=1e-6)
    assert not torch.allclose(moved.members[0], analysis.members[0])


def test_members_need_member_backgrounds(case):
    state, _, obs, background = case
    with pytest.raises(ValueError, match="members = 3 needs Background.members"):
        analyser(state, members=3).analyse(background, obs)
    with pytest.raises(ValueError, match="members = 3 needs Background.members"):
        analyser(state, members=3).analyse(with_members(background, 2), obs)


@pytest.mark.parametrize("fields, name", [
    ({"members": 2, "samples_per_analysis": 3}, "samples_per_analysis"),
    ({"samples_per_analysis": 0}, "samples_per_analysis"),
    ({"members": -1}, "members"),
    ({"members": 2.0}, "members"),
])
def test_bad_ensemble_settings_are_refused_in_one_line(fields, name):
    with pytest.raises(ValueError, match=f"DiffDA.{name} = ") as error:
        DiffDA(**fields)
    assert "\n" not in str(error.value)


def test_ensemble_fields_reuse_the_fit_and_scale_the_memory_estimate():
    base = DiffDA.for_tests()
    assert DiffDA.for_tests(samples_per_analysis=4).cache_config() == base.cache_config()
    assert DiffDA.for_tests(members=5).cache_config() == base.cache_config()
    assert DiffDA.for_tests(members=5).members == 5 and base.members == 0
    one = base.memory_estimate(SPEC, 10).analysis
    four = DiffDA.for_tests(samples_per_analysis=4).memory_estimate(SPEC, 10).analysis
    five = base.memory_estimate(SPEC, 10, members=5).analysis
    assert one < four < five
