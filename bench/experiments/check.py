"""One analysis against a known background error: how much of it each method removes.

Cycling mixes two things: how good one analysis is, and how the forecast model reacts to the
increments. This check isolates the first, as a static observing-system experiment on held-out
data. For ``starts`` start times spread over the *validation* period (never used in training):

    errors = "forecast"  x_b = M_L(x_{t−6h}, x_t),  x_true = x_{t+L}      (L = ``lead_hours``;
                         48 h is the harness's first background)
    errors = "nmc"       x_b = M_24h(from t + 24 h),  x_true = M_48h(from t), both valid at
                         t + 48 h: x_true − x_b is a held-out NMC difference, the distribution
                         3DVar and VAE-Var learn their background model from (the case most
                         favourable to a learnt background model)
    errors = "known-prior"  x_b = x_true + U w, w ~ N(0, I): a known Gaussian B, so the
                         optimum is known (bench/experiments/known_prior.py)
    y   = H(x_true) + ε_o       (the run's observation protocol at each density)
    x_a = method.analyse(x_b, y)

and per method, density and channel the ratio of latitude-weighted RMSEs over the starts

    r_c = RMSE_c(x_a − x_true) / RMSE_c(x_b − x_true):

below 1 where the analysis removes error, above 1 where it adds some. A method that does not
get below 1 here cannot be expected to help in cycles; one that does may still fail there (its
increments may excite the forecast model's growing modes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import metrics
from bench.config import ObservationSettings
from bench.forecast.base import STEP_HOURS, ForecastModel
from bench.observations import observe
from bench.state import StateSpec
from methods.base import Analyser, Background, ObservationWindow

#: Valid values of ``errors``.
ERROR_KINDS = ("forecast", "nmc", "known-prior")
#: NMC lead pair (hours): the samples' default in bench/samples.py.
NMC_LONG, NMC_SHORT = 48, 24


@dataclasses.dataclass(frozen=True)
class Case:
    """One analysis problem: the background, the truth it misses, and when."""

    x_b: torch.Tensor  # (C, H, W) normalised
    x_true: torch.Tensor  # (C, H, W) normalised
    history: torch.Tensor  # (history, C, H, W): the model's frames ending in x_b (the contract)
    lead_hours: int
    valid_time: np.datetime64


def cases(model: ForecastModel, truth: torch.Tensor, times: np.ndarray, errors: str,
          lead_hours: int, starts: int) -> list[Case]:
    """``starts`` cases evenly spread over a trajectory ``truth`` (T, C, H, W) at ``times`` (T,).

    Raises ValueError when the trajectory is too short for the leads.
    """
    if errors not in ERROR_KINDS[:2]:  # known-prior cases: known_prior.known_prior_cases
        raise ValueError(f"errors={errors!r}: expected one of {ERROR_KINDS[:2]}")
    if lead_hours <= 0 or lead_hours % STEP_HOURS:
        raise ValueError(f"lead_hours={lead_hours} must be a positive multiple of {STEP_HOURS}")
    span = (NMC_LONG if errors == "nmc" else lead_hours) // STEP_HOURS
    first, last = model.history - 1, truth.shape[0] - 1 - span
    if last < first or starts < 1:
        raise ValueError(f"{truth.shape[0]} frames hold no {span * STEP_HOURS} h case "
                         f"(starts={starts}); use a longer period or a shorter lead")
    out = []
    def forecast(start_frames: torch.Tensor, steps: int) -> torch.Tensor:
        """The model's input frames after ``steps`` steps from ``start_frames``: the last
        ``history`` frames of start frames + forecast, ending in the forecast itself."""
        run = model.rollout(start_frames[None].to(model.device), steps)[0].cpu()
        return torch.cat([start_frames, run])[-model.history:]

    for i in np.unique(np.linspace(first, last, starts).round().astype(int)):
        frames = truth[i - model.history + 1: i + 1]
        if errors == "forecast":
            steps = lead_hours // STEP_HOURS
            history = forecast(frames, steps)
            x_true, lead = truth[i + steps], lead_hours
        else:
            offset = (NMC_LONG - NMC_SHORT) // STEP_HOURS
            later = truth[i + offset - model.history + 1: i + offset + 1]
            x_true = forecast(frames, span)[-1]
            history, lead = forecast(later, NMC_SHORT // STEP_HOURS), NMC_SHORT
        x_b = history[-1]
        out.append(Case(x_b.float(), x_true.float(), history.float(), lead, times[i + span]))
    return out


def error_ratios(methods: dict[str, Analyser], case_list: list[Case], spec: StateSpec,
                 densities: tuple[float, ...], observations: ObservationSettings,
                 members: dict[str, list[torch.Tensor]] | None = None,
                 windowed: tuple[str, ...] = ()) -> pd.DataFrame:
    """Long table: method, density, channel, ratio r_c, background RMSE (physical units).

    The observations of case k are drawn as those of cycle k of a run (same seeds), so every
    method sees the same y. ``members[name][k]``: case k's background members (N, history,
    C, H, W) for an ensemble method; a method in ``windowed`` gets its observations as a
    window of one time (the analysis time: this check is static).
    """
    members = members or {}
    weights = spec.latitude_weights()
    truth = torch.stack([c.x_true for c in case_list]).double()
    x_b = torch.stack([c.x_b for c in case_list]).double()
    std = torch.tensor(np.array(spec.std, dtype=np.float64))
    rmse_b = metrics.rmse(x_b, truth, weights)
    rows = []
    for density in densities:
        settings = dataclasses.replace(observations, density=density)
        obs = [observe(c.x_true, spec, settings, cycle=k) for k, c in enumerate(case_list)]
        for name, method in methods.items():
            x_a = torch.stack([
                method.analyse(
                    Background(c.x_b, c.history, c.valid_time, c.lead_hours, k,
                               members=members[name][k] if name in members else None),
                    ObservationWindow(((0, obs[k]),)) if name in windowed else obs[k]
                ).x_a.double()
                for k, c in enumerate(case_list)])
            ratio = metrics.rmse(x_a, truth, weights) / rmse_b
            rows += [{"method": name, "density": density, "channel": ch, "ratio": float(r),
                      "background_rmse": float(b * s)}
                     for ch, r, b, s in zip(spec.names, ratio, rmse_b, std, strict=True)]
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, channels: tuple[str, ...]) -> pd.DataFrame:
    """Wide table: one row per (method, density); the ratio of each of ``channels`` and its
    mean over all channels ("all")."""
    wide = table.pivot_table(index=["method", "density"], columns="channel", values="ratio",
                             sort=False)
    out = wide[[c for c in channels if c in wide.columns]].copy()
    out["all"] = wide.mean(axis=1)
    return out.reset_index()


def run_check(cfg, out: str | Path, errors: str = "forecast", lead_hours: int = 48,
              starts: int = 8, command: str = "", progress: bool = True
              ) -> tuple[pd.DataFrame, list[Path]]:
    """Fit the methods of ``cfg`` (a RunConfig; from the cache when fitted before) and check
    them on the world's validation period; write ``analysis_check.{md,csv,tex}`` (headline
    channels and the mean over all channels) and ``analysis_check_channels.csv`` (every
    channel) under ``out``. Returns the wide table and the paths written."""
    from bench.report.tables import HEADLINE
    from bench.setup import build_method, ensemble_perturbations, fit_and_load, setup
    from bench.store import write_csv, write_table

    if errors == "known-prior":
        from bench.experiments.known_prior import run_known_prior

        return run_known_prior(cfg, out, lead_hours, starts, command, progress)
    s = setup(cfg, progress=progress)
    spec, valid = s.world.spec, s.world.period("valid")
    truth = spec.to_tensor(valid.load()).float()
    case_list = cases(s.model, truth, valid.time.values, errors, lead_hours, starts)
    analysers, members, windowed = {}, {}, []
    for name in cfg.methods:
        method = build_method(cfg, name, seed=cfg.seeds[0])
        analysers[name] = fit_and_load(s, method, progress=progress)
        if method.members:  # the run's initial perturbations around each case's background
            eps = ensemble_perturbations(s, cfg, cfg.seeds[0], method.members, progress)
            members[name] = [c.history[None].to(eps) + eps[:, None] for c in case_list]
        if method.window_hours:
            windowed.append(name)
    observations = cfg.cell_observations(cfg.densities[0], cfg.seeds[0])
    table = error_ratios(analysers, case_list, spec, cfg.densities, observations, members,
                         tuple(windowed))
    wide = summary(table, HEADLINE)
    what = (f"truth − forecast, lead {lead_hours} h" if errors == "forecast"
            else "held-out NMC differences (48 h − 24 h forecasts)")
    notes = (f"Analysis RMSE / background RMSE (latitude-weighted, over {len(case_list)} starts "
             f"of the validation period; below 1 = error removed). Background errors: {what}. "
             f"Observation noise {cfg.observations.noise_fraction:g} of each channel's "
             "climatological std. "
             "`all`: mean of the ratio over all channels. See bench/experiments/check.py.")
    paths = write_table(wide, out, "analysis_check", "One analysis against a known error",
                        command, notes)
    paths.append(write_csv(table, Path(out) / "analysis_check_channels.csv", command))
    return wide, paths
