"""The contract every registered method must pass (STYLE.md: one shared test class), and the
toy methods of tests/toy_methods.py (deterministic, ensemble, 4D), which prove that the
contract carries each kind of method.

Each method is built with ``cls.for_tests()`` when it defines one (a small, fast configuration),
else ``cls()``, and fitted on a small synthetic world: smooth fields advected one cell east per
6 h, forecast by persistence (so background errors are real).
"""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec
from toy_methods import TOYS

from bench import cache
from bench.config import CycleSettings, ObservationSettings
from bench.cycle import FirstBackground, TruthWindow, first_background, observe_step, run_cycles
from bench.experiments.synthetic import synthetic_spec
from bench.experiments.timing import synthetic_inputs
from bench.forecast.persistence import Persistence
from bench.samples import SampleSettings, make_samples
from bench.samples_forecast import sample_targets as targets
from methods import METHODS
from methods.base import Analysis, Background, Kernel, MemoryEstimate, TrainingContext

ALL = {**METHODS, **TOYS}


class RecordingWorld(InMemoryWorld):
    """Records which periods were read, to prove fit() sees the training period only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = []

    def period(self, name):
        self.read.append(name)
        return super().period(name)


def build(name):
    cls = ALL[name]
    return cls.for_tests() if hasattr(cls, "for_tests") else cls()


def context(world, model, seed=0):
    spec = world.spec

    def samples(kind="nmc", **settings):
        truth = spec.to_tensor(world.period("train"))
        settings = {"start_stride": 1, **settings}  # every start of the tiny world by default
        return make_samples(model, truth, SampleSettings(kind=kind, **settings), progress=False)

    def sample_targets(kind="nmc", **settings):
        settings = {"start_stride": 1, **settings}  # as samples above
        times = world.period("train").time.values
        return torch.from_numpy(targets(times, SampleSettings(kind=kind, **settings),
                                        model.history))

    return TrainingContext(spec=spec, model=model,
                           train_truth=lambda: spec.to_tensor(world.period("train")),
                           samples=samples, sample_targets=sample_targets,
                           device=torch.device("cpu"), seed=seed, progress=False)


@pytest.fixture(params=sorted(ALL))
def setup(request):
    spec = small_spec(nlat=8, nlon=16)
    world = RecordingWorld(spec, advected_trajectory(spec, 96, seed=0))
    model = Persistence(spec)
    method = build(request.param)
    state = method.fit(context(world, model, seed=method.seed))
    return request.param, method, state, world, model, spec


def members_for(method, history, seed=0):
    """Centred random perturbations of ``history`` for an ensemble method (None otherwise)."""
    if not method.members:
        return None
    g = torch.Generator().manual_seed(seed)
    eps = 0.3 * torch.randn(method.members, *history.shape[1:], generator=g)
    return history[None] + (eps - eps.mean(0))[:, None]


def _one_analysis(method, spec, seed=0):
    truth = advected_trajectory(spec, 3, seed=5)
    history = truth[:2].clone()
    background = Background(history[-1].clone(), history, np.datetime64("2002-01-01"), 6, 0,
                            members=members_for(method, history))
    window = TruthWindow(spec.to_dataset(truth, time=np.datetime64("2002-01-01", "ns") +
                                         np.arange(3) * np.timedelta64(6, "h")), spec, "cpu")
    obs = observe_step(window, 1, 0, ObservationSettings(density=0.2, seed=seed),
                       method.window_hours, Persistence(spec))
    return background, obs


def _snapshot(method):
    return copy.deepcopy(method), dict(vars(method))


class TestEveryMethod:
    def test_fit_reads_the_training_period_only(self, setup):
        name, method, state, world, *_ = setup
        assert set(world.read) <= {"train"}, f"{name} read {world.read} during fit"

    def test_fit_is_pure_and_returns_plain_data(self, setup, tmp_path):
        name, method, state, world, model, spec = setup
        before, attributes = _snapshot(method)
        again = method.fit(context(world, model, seed=method.seed))
        assert method == before and vars(method) == attributes, f"{name}.fit mutated the method"
        assert isinstance(state, dict) and isinstance(again, dict)
        # what fit returns survives the runner's cache: same analysis from the reloaded state
        cache.save_state(state, tmp_path / "state.pt")
        reloaded = cache.load_state(tmp_path / "state.pt")
        background, obs = _one_analysis(method, spec)
        a = method.load(state, spec, "cpu").analyse(background, obs)
        b = method.load(reloaded, spec, "cpu").analyse(background, obs)
        torch.testing.assert_close(a.x_a, b.x_a, rtol=0, atol=0)

    def test_analysis_keeps_shape_dtype_device(self, setup):
        name, method, state, world, model, spec = setup
        background, obs = _one_analysis(method, spec)
        analysis = method.load(state, spec, "cpu").analyse(background, obs)
        assert isinstance(analysis, Analysis)
        x_a = analysis.x_a
        assert x_a.shape == background.x_b.shape
        assert x_a.dtype == background.x_b.dtype and x_a.device == background.x_b.device
        assert torch.isfinite(x_a).all()
        assert all(isinstance(v, int | float) for v in analysis.diagnostics.values())
        if method.members:
            assert analysis.members.shape == (method.members, *x_a.shape)
            torch.testing.assert_close(analysis.members.mean(0), x_a)
        else:
            assert analysis.members is None

    def test_same_seed_same_analysis(self, setup):
        name, method, state, world, model, spec = setup
        background, obs = _one_analysis(method, spec)
        twin = build(name)
        twin_state = twin.fit(context(world, model, seed=twin.seed))
        torch.testing.assert_close(method.load(state, spec, "cpu").analyse(background, obs).x_a,
                                   twin.load(twin_state, spec, "cpu").analyse(background, obs).x_a,
                                   rtol=0, atol=0)

    def test_config_round_trip(self, setup):
        name, method, *_ = setup
        again = type(method)(**method.config())
        assert again == method
        assert dataclasses.asdict(again) == method.config()

    def test_untrained_analyses_at_any_grid_with_costs(self, setup):
        """What `timing` and asv do: random internals at a grid no world has (odd, poles)."""
        name, method, *_ = setup
        spec = synthetic_spec(9, 16, 9)
        analyser = method.load(method.untrained(spec, seed=1), spec, "cpu")
        background, obs = synthetic_inputs(method, spec, 0.2, torch.device("cpu"), seed=1)
        analysis = analyser.analyse(background, obs)
        assert analysis.x_a.shape == spec.shape and torch.isfinite(analysis.x_a).all()
        estimate = method.memory_estimate(spec, len(obs), method.members)
        assert isinstance(estimate, MemoryEstimate)
        assert math.isfinite(estimate.total) and estimate.model >= 0 and estimate.analysis > 0
        kernel = analyser.dominant_kernel(background, obs)
        assert isinstance(kernel, Kernel)
        kernel.fn()

    def test_short_cycle_runs_on_cpu(self, setup):
        name, method, state, world, model, spec = setup
        truth = TruthWindow(world.period("valid"), spec, torch.device("cpu"))
        settings = CycleSettings(days=1.5, first_lead_hours=6, spinup_cycles=0)
        start = first_background(model, truth, settings)
        if method.members:
            start = FirstBackground(start.history, start.start_index, start.lead_hours,
                                    members=members_for(method, start.history))
        clim = spec.to_tensor(world.period("train")).mean(0)
        result = run_cycles(method.load(state, spec, "cpu"), model, truth, start,
                            ObservationSettings(density=0.1), settings, clim,
                            window_hours=method.window_hours, progress=False)
        assert result.status == "ok", result.reason
        assert np.isfinite(result.per_channel["rmse"]).all()
        assert np.isfinite(result.per_cycle["analysis_seconds"]).all()
        assert (result.per_cycle["n_obs"] > 0).all()
        spread = result.per_channel["spread"]
        assert np.isfinite(spread).all() if method.members else np.isnan(spread).all()
