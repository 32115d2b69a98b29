"""Background errors of a cycled assimilation over the training period: the
``cycled_background`` samples of bench/samples.py.

NMC and truth − forecast samples are errors of forecasts *from truth*; the backgrounds a method
meets when it cycles start from its own analyses and carry 3–8 × larger errors (the 6 h
truth − forecast errors are 0.068 climatological std on the built-in world). These samples are
the errors of such backgrounds, drawn from the training period only:

    a method (registered name ``settings.method``, its default settings, fitted on the training
    period as a run fits it) cycles through the sample window of the training period with the
    harness's own steps (bench/cycle.py), in consecutive segments of ``segment_days`` (a run's
    length, 15 days by default): each segment starts from a fresh forecast FIRST_LEAD_HOURS
    from truth, then every 6 h observe (``settings.density`` with the default observation
    settings, seed TRAINING_OBS_SEED: never the observations of a run), analyse, update the
    history, forecast 6 h. Sample j is the background error

        d_j = x_true(t_j) − x_b(t_j)          (truth − forecast, as truth_minus_forecast's)

    of every ``start_stride``-th cycle of a segment after its SPINUP_CYCLES, so that no first
    background's 48 h error is among them.

Why segments: cycled without restarts, the built-in emulator diverges after ~20 days whatever
the method and the density. Its v400 error grows in zonal orders m = 30–31 near the equator
(82–92 % of the error's zonal power from cycle 80; rms 3.2 → 73 normalised units between
cycles 80 and 120 with 3DVar at 1 % over the training year), modes the T31 truncation of its
increments keeps, that neither B (fitted to NMC differences, with no power there) nor sparse
observations can correct: 27 validation days end in divergence at cycle 99 with no
assimilation and at cycle 106 with 3DVar at 1 % and at 5 %. Segments of a run's length give
the errors a run's methods meet, and no sample of a diverged cycle.

The build is resumable as the other kinds' (bench/resumable.py): the samples are written a block
of ``batch_size`` at a time and the cycle's input frames are checkpointed after each block; a
killed build resumes from the last checkpoint (the analyses are deterministic, so rewritten rows
are the same).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import resumable
from bench.config import STEP_HOURS, CycleSettings, ObservationSettings
from bench.cycle import CycleState, analysis_problem, assimilate, lagged_history, propagate
from bench.forecast.base import ForecastModel
from bench.observations import observe
from bench.samples_forecast import window
from bench.state import StateSpec
from methods.base import Analyser

#: the first background's lead (the harness's default time-lagged start)
FIRST_LEAD_HOURS = CycleSettings().first_lead_hours
#: cycles before the first sample: 2 days, the harness's default spin-up
SPINUP_CYCLES = CycleSettings().spinup_cycles
#: the observations' seed over the training period (runs use their own seeds 0, 1, 2, …; a
#: collision would only repeat locations: the truth they observe is another period's)
TRAINING_OBS_SEED = 1000
CHECKPOINT = "cycle_state.pt"


def first_cycle(times: np.ndarray, settings, history: int) -> tuple[int, int]:
    """(index of the first segment's cycle 0 valid time, end of the window) in the training
    period ``times``."""
    lo, hi = window(times, settings)
    return lo + history - 1 + FIRST_LEAD_HOURS // STEP_HOURS, hi


def segment_cycles(settings) -> int:
    """Cycles per segment: ``segment_days`` × 4."""
    return int(settings.segment_days) * (24 // STEP_HOURS)


def cycled_targets(times: np.ndarray, settings, history: int) -> np.ndarray:
    """Indices into the training period (N,) int64 of the samples' valid times: in each segment
    [t0 + kS, t0 + (k + 1)S) inside the window, every ``start_stride``-th cycle from its
    SPINUP_CYCLES-th (module docstring). ValueError when the window holds no sample."""
    t0, hi = first_cycle(times, settings, history)
    size = segment_cycles(settings)
    targets = [np.arange(start + SPINUP_CYCLES, min(start + size, hi), settings.start_stride)
               for start in range(t0, hi, size)]
    targets = np.concatenate(targets) if targets else np.zeros(0)
    if targets.size == 0:
        raise ValueError(f"cycled_background samples need more than "
                         f"{t0 + SPINUP_CYCLES - window(times, settings)[0]} frames in the "
                         f"sample window (first background, {SPINUP_CYCLES} spin-up cycles)")
    return targets.astype(np.int64)


def _fresh_start(truth: torch.Tensor, t: int, model: ForecastModel) -> CycleState:
    """The input frames of a segment whose cycle 0 is valid at ``t``: a FIRST_LEAD_HOURS
    forecast from truth (bench/cycle.first_background's time-lagged start)."""
    lead = FIRST_LEAD_HOURS // STEP_HOURS
    origin = t - lead
    inputs = truth[origin - model.history + 1:origin + 1].to(model.device, torch.float32)
    with torch.no_grad():
        frames = lagged_history(model, inputs, lead)
    return CycleState(frames[None], FIRST_LEAD_HOURS, False)


def _save_checkpoint(folder: Path, block: int, state: CycleState, identity: dict) -> None:
    """The cycle's input frames after ``block`` (temporary file, then rename: complete or
    absent)."""
    path = folder / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save({"block": block, "frames": state.frames.cpu(), "lead_hours": state.lead_hours,
                "identity": identity}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(folder: Path, identity: dict) -> dict | None:
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False)
    return saved if saved.get("identity") == identity else None


def cycle_errors(truth: torch.Tensor, times: np.ndarray, spec: StateSpec, model: ForecastModel,
                 analyser: Analyser, settings, folder: Path, identity: dict,
                 progress: bool = True) -> int:
    """Write the cycled background errors of ``settings`` into ``folder``'s row file, resuming
    from its checkpoint; returns the number of samples.

    Args:
        truth: (T, C, H, W) float32 normalised training period (may be memory-mapped).
        times: (T,) its valid times; spec: the world's StateSpec.
        model: the run's forecast model; analyser: the loaded cycling method.
        identity: what is built (the cache key's settings and method): a row file or a
            checkpoint of another identity is discarded.
    """
    targets = cycled_targets(times, settings, model.history)
    t0 = first_cycle(times, settings, model.history)[0]
    segment = segment_cycles(settings)
    size = settings.batch_size
    rows = resumable.RowFile(folder, "samples.npy", (targets.size, *truth.shape[1:]),
                             np.float32, identity)
    obs_settings = ObservationSettings(density=settings.density, seed=TRAINING_OBS_SEED)
    policy = CycleSettings().history_update
    device = model.device
    saved = _load_checkpoint(folder, identity) if rows.done else None
    first_block, state, next_t = 0, None, t0
    if saved is not None:
        first_block = saved["block"] + 1
        state = CycleState(saved["frames"].to(device), saved["lead_hours"], False)
        next_t = int(targets[first_block * size - 1]) + 1
    blocks = range(first_block, -(-targets.size // size))
    for b in tqdm(blocks, desc=f"cycled_background samples ({settings.method})",
                  disable=not progress, initial=first_block, total=-(-targets.size // size)):
        wanted = targets[b * size:(b + 1) * size]
        out = np.empty((wanted.size, *truth.shape[1:]), np.float32)
        for t in range(next_t, int(wanted[-1]) + 1):
            if (t - t0) % segment == 0:  # a segment's first cycle
                state = _fresh_start(truth, t, model)
            x_true = truth[t].to(device, torch.float32)
            background = state.background(times[t], (t - t0) % segment)  # a run's cycle k
            if t in wanted:
                out[int(np.searchsorted(wanted, t))] = (x_true - background.x_b).cpu().numpy()
            obs = observe(x_true, spec, obs_settings, cycle=t - t0)
            analysis = analyser.analyse(background, obs)
            problem = analysis_problem(analysis, background, 0)
            if problem:
                raise RuntimeError(
                    f"cycled_background samples: {settings.method} failed at "
                    f"{str(times[t])[:16]} of the training period (density {settings.density}):"
                    f" {problem}; choose a method and density that cycle stably")
            state = assimilate(state, background, analysis, policy)
            state, _ = propagate(state, model)
            if not torch.isfinite(state.frames[:, -1]).all():
                raise RuntimeError(f"cycled_background samples: the forecast from "
                                   f"{settings.method}'s analysis at {str(times[t])[:16]} has "
                                   f"NaN/Inf (density {settings.density})")
        next_t = int(wanted[-1]) + 1
        rows.write(b, b * size, out)
        _save_checkpoint(folder, b, state, identity)
    return int(targets.size)
