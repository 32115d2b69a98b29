"""Latitude-weighted skill scores, WeatherBench2 conventions.

Weights are cell areas w_i ∝ sin φ_{i+½} − sin φ_{i−½}, normalised to mean 1 over latitude
(``StateSpec.latitude_weights``). For fields e = forecast − truth of shape (..., C, H, W):

    MSE_c  = mean_{h,w} w_h e²                          (per channel, per time)
    RMSE_c = sqrt(mean_t MSE_c(t))                      (time mean *before* the square root)
    bias_c = mean_t mean_{h,w} w_h e
    ACC_c  = mean_t Σ w f'a' / sqrt(Σ w f'² Σ w a'²)    with anomalies f', a' from a climatology

All functions take torch tensors in the same units (physical or normalised, the caller's choice)
and return per-channel tensors of shape (C,) (or (T, C) for the ``*_per_time`` variants).
This module knows nothing of methods (DESIGN.md §2).
"""

from __future__ import annotations

import numpy as np
import torch


def _weights(lat_weights: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(lat_weights), dtype=like.dtype, device=like.device)
    if w.ndim != 1 or w.shape[0] != like.shape[-2]:
        raise ValueError(
            f"latitude weights have shape {tuple(w.shape)}, expected ({like.shape[-2]},) to match "
            f"the fields' latitude axis (shape {tuple(like.shape)})"
        )
    return w[:, None]


def _as_time_batch(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (1, C, H, W); (..., C, H, W) -> (T, C, H, W) flattening leading dims."""
    if x.ndim < 3:
        raise ValueError(f"expected fields (..., C, H, W), got shape {tuple(x.shape)}")
    return x.reshape(-1, *x.shape[-3:])


def mse_per_time(forecast: torch.Tensor, truth: torch.Tensor, lat_weights) -> torch.Tensor:
    """Latitude-weighted spatial MSE: (..., C, H, W) -> (T, C)."""
    if forecast.shape != truth.shape:
        raise ValueError(f"forecast {tuple(forecast.shape)} and truth {tuple(truth.shape)} differ")
    err = _as_time_batch(forecast - truth)
    return (_weights(lat_weights, err) * err**2).mean(dim=(-2, -1))


def rmse(forecast: torch.Tensor, truth: torch.Tensor, lat_weights) -> torch.Tensor:
    """sqrt of the time-mean latitude-weighted MSE: (..., C, H, W) -> (C,)."""
    return mse_per_time(forecast, truth, lat_weights).mean(dim=0).sqrt()


def bias(forecast: torch.Tensor, truth: torch.Tensor, lat_weights) -> torch.Tensor:
    """Time- and area-mean of forecast − truth: (..., C, H, W) -> (C,)."""
    err = _as_time_batch(forecast - truth)
    return (_weights(lat_weights, err) * err).mean(dim=(-2, -1)).mean(dim=0)


def acc(
    forecast: torch.Tensor, truth: torch.Tensor, climatology: torch.Tensor, lat_weights
) -> torch.Tensor:
    """Anomaly correlation coefficient, time-mean of per-time ACC: -> (C,).

    ``climatology`` is (C, H, W) or broadcastable to the fields.
    """
    f = _as_time_batch(forecast - climatology)
    a = _as_time_batch(truth - climatology)
    w = _weights(lat_weights, f)
    num = (w * f * a).sum(dim=(-2, -1))
    den = torch.sqrt((w * f**2).sum(dim=(-2, -1)) * (w * a**2).sum(dim=(-2, -1)))
    return (num / den).mean(dim=0)


def crps_fair(members: torch.Tensor, truth: torch.Tensor, lat_weights) -> torch.Tensor:
    """Latitude-weighted fair CRPS of an ensemble: members (N, C, H, W), truth (C, H, W) -> (C,).

    Per grid value (Ferro 2014's fair estimator, WeatherBench2's "CRPS" for finite ensembles):

        CRPS = (1/N) Σ_i |x_i − y| − 1/(2 N (N − 1)) Σ_i Σ_j |x_i − x_j|,

    unbiased for the CRPS of the distribution the N members are drawn from. The pair sum uses
    the sorted members x_(1) ≤ … ≤ x_(N): Σ_i Σ_j |x_i − x_j| = 2 Σ_k (2k − N − 1) x_(k)
    (k = 1 … N), O(N log N). Needs N ≥ 2.
    """
    n = members.shape[0]
    if n < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {n}")
    skill = (members - truth[None]).abs().mean(dim=0)
    ordered = members.sort(dim=0).values
    k = torch.arange(1, n + 1, dtype=members.dtype, device=members.device)
    pairs = 2.0 * ((2 * k - n - 1).reshape(n, *([1] * truth.ndim)) * ordered).sum(dim=0)
    crps = skill - pairs / (2.0 * n * (n - 1))
    return (_weights(lat_weights, crps) * crps).mean(dim=(-2, -1))


def rank_histogram(members: torch.Tensor, truth: torch.Tensor, lat_weights) -> torch.Tensor:
    """Area fraction of the truth's rank among the members: members (N, C, H, W), truth
    (C, H, W) -> (C, N + 1), each row summing to 1.

    rank r(h, w) = #{i : x_i(h, w) < y(h, w)} ∈ {0, …, N} (Anderson 1996; Hamill 2001), and
    hist_c[r] = mean_{h,w} w_h 1[r(h, w) = r] — latitude-weighted, so a reliable ensemble gives
    1 / (N + 1) in every rank whatever the grid (an unweighted count over-weights the poles of a
    regular grid). Ties (x_i = y, measure zero for continuous fields) count as "not below".
    """
    n = members.shape[0]
    if n < 1:
        raise ValueError(f"a rank histogram needs at least 1 member, got {n}")
    rank = (members < truth[None]).sum(dim=0)  # (C, H, W) in 0 … N
    onehot = torch.nn.functional.one_hot(rank, n + 1).to(truth.dtype)  # (C, H, W, N + 1)
    w = _weights(lat_weights, truth)[..., None]  # (H, 1, 1)
    return (w * onehot).mean(dim=(-3, -2))
