"""Observation-space diagnostics of one analysis, per channel (the check every DA centre runs).

With y the observations, H the operator, x_b the background and x_a the analysis, per channel c
over its n_c observations (physical units: normalised values times the channel's std):

    d_b = y − H x_b        O − B, the innovations
    d_a = y − H x_a        O − A, the analysis residuals
    mean and rms of d_b and of d_a
    desroziers_r   = mean(d_a ⊙ d_b)              E[d_a d_bᵀ] ≈ R             (Desroziers et al.
    desroziers_hbh = mean((H x_a − H x_b) ⊙ d_b)   E[(Hx_a − Hx_b) d_bᵀ] ≈ HBHᵀ    2005, their
                                                   diagonals, pooled by channel)   eqs. 1–3)
    obs_error_var  = mean(σ_o²), the R the method was given

both estimates hold when the gain uses the true B and R; pooled over many cycles, a method
whose R (or B) is mis-specified shows it as a mismatch of √desroziers_r with √obs_error_var.
A method's χ² = 2 J_min (its own cost at the analysis) over N observations is ≈ N in the same
case; J_min comes from the method's diagnostics, N from ``n_obs``.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import Observations

#: Per-channel statistics of one analysis (scorer variables with dims (cycle, channel)).
NAMES = ("obs_count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "desroziers_r",
         "desroziers_hbh", "obs_error_var")


def innovation_statistics(obs: Observations, x_b: torch.Tensor, x_a: torch.Tensor,
                          spec: StateSpec) -> dict[str, np.ndarray]:
    """{name: (C,)} of ``NAMES`` for states x_b, x_a (C, H, W), normalised; NaN for channels
    without observations (count 0)."""
    c = len(spec.channels)
    if len(obs) == 0:
        return {name: (np.zeros(c) if name == "obs_count" else np.full(c, np.nan))
                for name in NAMES}
    obs = obs.to("cpu")
    scale = torch.tensor(np.array(spec.std, dtype=np.float64))[obs.channel]
    y = obs.values.double()
    hb = obs.operator(x_b.double().cpu())
    ha = obs.operator(x_a.double().cpu())
    d_b, d_a, d_ab = (y - hb) * scale, (y - ha) * scale, (ha - hb) * scale
    sigma2 = (obs.error_std.double() * scale).square()
    index = obs.channel.cpu().numpy()
    count = np.bincount(index, minlength=c).astype(np.float64)

    def mean(values: torch.Tensor) -> np.ndarray:
        total = np.bincount(index, weights=values.numpy(), minlength=c)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    return {"obs_count": count,
            "omb_mean": mean(d_b), "omb_rms": np.sqrt(mean(d_b.square())),
            "oma_mean": mean(d_a), "oma_rms": np.sqrt(mean(d_a.square())),
            "desroziers_r": mean(d_a * d_b), "desroziers_hbh": mean(d_ab * d_b),
            "obs_error_var": mean(sigma2)}
