"""Micro-benchmarks of hot kernels (pytest-benchmark).

In the test run they execute once as tests (``--benchmark-disable`` in pyproject's addopts);
to time them: ``python -m pytest tests/test_benchmarks.py --benchmark-enable``.
Budget of the issue: one emulator 6-hour step at 32×64×69 <= 20 ms on 2 CPU cores.
"""

import numpy as np
import torch

from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
from bench.state import FENGWU_CHANNELS, StateSpec


def test_emulator_step_32x64x69(benchmark):
    lat = np.linspace(85.76, -85.76, 32)
    spec = StateSpec.create(FENGWU_CHANNELS, lat, np.arange(64) * 5.625, "legendre-gauss")
    model = Emulator(EmulatorNet(69, lat, 64, EmulatorConfig()), spec)
    frames = torch.randn(1, 2, 69, 32, 64)
    out = benchmark(model.step, frames)
    assert out.shape == (1, 69, 32, 64)
