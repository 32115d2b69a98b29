"""What a method analyses: observations at one time (``Observations``) or over a time window
(``ObservationWindow``). Shapes and units as in methods/base/__init__.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import torch


@dataclasses.dataclass(frozen=True, eq=False)  # tensors inside: identity, not value, equality
class Observations:
    """N observations y with a linear observation operator H.

    Each observation is a weighted sum of up to K grid values of one channel:
        H(x)_n = Σ_k weights[n, k] · x[channel[n], flat_index[n, k]]   (flat = lat_index·W + lon)
    Grid-point observations have K = 1 and weight 1; off-grid (station) observations use K = 4
    bilinear weights. H is linear, differentiable and batched over leading dims of x.

    Attributes:
        values: y, (N,) normalised.
        error_std: σ_o, (N,) normalised (R = diag(σ_o²)); may be 0 (noise-free protocol).
        channel: (N,) long, channel index of each observation.
        flat_index: (N, K) long, flattened grid indices lat_index * W + lon_index.
        weights: (N, K) float, interpolation weights (each row sums to 1).
        lat, lon: (N,) float64 numpy, degrees: where each observation is (for kernels).
        grid_shape: (C, H, W) of the states H applies to.
        dropped: observations removed before the method saw them (NaN values in the source).
    """

    values: torch.Tensor
    error_std: torch.Tensor
    channel: torch.Tensor
    flat_index: torch.Tensor
    weights: torch.Tensor
    lat: np.ndarray
    lon: np.ndarray
    grid_shape: tuple[int, int, int]
    dropped: int = 0

    def __post_init__(self):
        n = self.values.shape[0]
        for name in ("error_std", "channel"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.flat_index.ndim != 2 or self.flat_index.shape[0] != n or \
                self.weights.shape != self.flat_index.shape:
            raise ValueError(
                f"flat_index and weights must both be (N={n}, K), got "
                f"{tuple(self.flat_index.shape)} and {tuple(self.weights.shape)}")
        if np.shape(self.lat) != (n,) or np.shape(self.lon) != (n,):
            raise ValueError(f"lat and lon must have shape ({n},)")
        if len(self.grid_shape) != 3:
            raise ValueError(f"grid_shape must be (C, H, W), got {self.grid_shape}")
        c, h, w = self.grid_shape
        if n and not torch.isfinite(self.values).all():
            raise ValueError("observation values must be finite; drop NaNs before building them")
        if n and not (torch.isfinite(self.error_std).all() and (self.error_std >= 0).all()):
            raise ValueError("observation error std must be finite and >= 0")
        if n and not torch.isfinite(self.weights).all():
            raise ValueError("interpolation weights must be finite")
        if n and not (0 <= int(self.channel.min()) and int(self.channel.max()) < c):
            raise ValueError(f"channel indices must lie in [0, {c}) for grid_shape "
                             f"{self.grid_shape}")
        if n and not (0 <= int(self.flat_index.min()) and int(self.flat_index.max()) < h * w):
            raise ValueError(f"flat_index must lie in [0, {h * w}) for grid_shape "
                             f"{self.grid_shape}")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: str | torch.device) -> Observations:
        tensors = {f: getattr(self, f).to(device)
                   for f in ("values", "error_std", "channel", "flat_index", "weights")}
        return dataclasses.replace(self, **tensors)

    def operator(self, x: torch.Tensor) -> torch.Tensor:
        """H(x): (..., C, H, W) -> (..., N). Linear and differentiable."""
        if tuple(x.shape[-3:]) != tuple(self.grid_shape):
            raise ValueError(
                f"H expects states (..., {', '.join(map(str, self.grid_shape))}), "
                f"got {tuple(x.shape)}")
        c, h, w = self.grid_shape
        flat = x.reshape(*x.shape[:-3], c * h * w)
        index = self.channel[:, None] * (h * w) + self.flat_index  # (N, K)
        picked = flat[..., index]  # (..., N, K)
        return (picked * self.weights.to(x.dtype)).sum(dim=-1)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """Hᵀ r: (..., N) -> (..., C, H, W), the exact adjoint of ``operator``."""
        c, h, w = self.grid_shape
        index = (self.channel[:, None] * (h * w) + self.flat_index).reshape(-1)
        contrib = (r[..., :, None] * self.weights.to(r.dtype)).reshape(*r.shape[:-1], -1)
        out = torch.zeros(*r.shape[:-1], c * h * w, dtype=r.dtype, device=r.device)
        out.index_add_(out.ndim - 1, index, contrib)
        return out.reshape(*r.shape[:-1], c, h, w)

    def channels_by_location(self) -> list[tuple[list[int], np.ndarray]]:
        """Observed channels grouped by identical locations (same points in the same order), so
        a kernel over the locations is computed once per group ("columns" sampling: one group).

        Returns:
            [(channels, index)]: index (n, len(channels)) holds, column by column, the positions
            in the observation arrays of each channel's n observations.
        """
        channel = self.channel.cpu().numpy()
        groups: dict[bytes, tuple[list[int], list[np.ndarray]]] = {}
        for k in np.unique(channel):
            idx = np.flatnonzero(channel == k)
            key = np.stack([np.asarray(self.lat)[idx], np.asarray(self.lon)[idx]]).tobytes()
            members = groups.setdefault(key, ([], []))
            members[0].append(int(k))
            members[1].append(idx)
        return [(ks, np.stack(idxs, axis=1)) for ks, idxs in groups.values()]

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid view (mask, values), each (C, H, W): mask 1 where a channel is observed.

        An off-grid observation is put on its largest-weight grid point (an approximation for
        methods that need a gridded view, e.g. inpainting); where several fall on one point,
        their mean is the value (deterministic, unlike an indexed assignment with repeats).
        """
        c, h, w = self.grid_shape
        nearest = self.flat_index.gather(1, self.weights.argmax(dim=1, keepdim=True))[:, 0]
        index = self.channel * (h * w) + nearest
        dtype = self.values.dtype
        count = torch.zeros(c * h * w, device=self.device, dtype=dtype)
        total = torch.zeros(c * h * w, device=self.device, dtype=dtype)
        count.index_add_(0, index, torch.ones_like(self.values))
        total.index_add_(0, index, self.values)
        mask = (count > 0).to(dtype)
        values = total / count.clamp_min(1)
        return mask.reshape(c, h, w), values.reshape(c, h, w)



