"""The one cycling loop, as composed steps (DESIGN.md §1, §4).

For cycles k = 0 … K−1 at valid times t_k = t_0 + 6 h · k:

    observe    y_k = H(x_true(t_k)) + ε_k               same for every method (seeded by k);
               a 4D method's window: y_{k+j} at t_k + j·every, j = 0 … window/every
    analyse    Analysis = analyser.analyse(Background(x_b,k, …), y_k)     timed
    score      RMSE, bias, ACC (and ensemble spread) of x_b,k and x_a,k vs x_true(t_k)
    propagate  frames ← frames + δ_k on every frame (history_update), then one 6-h step:
               x_b,k+1 = M(x_b,k−1 + δ_k, x_b,k + δ_k),   δ_k = x_a,k − x_b,k

The cycle's state is the model's input frames of every member, (N, history, C, H, W): N = 1
for a deterministic method, whose background is that member; an ensemble method's members are
each updated with their own increment and forecast in batches of at most the model's
``max_batch`` (timed as ``forecast_seconds``), its background is the members' mean and its
scores are those of the mean plus the spread. The first background is a ``first_lead_hours``
forecast from truth (a time-lagged start) shared by every method; an ensemble adds the run's
initial perturbations to it (bench/setup.py). A cell stops cleanly ("diverged") when a state
is NaN/Inf or the analysis error exceeds ``divergence_factor`` × the climatology's error;
nothing non-finite is carried on.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from bench import scorer
from bench.config import (
    HISTORY_UPDATES,
    STEP_HOURS,
    CycleSettings,
    ObservationSettings,
)
from bench.forecast.base import ForecastModel
from bench.observations import observe, observed_points
from bench.scorer import CellScores
from bench.state import StateSpec
from bench.timing import Measurement, measure
from bench.validation import ConfigError
from methods.base import Analyser, Analysis, Background, Observations, ObservationWindow

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
    """The time-lagged start shared by all methods: the model's frame history ending in x_b.

    ``members`` (N, history, C, H, W): the initial ensemble (bench/setup.initial_ensemble) for
    an ensemble method's cells, None otherwise.
    """

    history: torch.Tensor  # (history, C, H, W), the last frame is x_b at cycle 0
    start_index: int  # index of cycle 0's valid time in the truth window
    lead_hours: int
    members: torch.Tensor | None = None


def first_cycle_index(times: np.ndarray, history: int, settings: CycleSettings,
                      window_steps: int = 0) -> int:
    """The index into ``times`` (the cycled period's 6-hourly valid times) of the first
    analysis, after checking that the first background's forecast (``history`` input frames,
    ``first_lead_hours`` before it), the ``settings.cycles`` cycles and a 4D method's window
    (``window_steps`` frames past each analysis) lie inside them: ConfigError naming the flag
    otherwise. Needs only the times, so ``runner.preflight`` runs it before anything is built
    and ``first_background`` again on the truth window."""
    def text(t: np.datetime64) -> str:
        return np.datetime_as_string(t, unit="m")

    lead = settings.first_lead_hours // STEP_HOURS
    if settings.start is None:
        start = history - 1 + lead
    else:
        matches = np.nonzero(times == np.datetime64(settings.start, "ns"))[0]
        if not len(matches):
            raise ConfigError("cycle.start", settings.start,
                              f"a valid time of the cycled period ({text(times[0])} .. "
                              f"{text(times[-1])}, 6-hourly)")
        start = int(matches[0])
    if start - lead - history + 1 < 0:
        raise ConfigError("cycle.start", settings.start,
                          f"a time with truth {settings.first_lead_hours} h + "
                          f"{(history - 1) * STEP_HOURS} h before it in the cycled period "
                          f"(the first background's forecast); start later")
    if start + settings.cycles + window_steps > len(times):
        window = f" and {window_steps * STEP_HOURS} h observation windows" if window_steps else ""
        first = text(times[min(start, len(times) - 1)])
        raise ConfigError("cycle.days", settings.days,
                          f"{settings.cycles} cycles{window} from {first} that end inside the "
                          f"cycled period ({text(times[-1])}); use fewer days")
    return start


def first_background(
    model: ForecastModel, truth: TruthWindow, settings: CycleSettings
) -> FirstBackground:
    """Forecast ``first_lead_hours`` from truth to the first analysis time."""
    lead = settings.first_lead_hours // STEP_HOURS
    start = first_cycle_index(truth.times, model.history, settings)
    origin = start - lead
    inputs = truth.frames(origin - model.history + 1, origin + 1)
    return FirstBackground(lagged_history(model, inputs, lead), start, settings.first_lead_hours)


def lagged_history(model: ForecastModel, inputs: torch.Tensor, lead_steps: int) -> torch.Tensor:
    """The model's input frames (history, C, H, W) ending in a ``lead_steps``-step forecast
    from the truth frames ``inputs`` (history, C, H, W): a time-lagged start (a new tensor)."""
    forecast = model.rollout(inputs[None], lead_steps)[0]
    return torch.cat([inputs, forecast])[-model.history:].clone()


# ----------------------------------------------------------------------------- the steps
@dataclasses.dataclass
class CycleState:
    """What the cycle carries: every member's input frames (N, history, C, H, W), ending in
    its background, and the lead of the backgrounds. ``ensemble``: N members of an ensemble
    method (else N = 1, the deterministic trajectory)."""

    frames: torch.Tensor
    lead_hours: int
    ensemble: bool

    @classmethod
    def start(cls, first: FirstBackground) -> CycleState:
        if first.members is not None:
            return cls(first.members.clone(), first.lead_hours, True)
        return cls(first.history.clone()[None], first.lead_hours, False)

    def background(self, valid_time: np.datetime64, k: int) -> Background:
        """The Background of cycle k (an ensemble's: the members' mean, with the members)."""
        if self.ensemble:
            return Background(self.frames[:, -1].mean(0), self.frames.mean(0), valid_time,
                              self.lead_hours, k, members=self.frames.clone())
        return Background(self.frames[0, -1].clone(), self.frames[0].clone(), valid_time,
                          self.lead_hours, k)


def observe_step(truth: TruthWindow, t: int, k: int, settings: ObservationSettings,
                 window_hours: int = 0, model: ForecastModel | None = None
                 ) -> Observations | ObservationWindow:
    """Cycle k's observations (valid at truth index t); for a 4D method (window_hours > 0)
    those at every window offset o, drawn exactly as cycle k + o/6's."""
    if not window_hours:
        return observe(truth.frame(t), truth.spec, settings, cycle=k)
    offsets = settings.window_offsets(window_hours)
    if t + offsets[-1] // STEP_HOURS >= len(truth):
        raise ConfigError("cycle.days", None,
                          f"cycles whose {window_hours} h observation windows end inside the "
                          f"cycled period ({truth.times[-1]}); use fewer days")
    drawn = tuple((o, observe(truth.frame(t + o // STEP_HOURS), truth.spec, settings,
                              cycle=k + o // STEP_HOURS)) for o in offsets)
    handle = model if model is not None and model.differentiable else None
    return ObservationWindow(drawn, model=handle)


def analyse_step(analyser: Analyser, background: Background,
                 obs: Observations | ObservationWindow, device: torch.device
                 ) -> tuple[Analysis, Measurement]:
    """The method's analysis, timed (time and peak memory of ``analyse`` alone)."""
    return measure(lambda: analyser.analyse(background, obs), device)


def analysis_problem(analysis, background: Background, members: int) -> str | None:
    """Why an analysis cannot be carried on (a wrong type or shape, NaN/Inf), or None."""
    if not isinstance(analysis, Analysis):
        return f"analyse returned {type(analysis).__name__}, not methods.base.Analysis"
    if analysis.x_a.shape != background.x_b.shape:
        return (f"analyse returned shape {tuple(analysis.x_a.shape)}, expected "
                f"{tuple(background.x_b.shape)}")
    if members and (analysis.members is None or analysis.members.shape[0] != members):
        got = None if analysis.members is None else analysis.members.shape[0]
        return f"an ensemble method of {members} members returned {got} analysed members"
    if not torch.isfinite(analysis.x_a).all() or (
            analysis.members is not None and not torch.isfinite(analysis.members).all()):
        return "the analysis has NaN/Inf"
    return None


def score_step(scores: CellScores, k: int, background: Background, analysis: Analysis | None,
               x_true: torch.Tensor, clim: torch.Tensor, weights: np.ndarray,
               obs: Observations | None = None) -> None:
    """Background and (when usable) analysis scores of cycle k against the truth, and in
    observation space against ``obs`` (the observations at the analysis time)."""
    b_members = None if background.members is None else background.members[:, -1]
    scores.score(k, "background", background.x_b, x_true, clim, weights, b_members)
    if analysis is not None:
        scores.score(k, "analysis", analysis.x_a, x_true, clim, weights, analysis.members)
        if obs is not None:
            scores.score_observations(k, obs, background.x_b, analysis.x_a)


def updated_history(history: torch.Tensor, x_b: torch.Tensor, x_a: torch.Tensor,
                    policy: str) -> torch.Tensor:
    """The model's input frames after an analysis (CycleSettings.history_update).

    history: (..., history, C, H, W) ending in x_b (..., C, H, W); returns the same shape
    ending in x_a. "increment": every frame + (x_a − x_b), keeping the background's tendency
    between frames; "replace": the last frame becomes x_a, the earlier ones stay.
    """
    x_a = x_a.to(history.dtype)
    if policy == "increment":
        return history + (x_a - x_b.to(history.dtype)).unsqueeze(-4)
    if policy == "replace":
        return torch.cat([history[..., :-1, :, :, :], x_a.unsqueeze(-4)], dim=-4)
    raise ConfigError("cycle.history_update", policy, f"one of {', '.join(HISTORY_UPDATES)}")


def assimilate(state: CycleState, background: Background, analysis: Analysis,
               policy: str) -> CycleState:
    """Every member's frames with its analysis increment (the history update)."""
    if state.ensemble:
        frames = updated_history(state.frames, background.members[:, -1], analysis.members,
                                 policy)
    else:
        frames = updated_history(state.frames, background.x_b[None], analysis.x_a[None], policy)
    return CycleState(frames, state.lead_hours, state.ensemble)


def propagate(state: CycleState, model: ForecastModel, batch: int | None = None
              ) -> tuple[CycleState, float]:
    """One 6-hour step of every member, in batches; (next state, wall seconds)."""
    start = time.perf_counter()
    step = model.step_batched(state.frames, batch)
    if step.is_cuda:
        torch.cuda.synchronize(step.device)
    seconds = time.perf_counter() - start
    frames = torch.cat([state.frames[:, 1:], step[:, None]], dim=1)
    return CycleState(frames, STEP_HOURS, state.ensemble), seconds


# ----------------------------------------------------------------------------- the loop
def run_cycles(
    analyser: Analyser,
    model: ForecastModel,
    truth: TruthWindow,
    start: FirstBackground,
    obs_settings: ObservationSettings,
    settings: CycleSettings,
    climatology: torch.Tensor,
    window_hours: int = 0,
    forecast_batch: int | None = None,
    progress: bool = True,
    label: str = "",
) -> CellScores:
    """Cycle ``analyser`` through ``settings.cycles`` analyses from the shared first background
    (``start.members`` set: an ensemble method of that many members)."""
    spec = truth.spec
    weights = spec.latitude_weights()
    clim = climatology.to(truth.device)
    members = 0 if start.members is None else int(start.members.shape[0])
    starts = (np.arange(0, settings.cycles, settings.forecast_every)
              if settings.forecast_every else None)
    scores = CellScores(settings.cycles, spec, members, window_hours, starts,
                        settings.forecast_hours // STEP_HOURS, settings.spinup_cycles)
    state = CycleState.start(start)
    bar = tqdm(range(settings.cycles), desc=label or "cycles", unit="cycle", disable=not progress)
    for k in bar:
        t = start.start_index + k
        x_true = truth.frame(t)
        if not torch.isfinite(state.frames[:, -1]).all():
            scores.stop(k, "the background (forecast from the previous analysis) has NaN/Inf")
            break
        background = state.background(truth.times[t], k)
        obs = observe_step(truth, t, k, obs_settings, window_hours, model)
        analysis, cost = analyse_step(analyser, background, obs, truth.device)
        first = obs if isinstance(obs, Observations) else obs.at(0)
        scores.record(k, analysis_seconds=cost.seconds, peak_memory_bytes=cost.peak_bytes,
                      n_obs=len(obs), n_points=observed_points(first), dropped_obs=first.dropped)
        problem = analysis_problem(analysis, background, members)
        score_step(scores, k, background, None if problem else analysis, x_true, clim, weights,
                   first)
        if problem:
            scores.stop(k, problem)
            break
        scores.record_diagnostics(k, analysis.diagnostics)
        clim_error = float((scores_of_climatology(clim, x_true, spec, weights)).mean())
        error = scores.analysis_error(k)
        if error > settings.divergence_factor * clim_error:
            scores.stop(k, f"analysis RMSE {error:.3g} (normalised, channel mean) exceeds "
                           f"{settings.divergence_factor} x climatology's {clim_error:.3g}")
            break
        prior, state = state, assimilate(state, background, analysis, settings.history_update)
        if starts is not None and k in starts:
            free_forecasts(scores, k, model, prior, state, truth, t, clim, weights)
        if k + 1 < settings.cycles:
            state, seconds = propagate(state, model, forecast_batch)
            scores.record(k, forecast_seconds=seconds)
    return scores


def scores_of_climatology(clim: torch.Tensor, x_true: torch.Tensor, spec: StateSpec,
                          weights: np.ndarray) -> np.ndarray:
    """The climatology's RMSE per channel, normalised (the divergence threshold's unit)."""
    return scorer.scores(clim, x_true, clim, spec, weights)[0] / spec.std


def free_forecasts(scores: CellScores, k: int, model: ForecastModel, prior: CycleState,
                   state: CycleState, truth: TruthWindow, t: int, clim: torch.Tensor,
                   weights) -> None:
    """Score forecasts at every 6-h lead inside the cycled period from the (mean) analysis, and,
    as references, from the (mean) background before the analysis and from the truth."""
    row = int(np.nonzero(scores.forecast_starts == k)[0][0])
    leads = scores.forecasts["forecast_rmse"].shape[1]
    available = min(leads, len(truth) - 1 - t)
    if available < 1:
        return

    def mean_frames(s: CycleState) -> torch.Tensor:
        return s.frames.mean(0) if s.ensemble else s.frames[0]

    starts = {"forecast_rmse": mean_frames(state), "background_forecast_rmse": mean_frames(prior),
              "truth_forecast_rmse": truth.frames(t - model.history + 1, t + 1)}
    for name, history in starts.items():
        forecast = model.rollout(history[None], available)[0]
        for s in range(available):
            scores.forecasts[name][row, s] = scorer.scores(forecast[s], truth.frame(t + s + 1),
                                                           clim, truth.spec, weights)[0]
