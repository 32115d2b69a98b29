"""Background-error samples from the training period: the material methods learn B from.

Four kinds, all in normalised units, shape (N, C, H, W); one sample per start for the first two:

    nmc                   ε_i = M_{48h}(x_{i−1}, x_i) − M_{24h}(x_{j−1}, x_j),  j = i + 24 h
                          (Parrish & Derber 1992: two forecasts valid at the same time i + 48 h;
                          the lead pair is configurable)
    truth_minus_forecast  ε_i = x_{i+L} − M_L(x_{i−1}, x_i)     (L = ``lead_hours``)
    known_prior           ε_i = U w_i, w_i ~ N(0, I), i < ``count``: draws from a *known* B = U Uᵀ,
                          U estimated (covariance.estimate, variance scale 1) from this world's
                          nmc samples of the same lead pair and stride (``known_prior_statistics``);
                          methods/common/covariance/known_prior.py. Zero-mean Gaussian, so it is
                          the distribution of x_b − x_true and of x_true − x_b alike.
    cycled_background     d_j = x_true(t_j) − x_b(t_j): the 6 h backgrounds of a method
                          (``method``, its defaults) cycled through the training period at
                          observation density ``density`` (bench/cycled_samples.py); every
                          cycle's is cached once, a ``start_stride`` is a view of them.

Starts are taken every ``start_stride`` frames (4 = one a day) of the sample window — the last
``days`` days (365 by default) of ``period`` (the training period by default) — at most
``max_samples`` of them, so that no sample reads past the window (bench/samples_forecast.py).
Samples are cached in ``$ASSIMBENCH_CACHE/samples/<world>-<hash>/`` keyed by the settings, the
world and the forecast model's cache key; they are only ever computed from the training period.

Memory is bounded by the batch, not the period: each batch of ``batch_size`` starts reads only
its own frames, and its samples are written to disk at once (bench/resumable.py), so a build
killed at any point resumes with the batches it had not finished. The cached array is served
memory-mapped (copy-on-write): reading a batch of it reads that batch from disk.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import cache, resumable
from bench.forecast.base import STEP_HOURS, ForecastModel
from bench.periods import parse_period
from bench.samples_forecast import batch_starts, make_samples, sample_batch, sample_starts, window
from bench.worlds.streaming import release_memory
from methods.base import Analyser

__all__ = ["KINDS", "SampleSettings", "known_prior_statistics", "load_or_make_samples",
           "make_samples", "samples_entry"]

KINDS = ("nmc", "truth_minus_forecast", "known_prior", "cycled_background")
#: the fields only cycled_background reads (and keys)
CYCLED_FIELDS = ("method", "density", "segment_days")
SAMPLES_FILE = "samples.npy"
STATISTICS_FILE = "statistics.pt"


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Which samples to make.

    Attributes:
        kind: "nmc", "truth_minus_forecast" or "known_prior".
        long_hours, short_hours: the NMC lead pair (48 h − 24 h by default); known_prior: of
            the NMC samples its U is estimated from.
        lead_hours: the forecast lead of truth − forecast samples.
        start_stride: frames between starts (4 = daily); known_prior: of its NMC samples.
        batch_size: starts forecast together (known_prior: draws made together): the unit of
            memory (each batch reads only its frames) and of resumption after a kill.
        count: known_prior only: the number of draws N (the training stream's first N, so
            draws nest across N); ignored (and left out of the cache key) for other kinds.
        period: ``START..END`` inside the training period the samples come from; "" (the
            default): the training period.
        days: only the last ``days`` days of ``period`` (365: a year of pairs, as NMC practice
            uses; the built-in world's whole training year); 0: all of it.
        max_samples: at most this many starts, evenly spread over the window; 0: no cap.
            (Not for cycled_background, whose samples are one cycle's each.)
        method, density, segment_days: cycled_background only: the registered method that
            cycles, the density of its observations (a fraction of grid columns in (0, 1]) and
            the length of each cycled segment (15: a run's default length; ≥ 3 so that a
            segment outlasts its 2-day spin-up; bench/cycled_samples.py says why segments).
    """

    kind: str = "nmc"
    long_hours: int = 48
    short_hours: int = 24
    lead_hours: int = 24
    start_stride: int = 4
    batch_size: int = 32
    count: int = 363
    period: str = ""
    days: int = 365
    max_samples: int = 0
    method: str = ""
    density: float = 0.0
    segment_days: int = 15

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; valid kinds are {KINDS}")
        for name, low in (("count", 1), ("start_stride", 1), ("batch_size", 1), ("days", 0),
                          ("max_samples", 0)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        for name in ("long_hours", "short_hours", "lead_hours"):
            value = getattr(self, name)
            if value <= 0 or value % STEP_HOURS:
                raise ValueError(f"{name}={value} must be a positive multiple of {STEP_HOURS} h")
        if self.long_hours <= self.short_hours:
            raise ValueError(
                f"NMC needs long_hours > short_hours, got {self.long_hours} and {self.short_hours}")
        if self.kind == "cycled_background":
            if not (isinstance(self.method, str) and self.method):
                raise ValueError("cycled_background samples need method=<a registered method "
                                 "that cycles>")
            if not (isinstance(self.density, (int, float)) and 0 < self.density <= 1):
                raise ValueError(f"density={self.density!r} must be a fraction of grid columns "
                                 "in (0, 1] for cycled_background samples")
            if not (isinstance(self.segment_days, int) and self.segment_days >= 3):
                raise ValueError(f"segment_days={self.segment_days!r} must be an integer >= 3 "
                                 "(a segment outlasts its 2-day spin-up)")
            if self.max_samples:
                raise ValueError("max_samples does not apply to cycled_background samples "
                                 "(thin them with start_stride)")
        if self.period:
            try:
                parse_period(self.period)
            except ValueError as err:
                raise ValueError(f"period={self.period!r}: {err} (START..END, ISO dates)"
                                 ) from None


def _train_times(world) -> np.ndarray:
    """Valid times (T,) of the world's training period (metadata only)."""
    return world.period("train")["time"].values


def _key_settings(settings: SampleSettings, world=None) -> dict:
    """The settings in the cache key. Keys made before a field existed stay valid: ``count`` is
    keyed only for known_prior; ``period`` and ``days`` enter only as the window they select,
    and only when it is not the whole training period (``world`` given); ``max_samples`` only
    when set (it might then thin the starts); ``method``, ``density`` and ``segment_days``
    only for cycled_background, which has no lead pair or lead."""
    out = dataclasses.asdict(settings)
    if settings.kind != "known_prior":
        out.pop("count")
    if settings.kind == "cycled_background":  # 6 h backgrounds: no lead pair, no lead
        for name in ("long_hours", "short_hours", "lead_hours"):
            out.pop(name)
    else:
        for name in CYCLED_FIELDS:
            out.pop(name)
    for name in ("period", "days", "max_samples"):
        out.pop(name)
    if settings.max_samples:
        out["max_samples"] = settings.max_samples
    if world is not None:
        times = _train_times(world)
        lo, hi = window(times, settings)
        if (lo, hi) != (0, times.size):
            out["window"] = [str(times[lo])[:16], str(times[hi - 1])[:16]] if hi > lo else []
    return out


def samples_entry(world, model_key: str, settings: SampleSettings,
                  cycling_key: dict | None = None) -> Path:
    """The cache entry of ``settings``' samples on ``world`` with the model ``model_key``
    (reads the training period's times to resolve the sample window); cycled_background: also
    keyed by ``cycling_key``, the cycling method's class and cache config."""
    key = {"settings": _key_settings(settings, world), "world": cache.config_hash(world.card),
           "model": model_key}
    if settings.kind == "cycled_background":
        key["cycling"] = cycling_key
    return cache.entry_dir("samples", world.name, key)


def nmc_settings(settings: SampleSettings) -> SampleSettings:
    """The NMC samples a known_prior U is estimated from (same lead pair, stride, batch,
    window)."""
    return dataclasses.replace(settings, kind="nmc", count=SampleSettings.count)


def known_prior_statistics(world, model: ForecastModel, model_key: str,
                           settings: SampleSettings = SampleSettings(kind="known_prior"),
                           progress: bool = True) -> dict:
    """The statistics of the known B = U Uᵀ (``covariance.estimate``'s dict, variance scale 1,
    its default EOF fraction, ridge and balance), estimated from the world's NMC samples of
    ``settings``' lead pair and stride; cached beside the samples."""
    from methods.common import covariance

    nmc = nmc_settings(settings)
    entry = cache.entry_dir("samples", f"{world.name}-known-prior-b", {
        "nmc": _key_settings(nmc, world), "world": cache.config_hash(world.card),
        "model": model_key})

    def build(directory: Path) -> dict:
        eps = load_or_make_samples(world, model, model_key, nmc, progress)
        cache.save_state(covariance.estimate(world.spec, eps, 1.0), directory / STATISTICS_FILE)
        return {"nmc": dataclasses.asdict(nmc), "world": world.name, "model": model_key}

    return cache.load_or_build(entry, build,
                               lambda e, _: cache.load_state(e / STATISTICS_FILE))


def _forecast_batches(world, model: ForecastModel, settings: SampleSettings, folder: Path,
                      progress: bool) -> int:
    """Write the nmc / truth − forecast samples of ``settings`` into ``folder``'s row file,
    skipping the batches it already holds; returns the number of samples."""
    train = world.period("train")
    times = train["time"].values
    starts = sample_starts(times, settings, model.history)
    batches = batch_starts(starts, settings.batch_size)
    identity = {"settings": _key_settings(settings), "starts": [int(starts[0]), int(starts[-1]),
                                                                int(starts.size)]}
    rows = resumable.RowFile(folder, SAMPLES_FILE, (starts.size, *world.spec.shape),
                             np.float32, identity)
    spec = world.spec

    def read(idx: np.ndarray) -> torch.Tensor:  # only this batch's frames
        return spec.to_tensor(train.isel(time=idx))

    todo = [b for b in range(len(batches)) if b not in rows.done]
    for b in tqdm(todo, desc=f"{settings.kind} samples", disable=not progress,
                  initial=len(batches) - len(todo), total=len(batches)):
        eps = sample_batch(model, read, batches[b], settings)
        rows.write(b, b * settings.batch_size, eps.numpy())
        del eps
        release_memory()  # or the heap creeps up batch after batch (streaming.release_memory)
    return int(starts.size)


def _draw_batches(world, model: ForecastModel, model_key: str, settings: SampleSettings,
                  folder: Path, progress: bool) -> int:
    """Write the known_prior draws ε_i = U w_i, i < count, into ``folder``'s row file, batch by
    batch (draw i depends on i alone, so a resumed build draws exactly the missing ones)."""
    from methods.common.covariance import BMatrix, known_prior

    b = BMatrix(world.spec, known_prior_statistics(world, model, model_key, settings, progress))
    rows = resumable.RowFile(folder, SAMPLES_FILE, (settings.count, *world.spec.shape),
                             np.float32, {"settings": _key_settings(settings)})
    size = settings.batch_size
    for k in range(0, settings.count, size):
        if k // size in rows.done:
            continue
        n = min(size, settings.count - k)
        block = next(known_prior.draw_batches(b, n, known_prior.TRAIN, 0, size, first=k))
        rows.write(k // size, k, block.cpu().numpy())
    return settings.count


def _cycled_rows(world, model: ForecastModel, settings: SampleSettings, cycling, folder: Path,
                 progress: bool) -> int:
    """Write the cycled_background samples into ``folder`` (bench/cycled_samples.py)."""
    from bench.cycled_samples import cycle_errors
    from bench.training_truth import mapped_period

    identity = json.loads(json.dumps({"settings": _key_settings(settings, world),
                                      "cycling": cycling[1]}, default=str))
    return cycle_errors(mapped_period(world, "train"), _train_times(world), world.spec, model,
                        cycling[0](), settings, folder, identity, progress)


def load_or_make_samples(
    world, model: ForecastModel, model_key: str, settings: SampleSettings, progress: bool = True,
    cycling: tuple[Callable[[], Analyser], dict] | None = None,
) -> torch.Tensor:
    """Cached samples (N, C, H, W) float32 for (world, model, settings), computed from the
    training period if absent, batch by batch and resumably (module docstring). The tensor is
    backed by a copy-on-write memory map of the cached file.

    ``model_key`` identifies the forecast model's weights (e.g. its cache entry name).
    ``cycling`` (cycled_background only): a function giving the loaded cycling method (called
    only when the samples are built) and its key (class and cache config).
    """
    if settings.kind == "cycled_background" and cycling is None:
        raise ValueError("cycled_background samples need the cycling method (cycling=)")
    if settings.kind == "cycled_background" and settings.start_stride > 1:
        # every stride's samples are one cycle's: cache every cycle once, serve a view
        every = dataclasses.replace(settings, start_stride=1)
        return load_or_make_samples(world, model, model_key, every, progress,
                                    cycling)[::settings.start_stride]
    cycling_key = None if cycling is None else cycling[1]
    entry = samples_entry(world, model_key, settings, cycling_key)

    def build(directory: Path) -> dict:
        with resumable.locked(entry) as folder:
            if cache.read_marker(entry) is not None:  # another process finished it meanwhile:
                return {}  # build_entry keeps that entry and discards this directory
            if settings.kind == "known_prior":
                count = _draw_batches(world, model, model_key, settings, folder, progress)
            elif settings.kind == "cycled_background":
                count = _cycled_rows(world, model, settings, cycling, folder, progress)
            else:
                count = _forecast_batches(world, model, settings, folder, progress)
            resumable.link_into(folder / SAMPLES_FILE, directory)
        return {"settings": dataclasses.asdict(settings), "world": world.name,
                "model": model_key, "count": count}

    samples = cache.load_or_build(
        entry, build,
        lambda e, _: torch.from_numpy(np.load(e / SAMPLES_FILE, mmap_mode="c")))
    resumable.discard(entry)
    return samples
