"""The built-in forecast model: a small residual CNN with FengWu's contract.

Two normalised frames (t − 6 h, t) plus two static latitude features go in; the network
predicts the 6-hour increment in units of its per-channel standard deviation s_c:

    x_{t+6h} = x_t + P(s ⊙ f_θ([x_{t−6h}, x_t, sin φ, cos φ]))

with P the triangular truncation to the wavenumbers the grid resolves
(methods/common/spectral.py, with StateSpec's truncation rule; EmulatorConfig.truncate_increments).

The output layer starts at zero, so an untrained emulator is persistence. Convolutions see the
sphere (methods/common/sphere.py): longitude wraps around (circular padding) and a row beyond a
pole is the row next to it shifted by 180° of longitude (the grid point you reach by walking
over the pole).
Training is in emulator_train.py.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.forecast.base import ForecastModel
from bench.state import StateSpec
from methods.common.spectral import TriangularTruncation
from methods.common.sphere import SphereConv, SphereResidualBlock


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    """Architecture and training settings of the emulator (the cache key, with the world).

    Attributes:
        width: channels of the hidden layers.
        blocks: residual blocks (two 3×3 convolutions each).
        history: input frames (FengWu: 2).
        steps: optimiser steps; fixed (not a time budget) so training is reproducible.
        batch_size: samples per step.
        learning_rate: peak AdamW learning rate (cosine decay to 0 after a short warm-up).
        weight_decay: AdamW weight decay.
        rollout_weight: weight of a second, autoregressive 6-h step in the loss (0 disables);
            it teaches the model to forecast from its own output, which errors grow on.
        rollout_start: fraction of the steps after which that second step is added (it costs
            1.5× per step, so it is spent where it matters, at the end).
        seed: seeds initialisation and batch sampling.
        truncate_increments: project each increment on the spherical harmonics the grid
            resolves (P above; T31 on the built-in 32 × 64 Gaussian grid, the nature run's own
            truncation), in training and forecasting. Why: without it the emulator grows a
            2Δλ mode (zonal orders 30–32) in its upper-tropospheric meridional wind where the
            nature run has no power (m ≥ 28 carries 1e-6 of v400's variance): in a 15-day free
            run from the harness's first background v400's error reached 5 climatological
            standard deviations, 89 % of it at m ≥ 28, and the mean normalised error 1.60,
            2.5× climatology's 0.63, so every method's cycles ended in it (3DVar at 5 %
            density: 0.31 at cycle 20, 1.47 at cycle 59). The projection, applied to the
            same trained network without retraining, left the 6-h error from the truth
            unchanged (0.0909 vs 0.0910, normalised, 19 validation starts) and the free run
            saturated at 0.87 (√2 × climatology's error is 0.89).
    """

    width: int = 64
    blocks: int = 4
    history: int = 2
    steps: int = 1200
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    rollout_weight: float = 0.5
    rollout_start: float = 0.7
    seed: int = 0
    truncate_increments: bool = True


class EmulatorNet(nn.Module):
    """f_θ: (B, history, C, H, W) -> the next frame (B, C, H, W), all normalised.

    Buffers: ``increment_std`` (C,) the per-channel std of 6-h increments (normalised units),
    ``latitude_features`` (1, 2, H, W) sin φ and cos φ.
    """

    def __init__(self, channels: int, lat_deg: np.ndarray, nlon: int, cfg: EmulatorConfig,
                 grid: str = "legendre-gauss"):
        super().__init__()
        self.history = cfg.history
        phi = torch.deg2rad(torch.as_tensor(np.array(lat_deg), dtype=torch.float32))
        features = torch.stack([phi.sin(), phi.cos()])[:, :, None].expand(2, len(phi), nlon)
        self.register_buffer("latitude_features", features[None].clone())
        self.register_buffer("increment_std", torch.ones(channels))
        self.encode = SphereConv(cfg.history * channels + 2, cfg.width)
        self.blocks = nn.Sequential(*[SphereResidualBlock(cfg.width) for _ in range(cfg.blocks)])
        self.decode = nn.Conv2d(cfg.width, channels, kernel_size=1)
        nn.init.zeros_(self.decode.weight)  # start as persistence
        nn.init.zeros_(self.decode.bias)
        # P: its tables are non-persistent buffers (rebuilt here, not stored in checkpoints)
        self.truncate = (TriangularTruncation(grid, len(phi), nlon) if cfg.truncate_increments
                         else nn.Identity())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b = frames.shape[0]
        inputs = torch.cat(
            [frames.flatten(1, 2), self.latitude_features.expand(b, -1, -1, -1)], dim=1)
        increment = self.decode(F.gelu(self.blocks(self.encode(inputs))))
        return frames[:, -1] + self.truncate(self.increment_std[:, None, None] * increment)


class Emulator(ForecastModel):
    """The trained EmulatorNet behind the ForecastModel contract; differentiable (a 4D method
    may take gradients through ``step_differentiable``; the weights themselves stay frozen)."""

    differentiable = True

    def __init__(self, net: EmulatorNet, spec: StateSpec, device: str | torch.device = "cpu",
                 config: EmulatorConfig | None = None):
        self.spec = spec
        self.config = config
        self.history = net.history
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self._net64: EmulatorNet | None = None

    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)

    def _step_float64(self, frames: torch.Tensor) -> torch.Tensor:
        """The step on a float64 copy of the network (made on first use; ``step`` and
        ``rollout`` never use it): for adjoint and Taylor tests at float64 round-off."""
        if self._net64 is None:
            self._net64 = copy.deepcopy(self.net).double()
        return self._net64(frames)
