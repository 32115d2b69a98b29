"""The known-answer check: background errors drawn from a known Gaussian B, so the optimum is known.

The other error kinds of the check (bench/experiments/check.py) come from a forecast model, and
nobody knows their distribution. Here the background errors are drawn from B = U Uᵀ, the
covariance model 3DVar fits to this world's NMC samples (variance scale 1; bench/samples.py
``known_prior_statistics``, methods/common/covariance/known_prior.py):

    x_true = x_t              a state of the *validation* period (``starts`` of them)
    ε_k    = U w_k,  w_k ~ N(0, I)     the case stream, seeded by (seed, k): never a training draw
    x_b    = x_true + ε_k     (every frame of the model's input history gets the same ε_k)
    y      = H x_true + ε_o,  ε_o ~ N(0, R)   the run's observation protocol, R = diag(σ_o²) known

For a linear H the analysis error of any linear x_a = x_b + K (y − H x_b) is
(I − K H) ε + K ε_o, whose expected squared norm tr((I − KH) B (I − KH)ᵀ + K R Kᵀ) is smallest
for K = B Hᵀ (H B Hᵀ + R)⁻¹: 3DVar with exactly this B, minimised exactly, is the best linear
unbiased analysis — the Bayes-optimal one for a flat prior on the truth. (A method that knows
the climate could in principle gain a little more, by the climatological prior on x_true; with
σ_b² ≪ σ_clim² that gain is small.) The check loads that optimum from the first method (of
``--methods``, then of the registry) whose ``with_covariance`` gives one (methods/base), labelled
"<name> (true B)", and reports per method, density and channel

    ratio             RMSE_c(x_a − x_true) / RMSE_c(x_b − x_true)           (as the other kinds)
    ratio_to_optimum  RMSE_c(x_a − x_true) / RMSE_c(x_a^opt − x_true)        (≥ 1 up to noise)

Learned methods meet this B only if trained on it (``--set vaevar.training_samples=known_prior
--set vaevar.known_prior_count=363``); with their default fits (NMC samples, forecast pairs)
this check measures them under a mismatched prior, as a cycled run would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.experiments.check import Case, error_ratios, summary
from bench.state import StateSpec
from methods.common.covariance import BMatrix, known_prior

#: The label of the optimum's rows: "<method name> (true B)".
OPTIMUM_LABEL = "{} (true B)"


def known_prior_cases(b: BMatrix, truth: torch.Tensor, times: np.ndarray, starts: int,
                      history: int, lead_hours: int, seed: int = 0) -> list[Case]:
    """``starts`` cases at times spread evenly over ``truth`` (T, C, H, W) normalised.

    Case k: x_true = truth[i_k], ε_k = U w_k (stream ``known_prior.CASES``, seeded by
    (seed, k)), x_b = x_true + ε_k, history = truth[i_k − history + 1 … i_k] + ε_k (float32).
    ``lead_hours`` is the lead methods are told (e.g. which of DiffDA's denoisers is used).
    """
    first, last = history - 1, truth.shape[0] - 1
    if last < first or starts < 1:
        raise ValueError(f"{truth.shape[0]} frames hold no case of {history} frames "
                         f"(starts={starts})")
    out = []
    for k, i in enumerate(np.unique(np.linspace(first, last, starts).round().astype(int))):
        w = known_prior.control_vector(b, known_prior.CASES, seed, k)
        with torch.no_grad():
            eps = b.u(w.to(b.device)).float().cpu()  # ε_k = U w_k (C, H, W)
        frames = truth[i - history + 1: i + 1].float()
        out.append(Case(frames[-1] + eps, frames[-1], frames + eps, lead_hours, times[i]))
    return out


def member_perturbations(b: BMatrix, members: int, scale: float = 1.0, seed: int = 0
                         ) -> torch.Tensor:
    """Ensemble perturbations from the same B (members, C, H, W) float32: scale · (ε_m − mean
    ε), ε_m = U w_m from the stream ``known_prior.MEMBERS`` (disjoint from cases and training)."""
    eps = torch.cat(list(known_prior.draw_batches(b, members, known_prior.MEMBERS, seed)))
    return (scale * (eps - eps.mean(dim=0, keepdim=True))).float().cpu()


def with_optimum(table: pd.DataFrame, optimum: str) -> pd.DataFrame:
    """``table`` (error_ratios') with ratio_to_optimum = ratio / the ``optimum`` row's ratio of
    the same density and channel (= RMSE_c(x_a − x_true) / RMSE_c(x_a^opt − x_true))."""
    ref = table[table.method == optimum].set_index(["density", "channel"])["ratio"]
    key = pd.MultiIndex.from_frame(table[["density", "channel"]])
    return table.assign(ratio_to_optimum=table.ratio.to_numpy() / ref.reindex(key).to_numpy())


def optimum_method(cfg, stats: dict, spec: StateSpec, seed: int = 0):
    """(label, method, state): the first method of ``cfg.methods``, then of the registry, that
    analyses with exactly B = U Uᵀ of ``stats`` (``Assimilator.with_covariance``), built with
    the run's settings for it (``--set``). Raises ConfigError when none can."""
    from bench.setup import build_method
    from bench.validation import ConfigError
    from methods import METHODS

    for name in dict.fromkeys((*cfg.methods, *METHODS)):
        made = build_method(cfg, name, seed).with_covariance(stats, spec)
        if made is not None:
            return OPTIMUM_LABEL.format(name), *made
    raise ConfigError("methods", ",".join(cfg.methods),
                      "a registered method that declares with_covariance (methods/base)")


def run_known_prior(cfg, out: str | Path, lead_hours: int = 48, starts: int = 8,
                    command: str = "", progress: bool = True
                    ) -> tuple[pd.DataFrame, list[Path]]:
    """Fit the methods of ``cfg`` (from the cache when fitted before), add the optimum and check
    them all on known-prior cases of the validation period. Writes under ``out``:
    ``analysis_check.{md,csv,tex}`` (ratio to the background, the optimum's own row included),
    ``analysis_check_optimum.{md,csv,tex}`` (ratio to the optimum's RMSE) and
    ``analysis_check_channels.csv`` (both, every channel). Returns the wide ratio table (with
    an ``all_to_optimum`` column) and the paths written."""
    from bench.report.tables import HEADLINE
    from bench.samples import known_prior_statistics
    from bench.setup import build_method, fit_and_load, setup
    from bench.store import write_csv, write_table

    s = setup(cfg, progress=progress)
    spec, seed = s.world.spec, cfg.seeds[0]
    stats = known_prior_statistics(s.world, s.model, s.model_key, progress=progress)
    b = BMatrix(spec, stats)  # draws on the CPU: the same bytes whatever the run's device
    valid = s.world.period("valid")
    case_list = known_prior_cases(b, spec.to_tensor(valid.load()).float(), valid.time.values,
                                  starts, s.model.history, lead_hours, seed)
    analysers, members, windowed = {}, {}, []
    for name in cfg.methods:
        method = build_method(cfg, name, seed=seed)
        analysers[name] = fit_and_load(s, method, progress=progress)
        if method.members:  # members drawn from the same B around each case's background
            eps = member_perturbations(b, method.members, cfg.ensemble.perturbation_scale, seed)
            members[name] = [c.history[None] + eps[:, None] for c in case_list]
        if method.window_hours:
            windowed.append(name)
    label, optimum, state = optimum_method(cfg, stats, spec, seed)
    analysers[label] = optimum.load(state, spec, s.device)
    observations = cfg.cell_observations(cfg.densities[0], seed)
    table = with_optimum(error_ratios(analysers, case_list, spec, cfg.densities, observations,
                                      members, tuple(windowed)), label)
    wide = summary(table, HEADLINE)
    to_opt = summary(table.assign(ratio=table.ratio_to_optimum), HEADLINE)
    wide["all_to_optimum"] = to_opt["all"].to_numpy()
    common = (f"Over {len(case_list)} states of the validation period, background errors drawn "
              f"from the known B = U Uᵀ (3DVar's covariance model of this world's NMC samples, "
              f"variance scale 1; held-out draws, seed {seed}); observation noise "
              f"{cfg.observations.noise_fraction:g} of each channel's climatological std, with "
              f"R known. `{label}`: the optimum, analysing with exactly that B, solved exactly. "
              "`all`: mean over all channels. See bench/experiments/known_prior.py.")
    paths = write_table(wide, out, "analysis_check", "One analysis against a known-prior error",
                        command, "Analysis RMSE / background RMSE (latitude-weighted; below 1 = "
                        "error removed). " + common)
    paths += write_table(to_opt, out, "analysis_check_optimum",
                         "One analysis against a known-prior error: relative to the optimum",
                         command, f"Analysis RMSE / the RMSE of `{label}` (≥ 1 up to sampling "
                         "noise: 1 = as good as the best linear unbiased analysis). " + common)
    paths.append(write_csv(table, Path(out) / "analysis_check_channels.csv", command))
    return wide, paths
