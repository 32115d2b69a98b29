"""Which forecasts make the background-error samples, and making them a batch at a time.

The samples of ``SampleSettings`` (bench/samples.py) come from starts i in the training period:

    window   the frames [lo, hi) of the training period samples may read: ``period`` (a part of
             the training period; "" = all of it), then its last ``days`` days (0 = all). NMC
             practice uses a few months to a year of forecast pairs; the default, the last 365
             days, keeps a 0.25° ERA5 training period of 37 years to 363 daily samples, and is
             the whole training period of the built-in world (one year).
    starts   every ``start_stride``-th frame of the window from its ``history``-th, such that no
             sample reads past the window: i in [lo + history − 1, hi − span); then, with
             ``max_samples``, at most that many of them, evenly spread.

A batch of starts reads only the frames its forecasts start from and its truth frames (not the
period), forecasts them together and returns its samples: memory is O(batch_size), whatever
the period's length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bench.forecast.base import STEP_HOURS, ForecastModel
from bench.periods import parse_period

#: reads frames (indices into the training period; repeats allowed) as a normalised float32
#: (len, C, H, W) tensor
FrameReader = Callable[[np.ndarray], torch.Tensor]


def steps(settings) -> tuple[int, int, int]:
    """(steps of the first forecast, steps between the two starts, frames a sample reads after
    its start): nmc (long_hours/6, (long − short)/6, long_hours/6); truth − forecast
    (lead_hours/6, 0, lead_hours/6)."""
    if settings.kind == "nmc":
        long_steps = settings.long_hours // STEP_HOURS
        return long_steps, (settings.long_hours - settings.short_hours) // STEP_HOURS, long_steps
    lead = settings.lead_hours // STEP_HOURS
    return lead, 0, lead


def window(times: np.ndarray, settings) -> tuple[int, int]:
    """The frames [lo, hi) of the training period (valid times ``times`` (T,), 6-hourly) the
    samples may read (module docstring). ValueError for a ``period`` outside ``times``."""
    times = np.asarray(times).astype("datetime64[ns]")
    lo, hi = 0, times.size
    step = np.timedelta64(STEP_HOURS, "h")
    if settings.period:
        start, end = parse_period(settings.period)
        if start < times[0] or end > times[-1] + step:
            raise ValueError(
                f"sample period {settings.period} is not inside the training period "
                f"{str(times[0])[:16]}..{str(times[-1] + step)[:16]}: samples come from the "
                f"training period only")
        lo, hi = int(np.searchsorted(times, start)), int(np.searchsorted(times, end))
    if settings.days and hi > lo:
        cut = times[hi - 1] + step - np.timedelta64(int(settings.days), "D")
        lo = max(lo, int(np.searchsorted(times, cut)))
    return lo, hi


def sample_starts(times: np.ndarray, settings, history: int) -> np.ndarray:
    """Indices into the training period of the forecast starts (module docstring), (N,) int64.
    ValueError when the window is too short for one sample."""
    lo, hi = window(times, settings)
    span = steps(settings)[2]
    starts = np.arange(lo + history - 1, hi - span, settings.start_stride, dtype=np.int64)
    if starts.size == 0:
        raise ValueError(
            f"{settings.kind} samples need more than {span + history} frames, got {hi - lo}"
            + (" in the sample window" if (lo, hi) != (0, len(times)) else ""))
    if settings.max_samples and starts.size > settings.max_samples:
        starts = starts[np.linspace(0, starts.size - 1, settings.max_samples).round()
                        .astype(np.int64)]
    return starts


def sample_targets(times: np.ndarray, settings, history: int) -> np.ndarray:
    """Indices into the training period of the samples' valid times, (N,) int64: sample k of
    ``sample_starts`` (same order) is valid at start_k + ``steps(settings)[0]`` (truth −
    forecast: d_k = truth[t_k] − M_L(start_k); nmc: both forecasts are valid at t_k)."""
    return sample_starts(times, settings, history) + steps(settings)[0]


def batch_starts(starts: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``starts`` in consecutive batches of at most ``batch_size`` (the resumable units)."""
    return [starts[k:k + batch_size] for k in range(0, len(starts), batch_size)]


@torch.no_grad()
def _forecast(model: ForecastModel, frames: torch.Tensor, rows: list[list[int]], n: int):
    """``n``-step forecasts (S, C, H, W) on the CPU from the histories frames[rows[s]]: the
    last frame of ``model.rollout``, step by step (the same steps), keeping only the newest
    frames, where rollout keeps all ``n`` (8 × the batch's frames for a 48 h forecast)."""
    history = torch.stack([frames[r] for r in rows]).to(model.device)
    for _ in range(n):
        newest = model.step(history)
        history = torch.cat([history[:, 1:], newest[:, None]], dim=1)
    return newest.cpu()


def sample_batch(model: ForecastModel, read: FrameReader, starts: np.ndarray, settings
                 ) -> torch.Tensor:
    """The samples (S, C, H, W) float32 of the starts ``starts`` (nmc: forecast of
    ``long_hours`` from i minus forecast of ``short_hours`` from i + (long − short), valid at
    the same time; truth − forecast: x_{i+L} − M_L(x_{i−1}, x_i)). Reads only their frames."""
    long_steps, offset, _ = steps(settings)
    h = model.history
    starts = [int(i) for i in starts]
    second_starts = [i + offset for i in starts] if settings.kind == "nmc" else []
    targets = [i + long_steps for i in starts] if settings.kind != "nmc" else []
    wanted = sorted({j for i in starts + second_starts for j in range(i - h + 1, i + 1)}
                    | set(targets))
    frames = read(np.asarray(wanted, dtype=np.int64))
    at = {j: k for k, j in enumerate(wanted)}

    def rows(first: list[int]) -> list[list[int]]:
        return [[at[j] for j in range(i - h + 1, i + 1)] for i in first]

    first = _forecast(model, frames, rows(starts), long_steps)
    if settings.kind == "nmc":
        second = _forecast(model, frames, rows(second_starts), long_steps - offset)
        return first - second
    truth = frames[[at[j] for j in targets]]
    return truth - first  # truth − forecast


def make_samples(model: ForecastModel, truth: torch.Tensor, settings, progress: bool = True,
                 times: np.ndarray | None = None) -> torch.Tensor:
    """Background-error samples (N, C, H, W) from a training trajectory ``truth`` (T, C, H, W)
    held in memory (nmc and truth_minus_forecast): the batches ``load_or_make_samples`` makes,
    stacked. ``times``: the frames' valid times (default: 6-hourly from 2000-01-01; a
    ``period`` needs the real ones)."""
    from tqdm.auto import tqdm

    if settings.kind == "known_prior":
        raise ValueError("known_prior samples are draws from a B, not forecasts: use "
                         "load_or_make_samples")
    if times is None:
        if settings.period:
            raise ValueError("a sample period needs the frames' times")
        times = np.datetime64("2000-01-01", "ns") + np.arange(truth.shape[0]) * np.timedelta64(
            STEP_HOURS, "h")
    starts = sample_starts(times, settings, model.history)
    out = [sample_batch(model, lambda idx: truth[torch.from_numpy(idx)], chunk, settings)
           for chunk in tqdm(batch_starts(starts, settings.batch_size),
                             desc=f"{settings.kind} samples", disable=not progress)]
    return torch.cat(out)
