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

from bench.config import STEP_HOURS
from bench.state import StateSpec

__all__ = ["STEP_HOURS", "ForecastModel", "same_device"]


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same; "cuda" without an index means the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == \
        (b.index if b.index is not None else current)


class ForecastModel(abc.ABC):
    """A 6-hourly autoregressive forecast model.

    Attributes:
        spec: the StateSpec of the states it reads and writes (normalised tensors).
        history: number of input frames (FengWu: 2).
        device: the torch device its tensors live on.
        max_batch: the largest batch one call of ``step`` takes at once; the harness forecasts
            an ensemble's members in batches of at most this (FengWu's ONNX graph: 1).
        differentiable: whether gradients flow through ``step_differentiable`` (the emulator:
            yes; FengWu's ONNX graph: no). 4D methods that differentiate the model need it.
    """

    spec: StateSpec
    history: int
    device: torch.device
    max_batch: int = 64
    differentiable: bool = False

    @abc.abstractmethod
    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, history, C, H, W) -> (B, C, H, W); inputs already checked."""

    @torch.no_grad()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """One 6-hour step: (B, history, C, H, W) normalised -> (B, C, H, W) normalised float32."""
        self.check_frames(frames)
        return self._step(frames.to(torch.float32))

    def step_differentiable(self, frames: torch.Tensor) -> torch.Tensor:
        """``step`` with autograd on: gradients flow from the output to ``frames`` (for 4D
        methods; methods/base DifferentiableModel). Only for ``differentiable`` models.

        float64 frames stay float64 (``_step_float64``: adjoint and Taylor tests need float64
        round-off); any other dtype runs in float32, as ``step`` does.
        """
        if not self.differentiable:
            raise TypeError(f"{type(self).__name__} is not differentiable (its step runs "
                            "outside autograd); a 4D method needs the built-in emulator")
        self.check_frames(frames)
        if frames.dtype == torch.float64:
            return self._step_float64(frames)
        return self._step(frames.to(torch.float32))

    def _step_float64(self, frames: torch.Tensor) -> torch.Tensor:
        """``_step`` in float64: (B, history, C, H, W) float64 -> (B, C, H, W) float64.
        Default: ``_step`` itself (right for a model whose arithmetic follows its input's
        dtype, like persistence); a model with float32 weights overrides it."""
        return self._step(frames)

    def step_batched(self, frames: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """``step`` over any number of states in chunks of at most ``batch`` (default
        ``max_batch``): (B, history, C, H, W) -> (B, C, H, W)."""
        size = min(batch or self.max_batch, self.max_batch)
        return torch.cat([self.step(frames[i: i + size]) for i in range(0, len(frames), size)])

    @torch.no_grad()
    def rollout(self, frames: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` steps, feeding each output back as the newest frame: -> (B, n, C, H, W)."""
        if n < 1:
            raise ValueError(f"rollout needs n >= 1 steps, got n={n}")
        self.check_frames(frames)
        frames = frames.to(torch.float32)
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
        if not frames.is_floating_point():
            raise ValueError(f"frames must be floating point (float32), got {frames.dtype}")
        if not same_device(frames.device, self.device):
            raise ValueError(
                f"frames are on {frames.device} but the model runs on {self.device}; "
                f"move them with .to({str(self.device)!r})"
            )
