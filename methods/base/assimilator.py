"""The method lifecycle (DESIGN.md §3): ``fit`` → ``load`` → ``analyse``.

    state    = method.fit(ctx)                    learn from the training period; pure
    analyser = method.load(state, spec, device)   the trained object that analyses
    analysis = analyser.analyse(background, obs)  -> Analysis(x_a, members, diagnostics)

The method (an ``Assimilator``) is a frozen dataclass of hyper-parameters and never changes;
what it learnt is the plain dict ``fit`` returns, which the runner caches atomically (keyed by
``cache_config()`` and the world and model it was fitted on) and hands to ``load``. The
``Analyser`` holds the loaded state; a method with nothing to learn may be its own analyser.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from bench.state import StateSpec
from methods.base.costs import Kernel, MemoryEstimate

if TYPE_CHECKING:
    from methods.base.observations import Observations, ObservationWindow
    from methods.base.states import Analysis, Background

#: What ``fit`` may return: {name: tensor | numpy array | number | str | bool | None | a list,
#: tuple or dict of these}; the runner's cache stores it with torch.save (weights only).
FittedState = dict[str, Any]


@dataclasses.dataclass
class TrainingContext:
    """All a method may learn from: the training period, the forecast model and samples.

    Attributes:
        spec: the world's StateSpec (channels, grid, normalisation).
        model: the forecast model (a bench.forecast.ForecastModel).
        train_truth: () -> (T, C, H, W) normalised truth of the *training period only*.
        samples: (kind, **settings) -> (N, C, H, W) cached background-error samples from the
            training period ("nmc", "truth_minus_forecast", or "known_prior": ``count``
            draws U w from the known B of the known-answer check; see bench/samples.py).
        device: where training may run (the run's device).
        seed: seeds any randomness in training.
        progress: show progress bars.
        sample_targets: (kind, **settings) -> (N,) long: for each sample of ``samples(kind,
            **settings)``, the index into ``train_truth()`` of the frame it is the truth at (a
            truth − forecast sample d_i = x_{t_i} − x̂_i); None where the context has none.
    """

    spec: StateSpec
    model: Any
    train_truth: Callable[[], torch.Tensor]
    samples: Callable[..., torch.Tensor]
    device: torch.device
    seed: int = 0
    progress: bool = True
    sample_targets: Callable[..., torch.Tensor] | None = None


class Analyser(abc.ABC):
    """A fitted method on one device, ready to analyse (what ``Assimilator.load`` returns).

    ``analyse`` must be deterministic for a given (method seed, background.cycle): stochastic
    methods seed their generators from them.
    """

    @abc.abstractmethod
    def analyse(self, background: Background, obs: Observations | ObservationWindow
                ) -> Analysis:
        """The analysis of one cycle. ``obs`` is an ObservationWindow for methods with
        ``window_hours > 0``, else the Observations at the analysis time."""

    def dominant_kernel(self, background: Background, obs) -> Kernel:
        """The kernel that dominates an analysis, as a callable on the same data (for the
        timing table's achieved FLOP/s or bytes/s). Default: a copy of x_b (bytes)."""
        x_b = background.x_b
        return Kernel("copy of x_b", lambda: x_b.clone(), "B",
                      work=2.0 * x_b.numel() * x_b.element_size())


@dataclasses.dataclass(frozen=True)
class Assimilator(abc.ABC):
    """A method: a frozen dataclass of hyper-parameters plus its lifecycle (module docstring).

    A config round-trips: ``type(m)(**m.config())`` equals ``m``. ``seed`` is set by the
    harness per grid cell, so stochastic methods are reproducible.

    Class attributes a method may override:
        members: ensemble size N (0 = deterministic). An ensemble method makes it a field
            (``members: int = 20``); the harness then hands it ``Background.members`` and
            expects ``Analysis.members``.
        window_hours: length of the observation window (0 = 3D: one time). A 4D method gets an
            ObservationWindow instead of Observations.
        analysis_fields: fields that only the analysis reads (solver settings, λ, sampling
            steps): left out of the cache key, so changing them reuses what fit() learnt.
        keyed_when_set: fields added after fits were cached, left out of the cache key while
            they hold their default (which reproduces the earlier fit), so earlier entries
            stay valid; set to anything else they are part of it.
        tuning_grid: {field: candidate values}, the small grid ``python -m bench tune`` tries
            (every combination; the default setting is always tried too) on the validation
            period, per density. Fields of ``analysis_fields`` (or any field of a method that
            learns nothing), so tuning never refits; empty: nothing to tune.
    """

    seed: int = 0

    members: ClassVar[int] = 0
    window_hours: ClassVar[int] = 0
    analysis_fields: ClassVar[tuple[str, ...]] = ()
    keyed_when_set: ClassVar[tuple[str, ...]] = ()
    tuning_grid: ClassVar[dict[str, tuple]] = {}

    # ----------------------------------------------------------------------------- lifecycle
    def fit(self, ctx: TrainingContext) -> FittedState:
        """Learn from ``ctx`` (training period only) and return what was learnt; never mutates
        the method. Default: nothing to learn (an empty dict, not cached)."""
        return {}

    @abc.abstractmethod
    def load(self, state: FittedState, spec: StateSpec, device: torch.device | str
             ) -> Analyser:
        """The analyser for ``state`` (``fit``'s or ``untrained``'s output) on ``device``."""

    @property
    def learns(self) -> bool:
        """Whether ``fit`` is overridden (the runner caches its output only then)."""
        return type(self).fit is not Assimilator.fit

    def with_covariance(self, stats: dict, spec: StateSpec
                        ) -> tuple[Assimilator, FittedState] | None:
        """This method analysing with exactly B = U Uᵀ of ``stats`` (a statistics dict of
        methods/common/covariance, as ``covariance.estimate`` returns), solved exactly: the
        (method, state) to ``load``, or None when the method has no such B (default). The
        known-prior check (bench/experiments/known_prior.py) draws background errors from that
        B and loads its optimum, the best linear unbiased analysis, from this."""
        return None

    # ----------------------------------------------------------------------------- costs
    def untrained(self, spec: StateSpec, seed: int = 0) -> FittedState:
        """A state of the configured size with random internals, for timing at any grid (no
        world, no training). Default: ``{}`` for a method that learns nothing."""
        if self.learns:
            raise NotImplementedError(
                f"{type(self).__name__} learns in fit() but defines no untrained(spec, seed): "
                "timing and asv need its random internals of the configured size")
        return {}

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Rough bytes of loading the method and of one analysis at ``spec`` with ``n_obs``
        observations (to refuse runs that cannot fit; not a measurement). Default: no model,
        eight float64 states per analysis (member)."""
        c, h, w = spec.shape
        return MemoryEstimate(0.0, 8 * 8.0 * c * h * w * max(1, members))

    # ----------------------------------------------------------------------------- config
    def config(self) -> dict:
        return dataclasses.asdict(self)

    def cache_config(self) -> dict:
        """The fields that determine what fit() learns: config() less analysis_fields and
        less the keyed_when_set fields that hold their default."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for attribute in ("analysis_fields", "keyed_when_set"):
            unknown = set(getattr(self, attribute)) - set(fields)
            if unknown:
                raise TypeError(f"{type(self).__name__}.{attribute} names no field: "
                                f"{sorted(unknown)}")
        at_default = {k for k in self.keyed_when_set if getattr(self, k) == fields[k].default}
        return {k: v for k, v in self.config().items()
                if k not in self.analysis_fields and k not in at_default}

    def check_fields(self, checks) -> None:
        """Raise a ValueError naming the first bad hyper-parameter.

        Args:
            checks: iterable of (field name, whether it is valid, what was expected).
        """
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{type(self).__name__}.{name} = {getattr(self, name)!r} is "
                                 f"invalid: expected {expected}")
