"""Trained emulators and samples are cached and reloaded without recomputation."""

import dataclasses

import pytest
import torch
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec

import bench.forecast.emulator_train as emulator_train
import bench.samples as samples_module
from bench.forecast.emulator import EmulatorConfig
from bench.samples import SampleSettings

TINY = EmulatorConfig(width=8, blocks=1, steps=20, batch_size=4)


def test_emulator_is_trained_once_then_reloaded(isolated_cache, monkeypatch):
    spec = small_spec()
    world = InMemoryWorld(spec, advected_trajectory(spec, 48, seed=0))
    model, log = emulator_train.load_or_train(world, TINY, progress=False)
    frames = torch.randn(1, 2, *spec.shape)
    first = model.step(frames)

    def fail(*args, **kwargs):
        raise AssertionError("a cached emulator must not be retrained")

    monkeypatch.setattr(emulator_train, "train_emulator", fail)
    again, log2 = emulator_train.load_or_train(world, TINY, progress=False)
    torch.testing.assert_close(again.step(frames), first, rtol=0, atol=0)
    assert log2["seconds"] == log["seconds"]
    # another config is another cache entry
    with pytest.raises(AssertionError, match="must not be retrained"):
        emulator_train.load_or_train(world, dataclasses.replace(TINY, steps=21), progress=False)


def test_damaged_emulator_cache_gives_a_clear_error(isolated_cache):
    spec = small_spec()
    world = InMemoryWorld(spec, advected_trajectory(spec, 48, seed=0))
    emulator_train.load_or_train(world, TINY, progress=False)
    entry = emulator_train.emulator_entry(world, TINY)
    (entry / emulator_train.WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="damaged.*--retrain"):
        emulator_train.load_or_train(world, TINY, progress=False)


def test_samples_are_cached_and_come_from_the_training_period_only(isolated_cache, monkeypatch):
    spec = small_spec()
    trajectory = advected_trajectory(spec, 48, seed=0)
    world = InMemoryWorld(spec, trajectory)
    from bench.forecast.persistence import Persistence

    settings = SampleSettings(kind="truth_minus_forecast", lead_hours=6, start_stride=1)
    got = samples_module.load_or_make_samples(world, Persistence(spec), "persistence", settings,
                                              progress=False)
    train = trajectory[:36]
    want = torch.stack([train[i + 1] - train[i] for i in range(1, 35)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    monkeypatch.setattr(samples_module, "make_samples", lambda *a, **k: 1 / 0)
    torch.testing.assert_close(samples_module.load_or_make_samples(
        world, Persistence(spec), "persistence", settings, progress=False), got)
