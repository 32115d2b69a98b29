"""Persistence: the forecast is the latest frame. A baseline and a closed-form test model."""

from __future__ import annotations

import torch

from bench.forecast.base import ForecastModel
from bench.state import StateSpec


class Persistence(ForecastModel):
    """x_{t+6h} = x_t, with FengWu's two-frame history (differentiable: the identity)."""

    differentiable = True

    def __init__(self, spec: StateSpec, history: int = 2, device: str | torch.device = "cpu"):
        self.spec = spec
        self.history = history
        self.device = torch.device(device)

    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        return frames[:, -1].clone()
