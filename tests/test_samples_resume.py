"""Background-error samples are made batch by batch and resume after a kill: a child process
SIGKILLed in the middle of generating them leaves its finished batches on disk, and the rerun
forecasts only the batches that were not finished, ending with exactly the samples of an
uninterrupted run. Also: the configurable sample window (period, days, max_samples) and its
cache keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec

from bench import cache, resumable
from bench.forecast.persistence import Persistence
from bench.samples import SampleSettings, load_or_make_samples, make_samples, samples_entry

ROOT = Path(__file__).resolve().parents[1]
#: 120 training frames, starts every frame, 8 a batch: 14 batches of NMC samples, each a 48 h
#: and a 24 h forecast (12 model steps); the child dies in the first step of batch KILL_BATCH.
SETTINGS = SampleSettings(kind="nmc", start_stride=1, batch_size=8)
BATCHES, KILL_BATCH, STEPS = 14, 5, (48 + 24) // 6


def world() -> InMemoryWorld:
    spec = small_spec()
    return InMemoryWorld(spec, advected_trajectory(spec, 160, seed=0))


class Counting(Persistence):
    """Persistence that counts its 6-hour steps and, with ``kill_at``, SIGKILLs its own
    process when that step starts."""

    def __init__(self, spec, kill_at: int = 0):
        super().__init__(spec)
        self.calls, self.kill_at = 0, kill_at

    def _step(self, frames):
        self.calls += 1
        if self.calls == self.kill_at:
            print("KILLED", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._step(frames)


CHILD = """
import torch
torch.set_num_threads(1)
import test_samples_resume as t
from bench.samples import load_or_make_samples
w = t.world()
load_or_make_samples(w, t.Counting(w.spec, kill_at={kill_at}), "persistence", t.SETTINGS,
                     progress=False)
print("NOT KILLED", flush=True)
"""


def kill_child(kill_at: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               ASSIMBENCH_CACHE=str(cache.cache_root()),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    child = subprocess.run([sys.executable, "-c", CHILD.format(kill_at=kill_at)], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = f"stdout:\n{child.stdout}\nstderr:\n{child.stderr[-3000:]}"
    assert child.returncode == -signal.SIGKILL, report
    assert "KILLED" in child.stdout and "NOT KILLED" not in child.stdout, report


def test_a_killed_generation_resumes_without_recomputing_finished_batches(isolated_cache):
    w = world()
    entry = samples_entry(w, "persistence", SETTINGS)
    kill_child(kill_at=STEPS * KILL_BATCH + 1)  # batches 0 … KILL_BATCH − 1 finished
    assert cache.read_marker(entry) is None
    progress = json.loads((resumable.partial_dir(entry) / resumable.PROGRESS).read_text())
    assert progress["done"] == list(range(KILL_BATCH))

    model = Counting(w.spec)
    got = load_or_make_samples(w, model, "persistence", SETTINGS, progress=False)
    assert model.calls == STEPS * (BATCHES - KILL_BATCH), "only the unfinished batches"
    # exactly an uninterrupted run's samples, computed here without any cache
    truth = w.spec.to_tensor(w.period("train"))
    want = make_samples(Persistence(w.spec), truth, SETTINGS, progress=False)
    assert got.shape == want.shape == (120 - 8 - 1, *w.spec.shape)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert cache.read_marker(entry)["count"] == want.shape[0]
    assert not resumable.partial_dir(entry).exists(), "removed once the entry is complete"
    # a rerun loads the entry: no forecast at all
    again = Counting(w.spec)
    torch.testing.assert_close(load_or_make_samples(w, again, "persistence", SETTINGS,
                                                    progress=False), want, rtol=0, atol=0)
    assert again.calls == 0


def test_progress_of_other_settings_is_not_reused(isolated_cache, tmp_path):
    """A row file whose record names another identity (or shape) starts afresh."""
    rows = resumable.RowFile(tmp_path, "x.npy", (4, 2), np.float32, {"a": 1})
    rows.write(0, 0, np.ones((2, 2)))
    assert resumable.RowFile(tmp_path, "x.npy", (4, 2), np.float32, {"a": 1}).done == {0}
    assert resumable.RowFile(tmp_path, "x.npy", (4, 2), np.float32, {"a": 2}).done == set()
    assert resumable.RowFile(tmp_path, "x.npy", (5, 2), np.float32, {"a": 2}).done == set()
    rows = resumable.RowFile(tmp_path, "x.npy", (4, 2), np.float32, {"a": 1})
    rows.write(1, 2, np.full((2, 2), 3.0))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy")[2:], 3.0)


def test_sample_window_period_days_and_max_samples():
    """The window: a period inside the training period, its last ``days`` days, and at most
    ``max_samples`` evenly spread starts; starts never read past the window."""
    w = world()
    truth = w.spec.to_tensor(w.period("train"))  # 120 frames from 2001-01-01, 6-hourly
    times = w.period("train")["time"].values
    model = Persistence(w.spec)
    full = make_samples(model, truth, SETTINGS, progress=False, times=times)
    days = make_samples(model, truth, SampleSettings(start_stride=1, days=10), progress=False,
                        times=times)
    # the last 10 days are frames 80 … 119: starts 81 … 111 (the full run's: 1 … 111)
    torch.testing.assert_close(days, full[80:], rtol=0, atol=0)
    part = SampleSettings(start_stride=1, days=0, period="2001-01-05..2001-01-15")
    got = make_samples(model, truth, part, progress=False, times=times)
    torch.testing.assert_close(got, full[16:16 + 40 - 9], rtol=0, atol=0)  # frames 16 … 55
    capped = make_samples(model, truth, SampleSettings(start_stride=1, max_samples=5),
                          progress=False, times=times)
    picks = np.linspace(0, full.shape[0] - 1, 5).round().astype(int)
    torch.testing.assert_close(capped, full[picks], rtol=0, atol=0)
    with pytest.raises(ValueError, match="not inside the training period"):
        make_samples(model, truth, SampleSettings(period="2000-01-01..2001-01-05"),
                     progress=False, times=times)
    with pytest.raises(ValueError, match="period="):
        SampleSettings(period="2001-01-05")


def old_entry(w, model_key: str) -> Path:
    """The entry NMC samples of the default settings had before ``period``, ``days`` and
    ``max_samples`` existed (bench/samples.py then keyed these fields, ``count`` left out)."""
    old = {"kind": "nmc", "long_hours": 48, "short_hours": 24, "lead_hours": 24,
           "start_stride": 4, "batch_size": 32}
    return cache.entry_dir("samples", w.name, {"settings": old, "world": cache.config_hash(
        w.card), "model": model_key})


def test_cache_keys_change_only_with_the_samples_selected(isolated_cache):
    """A window equal to the whole training period, the default ``days`` on a shorter period,
    and max_samples=0 keep the key of samples made before these settings existed (so cached
    samples stay valid); a window that selects other frames, or a cap, is another entry."""
    w = world()  # a 30-day training period: the default 365 days are all of it
    base = old_entry(w, "m")
    assert samples_entry(w, "m", SampleSettings()) == base
    assert samples_entry(w, "m", SampleSettings(days=0)) == base
    assert samples_entry(w, "m", SampleSettings(period="2001-01-01..2001-01-31")) == base
    assert samples_entry(w, "m", SampleSettings(days=10)) != base
    assert samples_entry(w, "m", SampleSettings(max_samples=5)) != base
    assert samples_entry(w, "m", SampleSettings(period="2001-01-02..2001-01-31")) != base
