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

Histograms (``innovation_histograms``): per channel, the counts of d_b / std_c and of d_a / std_c
(the normalised innovations, dimensionless, so one bin layout fits every channel) in the bins
``histogram_bins``: an underflow bin (−∞, −1), 40 bins [e_i, e_i+1) of width 0.05 between the
``HISTOGRAM_EDGES`` −1 … 1, and an overflow bin [1, ∞), 42 in all (numpy.histogram's counts
with the edges −∞, −1, …, 1, ∞). The scorer adds them up over the cycles after spin-up.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import Observations

#: Per-channel statistics of one analysis (scorer variables with dims (cycle, channel)).
NAMES = ("obs_count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "desroziers_r",
         "desroziers_hbh", "obs_error_var")
#: Per-channel histograms of one analysis (scorer variables with dims (channel, innovation_bin)).
HISTOGRAM_NAMES = ("omb_histogram", "oma_histogram")
#: The inner bin edges of the histograms, in units of the channel's normalisation std.
HISTOGRAM_EDGES = np.linspace(-1.0, 1.0, 41)
#: Bins in all: the 40 inner bins, the underflow and the overflow.
N_BINS = len(HISTOGRAM_EDGES) + 1


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


def histogram_bins() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, lower, upper), each (N_BINS,), of the histogram bins in units of the channel's
    normalisation std; the underflow bin's centre and lower edge are −∞, the overflow bin's
    centre and upper edge +∞."""
    edges = HISTOGRAM_EDGES
    centre = np.concatenate([[-np.inf], 0.5 * (edges[:-1] + edges[1:]), [np.inf]])
    return centre, np.concatenate([[-np.inf], edges]), np.concatenate([edges, [np.inf]])


def histogram_counts(values: np.ndarray, channel: np.ndarray, channels: int) -> np.ndarray:
    """(channels, N_BINS) int64 counts of normalised ``values`` (n,) per ``channel`` index (n,)
    in the bins of ``histogram_bins`` (NaN is not counted, ±∞ is)."""
    keep = ~np.isnan(values)
    bins = np.searchsorted(HISTOGRAM_EDGES, values[keep], side="right")
    flat = np.asarray(channel)[keep] * N_BINS + bins
    return np.bincount(flat, minlength=channels * N_BINS).reshape(channels, N_BINS)


def innovation_histograms(obs: Observations, x_b: torch.Tensor, x_a: torch.Tensor,
                          spec: StateSpec) -> dict[str, np.ndarray]:
    """{"omb_histogram", "oma_histogram": (C, N_BINS) int64} of one analysis: the counts of
    (y − H x) / std_c (normalised states give it directly) per channel; zeros for channels
    without observations. Their sum over bins is the channel's ``obs_count``."""
    c = len(spec.channels)
    if len(obs) == 0:
        return {name: np.zeros((c, N_BINS), dtype=np.int64) for name in HISTOGRAM_NAMES}
    obs = obs.to("cpu")
    y = obs.values.double()
    index = obs.channel.cpu().numpy()
    d_b = (y - obs.operator(x_b.double().cpu())).numpy()
    d_a = (y - obs.operator(x_a.double().cpu())).numpy()
    return {"omb_histogram": histogram_counts(d_b, index, c),
            "oma_histogram": histogram_counts(d_a, index, c)}
