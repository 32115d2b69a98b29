"""Background-error samples from the training period: the material methods learn B from.

Three kinds, all in normalised units, shape (N, C, H, W); one sample per start for the first two:

    nmc                   ε_i = M_{48h}(x_{i−1}, x_i) − M_{24h}(x_{j−1}, x_j),  j = i + 24 h
                          (Parrish & Derber 1992: two forecasts valid at the same time i + 48 h;
                          the lead pair is configurable)
    truth_minus_forecast  ε_i = x_{i+L} − M_L(x_{i−1}, x_i)     (L = ``lead_hours``)
    known_prior           ε_i = U w_i, w_i ~ N(0, I), i < ``count``: draws from a *known* B = U Uᵀ,
                          U estimated (covariance.estimate, variance scale 1) from this world's
                          nmc samples of the same lead pair and stride (``known_prior_statistics``);
                          methods/common/covariance/known_prior.py. Zero-mean Gaussian, so it is
                          the distribution of x_b − x_true and of x_true − x_b alike.

Starts are taken every ``start_stride`` frames of the training period (4 = one a day), so that no
sample reads past the end of that period. Samples are cached in
``$ASSIMBENCH_CACHE/samples/<world>-<hash>/`` keyed by the settings, the world and the forecast
model's cache key; they are only ever computed from the training period.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import cache
from bench.forecast.base import STEP_HOURS, ForecastModel

KINDS = ("nmc", "truth_minus_forecast", "known_prior")
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
        batch_size: starts forecast together (known_prior: draws made together).
        count: known_prior only: the number of draws N (the training stream's first N, so
            draws nest across N); ignored (and left out of the cache key) for other kinds.
    """

    kind: str = "nmc"
    long_hours: int = 48
    short_hours: int = 24
    lead_hours: int = 24
    start_stride: int = 4
    batch_size: int = 32
    count: int = 363

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; valid kinds are {KINDS}")
        if not (isinstance(self.count, int) and self.count >= 1):
            raise ValueError(f"count={self.count!r} must be an integer >= 1")
        for name in ("long_hours", "short_hours", "lead_hours"):
            value = getattr(self, name)
            if value <= 0 or value % STEP_HOURS:
                raise ValueError(f"{name}={value} must be a positive multiple of {STEP_HOURS} h")
        if self.long_hours <= self.short_hours:
            raise ValueError(
                f"NMC needs long_hours > short_hours, got {self.long_hours} and {self.short_hours}")


def _forecast(model: ForecastModel, truth: torch.Tensor, starts: list[int], steps: int):
    """``steps``-step forecasts from each start i (frames i−history+1 .. i): (S, C, H, W)."""
    frames = torch.stack([truth[i - model.history + 1: i + 1] for i in starts]).to(model.device)
    return model.rollout(frames, steps)[:, -1].cpu()


def make_samples(
    model: ForecastModel, truth: torch.Tensor, settings: SampleSettings, progress: bool = True
) -> torch.Tensor:
    """Background-error samples (N, C, H, W) from a training trajectory ``truth`` (T, C, H, W)
    (nmc and truth_minus_forecast; known_prior samples come from ``load_or_make_samples``)."""
    if settings.kind == "known_prior":
        raise ValueError("known_prior samples are draws from a B, not forecasts: use "
                         "load_or_make_samples")
    if settings.kind == "nmc":
        long_steps = settings.long_hours // STEP_HOURS
        offset = (settings.long_hours - settings.short_hours) // STEP_HOURS
        span = long_steps
    else:
        long_steps = settings.lead_hours // STEP_HOURS
        offset, span = 0, long_steps
    starts = list(range(model.history - 1, truth.shape[0] - span, settings.start_stride))
    if not starts:
        raise ValueError(
            f"{settings.kind} samples need more than {span + model.history} frames, "
            f"got {truth.shape[0]}")
    out = []
    batches = range(0, len(starts), settings.batch_size)
    for k in tqdm(batches, desc=f"{settings.kind} samples", disable=not progress):
        chunk = starts[k: k + settings.batch_size]
        first = _forecast(model, truth, chunk, long_steps)
        if settings.kind == "nmc":
            second = _forecast(model, truth, [i + offset for i in chunk], long_steps - offset)
        else:
            second = torch.stack([truth[i + long_steps] for i in chunk])
            first, second = second, first  # truth − forecast
        out.append(first - second)
    return torch.cat(out)


def _key_settings(settings: SampleSettings) -> dict:
    """The settings in the cache key: ``count`` only for known_prior (earlier keys unchanged)."""
    out = dataclasses.asdict(settings)
    if settings.kind != "known_prior":
        out.pop("count")
    return out


def samples_entry(world, model_key: str, settings: SampleSettings):
    key = {"settings": _key_settings(settings), "world": cache.config_hash(world.card),
           "model": model_key}
    return cache.entry_dir("samples", world.name, key)


def nmc_settings(settings: SampleSettings) -> SampleSettings:
    """The NMC samples a known_prior U is estimated from (same lead pair, stride, batch)."""
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
        "nmc": _key_settings(nmc), "world": cache.config_hash(world.card), "model": model_key})

    def build(directory: Path) -> dict:
        eps = load_or_make_samples(world, model, model_key, nmc, progress)
        cache.save_state(covariance.estimate(world.spec, eps, 1.0), directory / STATISTICS_FILE)
        return {"nmc": dataclasses.asdict(nmc), "world": world.name, "model": model_key}

    return cache.load_or_build(entry, build,
                               lambda e, _: cache.load_state(e / STATISTICS_FILE))


def load_or_make_samples(
    world, model: ForecastModel, model_key: str, settings: SampleSettings, progress: bool = True
) -> torch.Tensor:
    """Cached samples for (world, model, settings), computed from the training period if absent.

    ``model_key`` identifies the forecast model's weights (e.g. its cache entry name).
    """
    entry = samples_entry(world, model_key, settings)

    def build(directory: Path) -> dict:
        if settings.kind == "known_prior":  # ε_i = U w_i, written batch by batch
            from methods.common.covariance import BMatrix, known_prior

            b = BMatrix(world.spec, known_prior_statistics(world, model, model_key, settings,
                                                           progress))
            out = np.lib.format.open_memmap(directory / SAMPLES_FILE, mode="w+",
                                            dtype=np.float32,
                                            shape=(settings.count, *world.spec.shape))
            known_prior.draw(b, settings.count, known_prior.TRAIN, 0, settings.batch_size, out)
            out.flush()
            del out
            return {"settings": _key_settings(settings), "world": world.name,
                    "model": model_key, "count": settings.count}
        truth = world.spec.to_tensor(world.period("train").load())
        samples = make_samples(model, truth, settings, progress=progress)
        np.save(directory / SAMPLES_FILE, samples.numpy())
        return {"settings": dataclasses.asdict(settings), "world": world.name,
                "model": model_key, "count": samples.shape[0]}

    return cache.load_or_build(
        entry, build, lambda e, _: torch.from_numpy(np.load(e / SAMPLES_FILE)))
