"""Shared helpers of the observation tests: a small grid, random truths, draw comparisons."""

import dataclasses

import numpy as np
import torch

from bench.state import StateSpec

NAMES = ["t850", "z500", "u850"]


def small_spec(**stats) -> StateSpec:
    return StateSpec.create(NAMES, lat=np.linspace(78.75, -78.75, 8), lon=np.arange(16) * 22.5,
                            grid="legendre-gauss", **stats)


def random_truth(spec, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*spec.shape, generator=g, dtype=torch.float64).to(dtype)


def locations(obs):
    return obs.channel.tolist(), obs.flat_index[:, 0].tolist()


def assert_same(a, b):
    assert locations(a) == locations(b)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.error_std, b.error_std)
    np.testing.assert_array_equal(a.lat, b.lat)
    np.testing.assert_array_equal(a.lon, b.lon)


def dataclass_replace(settings, **changes):
    return dataclasses.replace(settings, **changes)
