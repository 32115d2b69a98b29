"""What every assimilation method sees and provides (DESIGN.md §3).

Everything a method sees comes through ``prepare(ctx)`` (training period only) and the two
arguments of ``analyse(background, obs)``; everything the harness learns about a method comes
from the returned analysis, ``diagnostics()`` and the timer around ``analyse``. Methods never
compute skill.

All tensors are normalised with the world's StateSpec (x_norm = (x − mean_c) / std_c): states
are ``(C, H, W)`` float32, observations and their error std are in the same normalised units
of their channel.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.state import StateSpec


# --------------------------------------------------------------------------------- observations
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


# --------------------------------------------------------------------------------- background
@dataclasses.dataclass(frozen=True)
class Background:
    """The prior of one cycle.

    Attributes:
        x_b: (C, H, W) the background (the forecast valid at ``valid_time``), normalised.
        history: (history, C, H, W) the frames the forecast model will start from after this
            cycle, oldest first; the harness updates them with the analysis
            (``CycleSettings.history_update``: x_a − x_b added to every frame by default).
        valid_time: numpy datetime64 of the analysis.
        lead_hours: forecast lead of x_b (e.g. 48 for the time-lagged first cycle, then 6).
        cycle: index of the cycle in the run (0-based).
    """

    x_b: torch.Tensor
    history: torch.Tensor
    valid_time: np.datetime64
    lead_hours: int
    cycle: int


# --------------------------------------------------------------------------------- training
@dataclasses.dataclass
class TrainingContext:
    """All a method may learn from: the training period, the forecast model and samples.

    Attributes:
        spec: the world's StateSpec (channels, grid, normalisation).
        model: the forecast model (a bench.forecast.ForecastModel).
        train_truth: () -> (T, C, H, W) normalised truth of the *training period only*.
        samples: (kind, **settings) -> (N, C, H, W) cached background-error samples from the
            training period ("nmc" or "truth_minus_forecast"; see bench/samples.py).
        device: where analyse() will run.
        cache_dir: a folder private to this (method config, world, model) for trained weights.
        seed: seeds any randomness in training.
        progress: show progress bars.
    """

    spec: StateSpec
    model: Any
    train_truth: Callable[[], torch.Tensor]
    samples: Callable[..., torch.Tensor]
    device: torch.device
    cache_dir: Path
    seed: int = 0
    progress: bool = True


# --------------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class Assimilator(abc.ABC):
    """A method: a frozen dataclass of hyper-parameters plus ``prepare`` and ``analyse``.

    Subclasses must define ``analyse``; ``prepare`` defaults to nothing to learn. A config
    round-trips: ``type(m)(**m.config())`` equals ``m``. ``seed`` is set by the harness per
    grid cell, so stochastic methods are reproducible.
    """

    seed: int = 0

    #: whether prepare() trains something worth caching (the runner keys the cache by config).
    trains: ClassVar[bool] = False
    #: fields that only the analysis reads (solver settings, λ, sampling steps): left out of the
    #: cache key, so changing them reuses what prepare() learnt instead of training again.
    analysis_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "analyse" not in {name for klass in cls.__mro__[:-1] for name in vars(klass)
                             if klass is not Assimilator}:
            raise TypeError(f"{cls.__name__} must define analyse(background, obs)")

    def prepare(self, ctx: TrainingContext) -> None:  # noqa: B027 - a no-op default on purpose
        """Learn statistics or networks from ``ctx`` (training period only). Default: nothing."""

    @abc.abstractmethod
    def analyse(self, background: Background, obs: Observations) -> torch.Tensor:
        """The analysis x_a (C, H, W), normalised, same dtype and device as ``background.x_b``."""

    def diagnostics(self) -> dict[str, float]:
        """Numbers about the last analysis (iterations, cost values); recorded by the harness."""
        return {}

    def config(self) -> dict:
        return dataclasses.asdict(self)

    def cache_config(self) -> dict:
        """The fields that determine what prepare() learns: config() less analysis_fields."""
        unknown = set(self.analysis_fields) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"{type(self).__name__}.analysis_fields names no field: "
                            f"{sorted(unknown)}")
        return {k: v for k, v in self.config().items() if k not in self.analysis_fields}

    def check_fields(self, checks) -> None:
        """Raise a ValueError naming the first bad hyper-parameter.

        Args:
            checks: iterable of (field name, whether it is valid, what was expected).
        """
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{type(self).__name__}.{name} = {getattr(self, name)!r} is "
                                 f"invalid: expected {expected}")


@dataclasses.dataclass(frozen=True)
class NoAssimilation(Assimilator):
    """The analysis is the background: the skill every method must beat."""

    def analyse(self, background: Background, obs: Observations) -> torch.Tensor:
        return background.x_b.clone()
