"""The one cycling loop (DESIGN.md §1, §4).

For cycles k = 0 … K−1 at valid times t_k = t_0 + 6 h · k:

    y_k   = observe(x_true(t_k))                        same for every method (seeded)
    x_a,k = method.analyse(Background(x_b,k, …), y_k)    timed
    x_b,k+1 = M(x_b,k−1 + δ_k, x_b,k + δ_k)             the model's two-frame history,
                                                         δ_k = x_a,k − x_b,k (history_update)

The first background is a ``first_lead_hours`` forecast from truth (a time-lagged start) and
is computed once per run, so every method starts from the same state. Each cycle records the
latitude-weighted RMSE, bias and ACC of x_b and x_a against the truth per channel in physical
units, the analysis time and peak memory, the numbers of observations, and the method's
diagnostics. A cell stops cleanly ("diverged") when a state is NaN/Inf or the analysis error
exceeds ``divergence_factor`` × the climatology's error; nothing non-finite is carried on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from bench import metrics
from bench.config import HISTORY_UPDATES, CycleSettings, ObservationSettings
from bench.forecast.base import STEP_HOURS, ForecastModel
from bench.observations import observe, observed_points
from bench.state import StateSpec
from bench.timing import measure
from methods.base import Assimilator, Background

PHASES = ("background", "analysis")
#: windows smaller than this many values are loaded into memory at once (the built-in world);
#: larger ones (ERA5 at 0.25°) are read frame by frame.
PRELOAD_LIMIT = 300_000_000


class TruthWindow:
    """Normalised truth frames of a lazily opened world period, by index.

    Attributes:
        times: (T,) datetime64 valid times.
    """

    def __init__(self, ds: xr.Dataset, spec: StateSpec, device: torch.device):
        self.spec, self.device = spec, torch.device(device)
        self.times = ds["time"].values
        self._ds = ds
        size = len(self.times) * math.prod(spec.shape)
        self._all = spec.to_tensor(ds).to(self.device) if size <= PRELOAD_LIMIT else None

    def __len__(self) -> int:
        return len(self.times)

    def frame(self, i: int) -> torch.Tensor:
        """(C, H, W) normalised float32 on the window's device."""
        if self._all is not None:
            return self._all[i]
        return self.spec.to_tensor(self._ds.isel(time=i)).to(self.device)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        return torch.stack([self.frame(i) for i in range(start, stop)])


@dataclasses.dataclass
class FirstBackground:
    """The time-lagged start shared by all methods: the model's frame history ending in x_b."""

    history: torch.Tensor  # (history, C, H, W), the last frame is x_b at cycle 0
    start_index: int  # index of cycle 0's valid time in the truth window
    lead_hours: int


def first_background(
    model: ForecastModel, truth: TruthWindow, settings: CycleSettings
) -> FirstBackground:
    """Forecast ``first_lead_hours`` from truth to the first analysis time."""
    lead = settings.first_lead_hours // STEP_HOURS
    if settings.start is None:
        start = model.history - 1 + lead
    else:
        matches = np.nonzero(truth.times == np.datetime64(settings.start, "ns"))[0]
        if not len(matches):
            raise ValueError(
                f"--start {settings.start} is not a valid time of the test period "
                f"({truth.times[0]} .. {truth.times[-1]}, 6-hourly)")
        start = int(matches[0])
    origin = start - lead
    if origin - model.history + 1 < 0:
        raise ValueError(
            f"the first background needs truth {settings.first_lead_hours} h + "
            f"{(model.history - 1) * STEP_HOURS} h before {truth.times[start]}; start later")
    if start + settings.cycles > len(truth):
        raise ValueError(
            f"{settings.cycles} cycles from {truth.times[start]} run past the end of the test "
            f"period ({truth.times[-1]}); use fewer --days")
    inputs = truth.frames(origin - model.history + 1, origin + 1)
    forecast = model.rollout(inputs[None], lead)[0]
    sequence = torch.cat([inputs, forecast])
    return FirstBackground(sequence[-model.history:].clone(), start, settings.first_lead_hours)


@dataclasses.dataclass
class CellResult:
    """Per-cycle records of one (method, density, seed) cell. Shapes: K cycles, C channels."""

    rmse: np.ndarray  # (K, 2, C) physical units, phases background/analysis
    bias: np.ndarray  # (K, 2, C)
    acc: np.ndarray  # (K, 2, C)
    seconds: np.ndarray  # (K,)
    peak_bytes: np.ndarray  # (K,)
    n_obs: np.ndarray  # (K,)
    n_points: np.ndarray  # (K,)
    dropped_obs: np.ndarray  # (K,)
    diagnostics: list[dict]
    status: str = "ok"
    diverged_cycle: int = -1
    reason: str = ""
    forecast_rmse: np.ndarray | None = None  # (starts, leads, C) or None
    forecast_starts: np.ndarray | None = None  # (starts,) cycle indices

    @classmethod
    def empty(cls, cycles: int, channels: int) -> CellResult:
        nan3 = np.full((cycles, 2, channels), np.nan)
        nan1 = np.full(cycles, np.nan)
        return cls(nan3, nan3.copy(), nan3.copy(), nan1, nan1.copy(), nan1.copy(), nan1.copy(),
                   nan1.copy(), [])


