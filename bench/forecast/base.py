"""The ForecastModel contract (DESIGN.md §3), shared by FengWu and the built-in emulator.

Tensors are normalised with the *world's* StateSpec (``spec.normalise``); a model with its own
normalisation (FengWu's ``data_mean.npy`` / ``data_std.npy``) converts inside ``step``.

Shapes:
    frames  (B, history, C, H, W)  oldest first: for FengWu, t − 6 h then t
    step    -> (B, C, H, W)         the state at t + 6 h
    rollout -> (B, n, C, H, W)      t + 6 h, …, t + 6n h
"""

from __future__ import annotations

import abc

import torch

from bench.state import StateSpec

STEP_HOURS = 6


class ForecastModel(abc.ABC):
    """A 6-hourly autoregressive forecast model.

    Attributes:
        spec: the StateSpec of the states it reads and writes (normalised tensors).
        history: number of input frames (FengWu: 2).
        device: the torch device its tensors live on.
    """

    spec: StateSpec
    history: int
    device: torch.device

    @abc.abstractmethod
    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, history, C, H, W) -> (B, C, H, W); inputs already checked."""

    @torch.no_grad()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """One 6-hour step: (B, history, C, H, W) normalised -> (B, C, H, W) normalised."""
        self.check_frames(frames)
        return self._step(frames)

    @torch.no_grad()
    def rollout(self, frames: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` steps, feeding each output back as the newest frame: -> (B, n, C, H, W)."""
        if n < 1:
            raise ValueError(f"rollout needs n >= 1 steps, got n={n}")
        self.check_frames(frames)
        out = []
        for _ in range(n):
            nxt = self._step(frames)
            out.append(nxt)
            frames = torch.cat([frames[:, 1:], nxt[:, None]], dim=1)
        return torch.stack(out, dim=1)

    def check_frames(self, frames: torch.Tensor) -> None:
        expected = (self.history, *self.spec.shape)
        if frames.ndim != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects frames of shape "
                f"(B, {', '.join(map(str, expected))}) = (batch, history, channels, lat, lon), "
                f"got {tuple(frames.shape)}"
            )
        if frames.device != self.device:
            raise ValueError(
                f"frames are on {frames.device} but the model runs on {self.device}; "
                f"move them with .to({str(self.device)!r})"
            )