# --------------------------------------------------------------------------------- windows
class DifferentiableModel(Protocol):
    """What a 4D method may do with the forecast model (bench/forecast/base.py implements it).

    ``step_differentiable(frames)``: one 6-hour step, (B, history, C, H, W) -> (B, C, H, W),
    normalised, with gradients flowing to ``frames`` (no ``torch.no_grad``).
    """

    history: int

    def step_differentiable(self, frames: torch.Tensor) -> torch.Tensor: ...


@dataclasses.dataclass(frozen=True, eq=False)
class ObservationWindow:
    """The observations a 4D method assimilates in one cycle (DESIGN.md §3–§4).

    The window starts at the background's valid time t (the analysis time, where x_a is valid,
    as the x₀ of strong-constraint 4DVar) and observations lie at offsets 0 ≤ o ≤ window
    hours after it, every ``ObservationSettings.window_every_hours`` (a run setting, recorded in
    config.json). The observations at t + o are exactly those a 3D method sees at the cycle
    valid at t + o (same seeded draw), so a 4D method uses observations up to the window's end,
    later than the analysis time: a smoother's advantage that the results record.

    Attributes:
        observations: ((offset_hours, Observations), …) in increasing offset order, offset 0
            first.
        model: the forecast model when it is differentiable (the emulator), else None (FengWu's
            ONNX graph): a method that needs it refuses a window without one.
    """

    observations: tuple[tuple[int, Observations], ...]
    model: Any = None

    def __post_init__(self):
        offsets = [o for o, _ in self.observations]
        if not offsets or offsets[0] != 0 or offsets != sorted(set(offsets)):
            raise ValueError(f"window offsets must be distinct, increasing and start at 0, "
                             f"got {offsets}")

    @property
    def offsets_hours(self) -> tuple[int, ...]:
        return tuple(o for o, _ in self.observations)

    def at(self, offset_hours: int) -> Observations:
        """The observations valid ``offset_hours`` after the analysis time."""
        for o, obs in self.observations:
            if o == offset_hours:
                return obs
        raise KeyError(f"no observations at +{offset_hours} h; the window has {self.offsets_hours}")

    def __len__(self) -> int:
        return sum(len(obs) for _, obs in self.observations)
