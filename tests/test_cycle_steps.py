"""The cycle's steps one by one (bench/cycle.py): observe, analyse, score, propagate; and the
initial ensemble (bench/setup.py)."""

import dataclasses

import numpy as np
import pytest
import torch
from forecast_fixtures import Shift, advected_trajectory, persistence_setup, small_spec

from bench import metrics
from bench.config import (
    CycleSettings,
    EnsembleSettings,
    ObservationSettings,
    RunConfig,
)
from bench.cycle import (
    CycleState,
    FirstBackground,
    TruthWindow,
    analyse_step,
    analysis_problem,
    assimilate,
    observe_step,
    propagate,
    score_step,
)
from bench.forecast.persistence import Persistence
from bench.observations import observe
from bench.scorer import CellScores
from bench.setup import initial_ensemble
from bench.validation import ConfigError
from methods.base import Analysis, Background, ObservationWindow

SPEC = small_spec()


@pytest.fixture(scope="module")
def truth():
    x = advected_trajectory(SPEC, 12, seed=2)
    times = np.datetime64("2001-01-01", "ns") + np.arange(12) * np.timedelta64(6, "h")
    return TruthWindow(SPEC.to_dataset(x, time=times), SPEC, torch.device("cpu"))


def _state(n=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(max(n, 1), 2, *SPEC.shape, generator=g)
    return CycleState(frames, 6, ensemble=n > 0)


# ----------------------------------------------------------------------------- observe
def test_observe_step_is_the_seeded_protocol(truth):
    settings = ObservationSettings(density=0.2, seed=4)
    obs = observe_step(truth, 5, 3, settings)
    ref = observe(truth.frame(5), SPEC, settings, cycle=3)
    torch.testing.assert_close(obs.values, ref.values, rtol=0, atol=0)
    torch.testing.assert_close(obs.flat_index, ref.flat_index, rtol=0, atol=0)


def test_a_window_holds_the_observations_later_cycles_see(truth):
    """Offset o of cycle k's window is exactly cycle k + o/6's observations."""
    settings = ObservationSettings(density=0.2, seed=1, window_every_hours=6)
    window = observe_step(truth, 4, 2, settings, window_hours=12, model=Persistence(SPEC))
    assert isinstance(window, ObservationWindow) and window.offsets_hours == (0, 6, 12)
    for j, offset in enumerate(window.offsets_hours):
        later = observe_step(truth, 4 + j, 2 + j, settings)
        torch.testing.assert_close(window.at(offset).values, later.values, rtol=0, atol=0)
    assert window.model is not None and len(window) == 3 * len(window.at(0))
    every12 = observe_step(truth, 4, 2, dataclasses.replace(settings, window_every_hours=12),
                           window_hours=12, model=Persistence(SPEC))
    assert every12.offsets_hours == (0, 12)


def test_a_window_gets_no_model_that_cannot_be_differentiated(truth):
    class Frozen(Persistence):
        differentiable = False

    window = observe_step(truth, 4, 0, ObservationSettings(density=0.2), 6, Frozen(SPEC))
    assert window.model is None
    with pytest.raises(TypeError, match="not differentiable"):
        Frozen(SPEC).step_differentiable(torch.zeros(1, 2, *SPEC.shape))


def test_a_window_past_the_test_period_is_refused(truth):
    with pytest.raises(ConfigError, match="cycle.days"):
        observe_step(truth, 10, 0, ObservationSettings(density=0.2), window_hours=12)


# ----------------------------------------------------------------------------- analyse
def test_analyse_step_times_the_analysis_and_checks_what_comes_back(truth):
    background = _state().background(truth.times[0], 0)
    obs = observe_step(truth, 0, 0, ObservationSettings(density=0.2))

    class Echo:
        def analyse(self, b, o):
            return Analysis(b.x_b + 1.0)

    analysis, cost = analyse_step(Echo(), background, obs, torch.device("cpu"))
    assert cost.seconds >= 0 and analysis_problem(analysis, background, 0) is None
    bad_shape = Analysis(background.x_b[:1])
    assert "shape" in analysis_problem(bad_shape, background, 0)
    assert "not methods.base.Analysis" in analysis_problem(background.x_b, background, 0)
    nan = Analysis(background.x_b * float("nan"))
    assert "NaN" in analysis_problem(nan, background, 0)
    assert "returned None analysed members" in analysis_problem(analysis, background, 4)


# ----------------------------------------------------------------------------- score
def test_score_step_gives_the_metrics_and_spread_only_for_ensembles(truth):
    w = SPEC.latitude_weights()
    clim = torch.zeros(SPEC.shape)
    x_true = truth.frame(3)
    scores = CellScores(2, SPEC)
    det = _state().background(truth.times[3], 0)
    score_step(scores, 0, det, Analysis(x_true.clone()), x_true, clim, w)
    expected = metrics.rmse(det.x_b[None].double(), x_true[None].double(), w).numpy() * SPEC.std
    np.testing.assert_allclose(scores.per_channel["rmse"][0, 0], expected)
    np.testing.assert_allclose(scores.per_channel["rmse"][0, 1], 0.0, atol=1e-12)
    assert np.isnan(scores.per_channel["spread"][0]).all()
    ens = _state(n=5).background(truth.times[3], 1)
    members = ens.members[:, -1]
    score_step(scores, 1, ens, Analysis(members.mean(0), members=members), x_true, clim, w)
    var = members.double().var(dim=0)
    spread = torch.sqrt((var * torch.as_tensor(w)[:, None]).mean(dim=(-2, -1))).numpy()
    np.testing.assert_allclose(scores.per_channel["spread"][1, 0], spread * SPEC.std)
    np.testing.assert_allclose(scores.per_channel["spread"][1, 1], spread * SPEC.std)


# ----------------------------------------------------------------------------- propagate
def test_an_ensemble_background_is_the_members_mean():
    state = _state(n=4)
    b = state.background(np.datetime64("2001-01-01"), 0)
    torch.testing.assert_close(b.x_b, state.frames[:, -1].mean(0))
    torch.testing.assert_close(b.history, state.frames.mean(0))
    assert b.members.shape == (4, 2, *SPEC.shape)


def test_assimilate_gives_each_member_its_increment_and_propagate_steps_all():
    state = _state(n=3)
    b = state.background(np.datetime64("2001-01-01"), 0)
    x_a = b.members[:, -1] + 0.5
    updated = assimilate(state, b, Analysis(x_a.mean(0), members=x_a), "increment")
    torch.testing.assert_close(updated.frames, state.frames + 0.5)
    model = Shift(SPEC)
    for batch in (None, 1, 2):
        stepped, seconds = propagate(updated, model, batch)
        assert seconds >= 0 and stepped.lead_hours == 6
        torch.testing.assert_close(stepped.frames[:, -1], updated.frames[:, -1].roll(1, -1))
        torch.testing.assert_close(stepped.frames[:, 0], updated.frames[:, -1])


def test_deterministic_propagation_is_the_models_own_step():
    state = _state()
    b = state.background(np.datetime64("2001-01-01"), 0)
    x_a = b.x_b + 0.25
    updated = assimilate(state, b, Analysis(x_a), "increment")
    stepped, _ = propagate(updated, Shift(SPEC))
    torch.testing.assert_close(stepped.frames[0, -1], Shift(SPEC).step(updated.frames)[0])


# ----------------------------------------------------------------------------- ensembles
def test_initial_ensemble_is_seeded_centred_and_shared(isolated_cache):
    cfg = RunConfig(methods=("none",), cycle=CycleSettings(days=2, first_lead_hours=12,
                                                           spinup_cycles=2))
    s = persistence_setup(cfg)
    first = initial_ensemble(s, cfg, seed=0, members=6, progress=False)
    again = initial_ensemble(s, cfg, seed=0, members=6, progress=False)
    other = initial_ensemble(s, cfg, seed=1, members=6, progress=False)
    assert isinstance(first, FirstBackground) and first.members.shape == (6, 2, *SPEC.shape)
    torch.testing.assert_close(first.members, again.members, rtol=0, atol=0)
    assert not torch.equal(first.members, other.members)
    # centred: the ensemble mean is the shared first background, on every frame
    torch.testing.assert_close(first.members.mean(0), s.start.history, atol=1e-5, rtol=0)
    # the same perturbation on every frame of a member (the history update's convention)
    eps = first.members - s.start.history[None]
    torch.testing.assert_close(eps[:, 0], eps[:, 1])
    # a smaller ensemble draws the same samples first: centring only shifts every member
    # alike, so differences between members are the samples' own differences
    small = initial_ensemble(s, cfg, seed=0, members=3, progress=False).members
    eps_small = small - s.start.history[None]
    torch.testing.assert_close(eps_small[1:] - eps_small[:1], eps[1:3] - eps[:1],
                               atol=1e-5, rtol=0)
    scaled = initial_ensemble(s, dataclasses.replace(
        cfg, ensemble=EnsembleSettings(perturbation_scale=0.5)), 0, 6, False).members
    torch.testing.assert_close(scaled - s.start.history[None], 0.5 * eps, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="members"):
        initial_ensemble(s, cfg, seed=0, members=10_000, progress=False)


def test_a_cycle_background_holds_the_members_for_ensemble_methods():
    start = FirstBackground(torch.zeros(2, *SPEC.shape), 3, 48,
                            members=torch.randn(4, 2, *SPEC.shape))
    b = CycleState.start(start).background(np.datetime64("2001-01-01"), 0)
    assert b.lead_hours == 48 and b.members.shape[0] == 4
    plain = CycleState.start(dataclasses.replace(start, members=None))
    assert plain.background(np.datetime64("2001-01-01"), 0).members is None
    assert isinstance(plain.background(np.datetime64("2001-01-01"), 0), Background)
