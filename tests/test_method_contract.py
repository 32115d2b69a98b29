"""The contract every registered method must pass (STYLE.md: one shared test class).

Each method in ``methods.METHODS`` is built with ``cls.for_tests()`` when it defines one (a small,
fast configuration), else ``cls()``, and is prepared on a small synthetic world: smooth fields
advected one cell east per 6 h, forecast by persistence (so background errors are real).
"""

import dataclasses

import numpy as np
import pytest
import torch
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec

from bench.config import CycleSettings, ObservationSettings
from bench.cycle import TruthWindow, first_background, run_cycles
from bench.forecast.persistence import Persistence
from bench.observations import observe
from bench.samples import SampleSettings, make_samples
from methods import METHODS
from methods.base import Background, TrainingContext


class RecordingWorld(InMemoryWorld):
    """Records which periods were read, to prove prepare() sees the training period only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = []

    def period(self, name):
        self.read.append(name)
        return super().period(name)


def build(name):
    cls = METHODS[name]
    return cls.for_tests() if hasattr(cls, "for_tests") else cls()


def context(world, model, tmp_path, seed=0):
    spec = world.spec

    def samples(kind="nmc", **settings):
        truth = spec.to_tensor(world.period("train"))
        settings = {"start_stride": 1, **settings}  # every start of the tiny world by default
        return make_samples(model, truth, SampleSettings(kind=kind, **settings), progress=False)

    return TrainingContext(spec=spec, model=model,
                           train_truth=lambda: spec.to_tensor(world.period("train")),
                           samples=samples, device=torch.device("cpu"),
                           cache_dir=tmp_path / "method-cache", seed=seed, progress=False)


@pytest.fixture(params=sorted(METHODS))
def setup(request, tmp_path):
    spec = small_spec(nlat=8, nlon=16)
    world = RecordingWorld(spec, advected_trajectory(spec, 96, seed=0))
    model = Persistence(spec)
    method = build(request.param)
    method.prepare(context(world, model, tmp_path, seed=method.seed))
    return request.param, method, world, model, spec


def _one_analysis(method, spec, seed=0):
    truth = advected_trajectory(spec, 3, seed=5)
    history = truth[:2].clone()
    background = Background(history[-1].clone(), history, np.datetime64("2002-01-01"), 6, 0)
    obs = observe(truth[2], spec, ObservationSettings(density=0.2, seed=seed), cycle=0)
    return background, obs


class TestEveryMethod:
    def test_prepare_reads_the_training_period_only(self, setup):
        name, method, world, *_ = setup
        assert set(world.read) <= {"train"}, f"{name} read {world.read} during prepare"

    def test_shape_dtype_device_preserved(self, setup):
        name, method, world, model, spec = setup
        background, obs = _one_analysis(method, spec)
        x_a = method.analyse(background, obs)
        assert x_a.shape == background.x_b.shape
        assert x_a.dtype == background.x_b.dtype and x_a.device == background.x_b.device
        assert torch.isfinite(x_a).all()
        assert isinstance(method.diagnostics(), dict)

    def test_same_seed_same_analysis(self, setup, tmp_path):
        name, method, world, model, spec = setup
        background, obs = _one_analysis(method, spec)
        twin = build(name)
        twin.prepare(context(world, model, tmp_path / "twin", seed=twin.seed))
        torch.testing.assert_close(method.analyse(background, obs), twin.analyse(background, obs),
                                   rtol=0, atol=0)

    def test_config_round_trip(self, setup):
        name, method, *_ = setup
        again = type(method)(**method.config())
        assert again == method
        assert dataclasses.asdict(again) == method.config()

    def test_short_cycle_runs_on_cpu(self, setup):
        name, method, world, model, spec = setup
        truth = TruthWindow(world.period("valid"), spec, torch.device("cpu"))
        settings = CycleSettings(days=1.5, first_lead_hours=6)
        start = first_background(model, truth, settings)
        clim = spec.to_tensor(world.period("train")).mean(0)
        result = run_cycles(method, model, truth, start, ObservationSettings(density=0.1),
                            settings, clim, progress=False)
        assert result.status == "ok", result.reason
        assert np.isfinite(result.rmse).all() and np.isfinite(result.seconds).all()
        assert (result.n_obs > 0).all()