def _scores(x: torch.Tensor, truth: torch.Tensor, clim: torch.Tensor, spec: StateSpec, w):
    """Physical RMSE and bias and ACC per channel of one normalised state: 3 × (C,)."""
    std = torch.tensor(spec.std)
    x64, t64, c64 = x[None].double().cpu(), truth[None].double().cpu(), clim.double().cpu()
    return (
        (metrics.rmse(x64, t64, w) * std).numpy(),
        (metrics.bias(x64, t64, w) * std).numpy(),
        metrics.acc(x64, t64, c64, w).numpy(),
    )


def run_cycles(
    method: Assimilator,
    model: ForecastModel,
    truth: TruthWindow,
    start: FirstBackground,
    obs_settings: ObservationSettings,
    settings: CycleSettings,
    climatology: torch.Tensor,
    progress: bool = True,
    label: str = "",
) -> CellResult:
    """Cycle ``method`` through ``settings.cycles`` analyses from the shared first background."""
    spec = truth.spec
    c = len(spec.channels)
    w = spec.latitude_weights()
    clim = climatology.to(truth.device)
    result = CellResult.empty(settings.cycles, c)
    leads = settings.forecast_hours // STEP_HOURS
    if settings.forecast_every:
        starts = np.arange(0, settings.cycles, settings.forecast_every)
        result.forecast_starts = starts
        result.forecast_rmse = np.full((len(starts), leads, c), np.nan)
    history = start.history.clone()
    lead_hours = start.lead_hours
    bar = tqdm(range(settings.cycles), desc=label or "cycles", unit="cycle", disable=not progress)
    for k in bar:
        t = start.start_index + k
        x_true = truth.frame(t)
        x_b = history[-1]
        if not torch.isfinite(x_b).all():
            _stop(result, k, "the background (forecast from the previous analysis) has NaN/Inf")
            break
        obs = observe(x_true, spec, obs_settings, cycle=k)
        background = Background(x_b.clone(), history.clone(), truth.times[t], lead_hours, k)
        x_a, cost = measure(lambda b=background, o=obs: method.analyse(b, o), truth.device)
        result.seconds[k], result.peak_bytes[k] = cost.seconds, cost.peak_bytes
        result.n_obs[k], result.n_points[k] = len(obs), observed_points(obs)
        result.dropped_obs[k] = obs.dropped
        result.diagnostics.append(dict(method.diagnostics()))
        for phase, x in enumerate((x_b, x_a)):
            if phase == 1 and (x.shape != x_b.shape or not torch.isfinite(x).all()):
                break
            r, b, a = _scores(x, x_true, clim, spec, w)
            result.rmse[k, phase], result.bias[k, phase], result.acc[k, phase] = r, b, a
        if x_a.shape != x_b.shape:
            _stop(result, k, f"analyse returned shape {tuple(x_a.shape)}, expected "
                             f"{tuple(x_b.shape)}")
            break
        if not torch.isfinite(x_a).all():
            _stop(result, k, "the analysis has NaN/Inf")
            break
        error = (result.rmse[k, 1] / spec.std).mean()
        clim_error = (_scores(clim, x_true, clim, spec, w)[0] / spec.std).mean()
        if error > settings.divergence_factor * clim_error:
            _stop(result, k, f"analysis RMSE {error:.3g} (normalised, channel mean) exceeds "
                             f"{settings.divergence_factor} x climatology's {clim_error:.3g}")
            break
        history = updated_history(history, x_b, x_a, settings.history_update)
        if result.forecast_starts is not None and k in result.forecast_starts:
            _free_forecast(result, k, model, history, truth, t, clim, spec, w)
        if k + 1 < settings.cycles:
            history = torch.cat([history[1:], model.step(history[None])[0][None]])
            lead_hours = STEP_HOURS
    return result


def updated_history(history: torch.Tensor, x_b: torch.Tensor, x_a: torch.Tensor,
                    policy: str) -> torch.Tensor:
    """The model's input frames after an analysis (CycleSettings.history_update).

    history: (history, C, H, W) ending in x_b; returns the same shape ending in x_a.
    "increment": every frame + (x_a − x_b), keeping the background's tendency between frames;
    "replace": the last frame becomes x_a, the earlier ones stay.
    """
    x_a = x_a.to(history.dtype)
    if policy == "increment":
        return history + (x_a - x_b.to(history.dtype))[None]
    if policy == "replace":
        return torch.cat([history[:-1], x_a[None]])
    raise ValueError(f"history_update {policy!r} must be one of {', '.join(HISTORY_UPDATES)}")


def _stop(result: CellResult, k: int, reason: str) -> None:
    result.status, result.diverged_cycle, result.reason = "diverged", k, reason


def _free_forecast(result, k, model, history, truth, t, clim, spec, w) -> None:
    """Score a forecast from the analysis history at every 6-h lead inside the window."""
    row = int(np.nonzero(result.forecast_starts == k)[0][0])
    leads = result.forecast_rmse.shape[1]
    available = min(leads, len(truth) - 1 - t)
    if available < 1:
        return
    forecast = model.rollout(history[None], available)[0]
    for s in range(available):
        result.forecast_rmse[row, s] = _scores(forecast[s], truth.frame(t + s + 1), clim, spec,
                                               w)[0]
