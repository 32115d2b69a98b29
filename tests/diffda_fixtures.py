"""Shared by the DiffDA tests (tests/test_diffda*.py): exact grid-point observations."""

import numpy as np
import torch

from bench.samples import SampleSettings
from bench.samples_forecast import make_samples, sample_targets
from methods.base import Observations


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


def in_memory_samples(model, truth):
    """(samples, sample_targets) for a TrainingContext over ``truth`` (T, C, H, W) held in
    memory: the harness's samples (bench.samples_forecast.make_samples) and the truth frame of
    each, for frames 6-hourly from 2000-01-01."""
    times = np.datetime64("2000-01-01", "ns") + np.arange(truth.shape[0]) * np.timedelta64(6, "h")

    def samples(kind="nmc", **settings):
        return make_samples(model, truth, SampleSettings(kind=kind, **settings), progress=False,
                            times=times)

    def targets(kind="nmc", **settings):
        return torch.from_numpy(sample_targets(times, SampleSettings(kind=kind, **settings),
                                               model.history))

    return samples, targets
