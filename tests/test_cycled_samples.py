"""cycled_background samples (bench/cycled_samples.py): the background errors of a method cycled
through the training period, checked in closed form with persistence as the model, resumed
after an interruption without recomputing finished blocks, and refused up front when asked for
wrongly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from forecast_fixtures import advected_trajectory, persistence_setup, small_spec

from bench import cache
from bench.config import CycleSettings, RunConfig
from bench.cycled_samples import FIRST_LEAD_HOURS, SPINUP_CYCLES, cycle_errors, cycled_targets
from bench.forecast.persistence import Persistence
from bench.samples import SampleSettings
from bench.setup import cycling_method, sample_targets, samples
from bench.validation import ConfigError
from methods.base import Analyser, Analysis
from methods.diffda import DiffDA
from methods.vaevar import VAEVar

SETTINGS = SampleSettings(kind="cycled_background", method="none", density=0.05, start_stride=1,
                          batch_size=16)


class ConstantIncrement(Analyser):
    """x_a = x_b + c everywhere; with ``fail_at`` the ``fail_at``-th call raises (an
    interrupted build)."""

    def __init__(self, c: float, fail_at: int = 0):
        self.c, self.calls, self.fail_at = c, 0, fail_at

    def analyse(self, background, obs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return Analysis(background.x_b + self.c)


def tiny():
    spec = small_spec()
    truth = advected_trajectory(spec, 120, seed=1)
    times = np.datetime64("2001-01-01", "ns") + np.arange(120) * np.timedelta64(6, "h")
    return spec, truth, times


def build(folder, analyser, settings=SETTINGS):
    spec, truth, times = tiny()
    folder.mkdir(exist_ok=True)
    identity = {"settings": "test", "c": analyser.c}
    n = cycle_errors(truth, times, spec, Persistence(spec), analyser, settings, folder,
                     identity, progress=False)
    rows = np.load(folder / "samples.npy")
    assert rows.shape[0] == n
    return torch.from_numpy(rows), truth, times


def segment_start(t: int, t0: int, settings=SETTINGS) -> int:
    """Valid time of cycle 0 of the segment holding cycle t (15-day segments: 60 cycles)."""
    size = settings.segment_days * 4
    return t0 + (t - t0) // size * size


def test_persistence_with_a_constant_increment_in_closed_form(tmp_path):
    """Persistence keeps x_b; each analysis adds c, carried by the forecast: the background at
    cycle k of a segment starting at T (valid at T + k) is x_true(T − 48 h) + c·k, so
    d_j = x_true(t_j) − x_true(T − 48 h) − c·(t_j − T), for every cycle after the spin-up of
    each segment (120 frames: two segments, the second restarted from truth)."""
    c = 0.25
    got, truth, times = build(tmp_path, ConstantIncrement(c))
    history = Persistence(small_spec()).history
    lead = FIRST_LEAD_HOURS // 6
    t0 = history - 1 + lead
    targets = cycled_targets(times, SETTINGS, history)
    second = t0 + 60
    np.testing.assert_array_equal(targets, np.r_[t0 + SPINUP_CYCLES:second,
                                                 second + SPINUP_CYCLES:120])
    want = torch.stack([truth[t] - truth[segment_start(t, t0) - lead]
                        - c * (t - segment_start(t, t0)) for t in targets])
    torch.testing.assert_close(got, want)


def test_an_interrupted_build_resumes_from_its_checkpoint_with_the_same_rows(tmp_path):
    whole, _, _ = build(tmp_path / "whole", ConstantIncrement(0.1))
    first = ConstantIncrement(0.1, fail_at=70)  # blocks of 16 samples after 8 spin-up cycles
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "cut", first)
    progress = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert progress["done"] == [0, 1, 2]  # cycles 0 … 55 (8 + 3 × 16) finished
    again = ConstantIncrement(0.1)
    resumed, _, _ = build(tmp_path / "cut", again)
    torch.testing.assert_close(resumed, whole)
    # only the unfinished cycles: all 111 (valid at 9 … 119) less the 56 finished
    assert again.calls == (120 - 9) - (SPINUP_CYCLES + 3 * 16)


def test_through_the_harness_with_no_assimilation(isolated_cache):
    """bench.setup.samples fits and loads the cycling method (here `none`: a free forecast
    from the first background) and caches the samples; targets line up with them."""
    s = persistence_setup(RunConfig(methods=("none",), densities=(0.05,),
                                    cycle=CycleSettings(days=1, spinup_cycles=2)))
    settings = dict(method="none", density=0.05, start_stride=2)
    got = samples(s, "cycled_background", progress=False, **settings)
    targets = sample_targets(s, "cycled_background", **settings)
    truth = s.world.spec.to_tensor(s.world.period("train"))
    t0 = s.model.history - 1 + FIRST_LEAD_HOURS // 6  # each segment restarts from truth
    origins = [segment_start(int(t), t0) - FIRST_LEAD_HOURS // 6 for t in targets]
    torch.testing.assert_close(got, truth[targets] - truth[origins])
    every = samples(s, "cycled_background", progress=False, **{**settings, "start_stride": 1})
    torch.testing.assert_close(got, every[::2])  # one cycle, cached once, strided views
    entries = [e for e in (isolated_cache / "samples").iterdir() if e.name.startswith("tiny")]
    assert len(entries) == 1 and cache.read_marker(entries[0]) is not None  # cached, complete


def test_bad_requests_are_refused_before_any_work():
    with pytest.raises(ValueError, match="need method="):
        SampleSettings(kind="cycled_background", density=0.01)
    with pytest.raises(ValueError, match="density=0"):
        SampleSettings(kind="cycled_background", method="3dvar")
    with pytest.raises(ValueError, match="segment_days"):
        SampleSettings(kind="cycled_background", method="3dvar", density=0.01, segment_days=2)
    with pytest.raises(ValueError, match="max_samples"):
        SampleSettings(kind="cycled_background", method="3dvar", density=0.01, max_samples=5)
    with pytest.raises(ConfigError, match="deterministic 3D"):
        cycling_method("letkf")
    with pytest.raises(ConfigError, match="registered method"):
        cycling_method("kalman")
    with pytest.raises(ValueError, match="cycled_method"):
        VAEVar(training_samples="cycled_background", cycled_method="kalman")
    with pytest.raises(ValueError, match="deterministic 3D"):
        DiffDA(training_samples="cycled_background", cycled_method="letkf")
    with pytest.raises(ValueError, match="cycled_density"):
        DiffDA(training_samples="cycled_background", cycled_density=2.0)
    with pytest.raises(ValueError, match="lead of 6 h"):
        DiffDA(training_samples="cycled_background", leads_hours=(48,))


def test_the_methods_ask_for_the_cycle_they_name():
    """VAE-Var and DiffDA's 6 h denoiser learn from the cycled samples of their
    cycled_method / cycled_density; DiffDA's 48 h denoiser keeps its forecast pairs; the
    settings enter the fit's cache key only when set."""
    spec = small_spec()
    truth = advected_trajectory(spec, 40, seed=0)
    asked = []

    def fake_samples(kind, **kw):
        asked.append((kind, kw))
        return torch.randn(12, *spec.shape)

    from methods.base import TrainingContext

    ctx = TrainingContext(spec=spec, model=Persistence(spec), train_truth=lambda: truth,
                          samples=fake_samples,
                          sample_targets=lambda kind, **kw: torch.arange(12) + 20,
                          device=torch.device("cpu"), seed=0, progress=False)
    VAEVar.for_tests(training_samples="cycled_background", cycled_density=0.2,
                     epochs=1).fit(ctx)
    assert asked == [("cycled_background", dict(start_stride=1, days=365, method="3dvar",
                                                 density=0.2))]
    asked.clear()
    DiffDA.for_tests(training_samples="cycled_background", leads_hours=(6, 12),
                     cycled_method="interp", train_steps=2).fit(ctx)
    assert [k for k, _ in asked] == ["cycled_background", "truth_minus_forecast"]
    assert asked[0][1] == dict(start_stride=1, days=0, method="interp", density=0.01)
    assert "cycled_density" not in VAEVar().cache_config()
    assert VAEVar(cycled_density=0.05).cache_config()["cycled_density"] == 0.05

