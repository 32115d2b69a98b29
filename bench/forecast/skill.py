"""Forecast skill by lead time: a model against persistence and climatology.

From every start i (one a day by default) of a truth trajectory x (T, C, H, W, normalised), the
model rolls out ``max(leads)`` 6-hour steps from (x_{i−1}, x_i). Persistence forecasts x_i at
every lead; climatology forecasts a fixed field (the training-period mean). Scores are
latitude-weighted RMSE (bench/metrics.py) in physical units, over all starts.
"""

from __future__ import annotations

import pandas as pd
import torch

from bench import metrics
from bench.forecast.base import STEP_HOURS, ForecastModel


def lead_time_rmse(
    model: ForecastModel,
    truth: torch.Tensor,
    climatology: torch.Tensor,
    leads_hours: tuple[int, ...] = (6, 24, 48, 120),
    start_stride: int = 4,
    channels: tuple[str, ...] | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """RMSE by channel and lead for the model, persistence and climatology.

    Args:
        truth: (T, C, H, W) normalised consecutive 6-hourly frames (never training data).
        climatology: (C, H, W) normalised climatological mean.
        leads_hours: multiples of 6.
        start_stride: frames between starts (4 = one start a day).
    Returns:
        DataFrame with columns channel, lead_hours, model, persistence, climatology, units.
    """
    spec = model.spec
    if any(lead % STEP_HOURS for lead in leads_hours):
        raise ValueError(f"leads must be multiples of {STEP_HOURS} h, got {leads_hours}")
    steps = [lead // STEP_HOURS for lead in leads_hours]
    n = max(steps)
    starts = list(range(model.history - 1, truth.shape[0] - n, start_stride))
    if not starts:
        raise ValueError(
            f"a {n * STEP_HOURS} h rollout needs more than {n + model.history} frames, "
            f"got {truth.shape[0]}")
    forecasts = []
    for k in range(0, len(starts), batch_size):
        chunk = starts[k: k + batch_size]
        frames = torch.stack([truth[i - model.history + 1: i + 1] for i in chunk]).to(model.device)
        forecasts.append(model.rollout(frames, n).cpu())
    forecast = torch.cat(forecasts)  # (S, n, C, H, W)
    weights = spec.latitude_weights()
    std = torch.tensor(spec.std, dtype=torch.float64)
    names = channels or spec.names
    idx = spec.indices(names)
    rows = []
    for lead, s in zip(leads_hours, steps, strict=True):
        target = torch.stack([truth[i + s] for i in starts]).double()
        scores = {
            "model": metrics.rmse(forecast[:, s - 1].double(), target, weights),
            "persistence": metrics.rmse(
                torch.stack([truth[i] for i in starts]).double(), target, weights),
            "climatology": metrics.rmse(
                climatology.double().expand_as(target), target, weights),
        }
        for name, i in zip(names, idx, strict=True):
            row = {"channel": name, "lead_hours": lead, "units": spec.channels[i].units}
            row.update({k: float(v[i] * std[i]) for k, v in scores.items()})
            rows.append(row)
    return pd.DataFrame(rows)
