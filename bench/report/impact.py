"""Forecast impact: how good are a method's analyses as initial conditions?

With ``--forecast-every`` the harness runs the same forecast model from three starts at the
same times (bench/cycle.py ``free_forecasts``; dims forecast_start, lead_hours, channel):
``forecast_rmse`` from the analysis, ``background_forecast_rmse`` from the background just
before it, ``truth_forecast_rmse`` from the truth. Per (method, density, channel) the three
RMSE-against-lead curves are the means over the forecasts after spin-up of every seed
(time-mean of per-forecast RMSE, the tables' convention), over the same forecasts for all three:
those complete (finite) at every lead of the longest run of leads any forecast has complete.

Analysis-equivalent age. The truth-started curve T(L) grows with lead (model error only; T(0)
= 0, since a forecast of lead 0 from the truth is the truth). The forecast from the analysis at
lead L has the skill of the truth-started forecast at lead L', where T(L') = RMSE_analysis(L)
(T interpolated linearly in lead through (0, 0); the first crossing). Its age is

    A(L) = L' − L  [h]     (≥ 0 when the analysis is worse than the truth)

— the analysis is as good an initial condition as a truth that is A hours old (DiffDA's "the
analysis reaches ~24 h forecast error" is A ≈ 24 h). When RMSE_analysis(L) exceeds T at the
longest lead L_max, L' is unknown: A is NaN and the table shows the lower bound "> L_max − L h"
(so A at the longest lead needs truth forecasts longer than the others). The background's age
(CSV) is the same with the background-started curve.

Lead time gained against the background. The forecast from the analysis at lead L is as good as
the forecast from the background at lead L_b, RMSE_background(L_b) = RMSE_analysis(L) (the
background-started curve linear between its leads, first crossing):

    G(L) = L − L_b  [h]

the hours of forecast skill the analysis adds to its background (0 for no analysis; negative
when the analysis made things worse). NaN ("n/a") when RMSE_analysis(L) lies outside the
background-started curve's range. It needs no truth forecast beyond L, so it is defined at the
longest lead too; where both are defined G ≈ A_background − A.

Table ``tables/forecast_impact.{md,csv,tex}``: z500 and t850 (``IMPACT_CHANNELS``) at 24, 48
and 120 h (``IMPACT_LEADS``, those forecast). No table without the three variables (runs
without ``--forecast-every``, metrics.nc from before the references existed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.formatting import (
    channel_label,
    display_scale,
    format_density,
    format_number,
)
from bench.report.pooling import CONVENTIONS, DEFAULT_CONVENTION
from bench.report.render import provenance
from bench.report.selection import cells, diverged_seeds, headline_channels, spinup_of
from bench.scorer import select_cell

#: Where each forecast starts -> its metrics.nc variable.
SOURCES = {"analysis": "forecast_rmse", "background": "background_forecast_rmse",
           "truth": "truth_forecast_rmse"}
IMPACT_CHANNELS = ("z500", "t850")
IMPACT_LEADS = (24, 48, 120)


def has_forecasts(ds: xr.Dataset) -> bool:
    return all(name in ds for name in SOURCES.values())


def equivalent_lead(leads, rmse, target: float, origin: bool = True) -> float:
    """The lead at which a curve (``leads`` [h], ``rmse``), linear between its leads and with
    ``origin`` through (0, 0) (the truth-started curve), first reaches ``target``; NaN if
    ``target`` is NaN or outside the curve's range."""
    lead, curve = np.asarray(leads, dtype=float), np.asarray(rmse, dtype=float)
    if origin:
        lead, curve = np.concatenate([[0.0], lead]), np.concatenate([[0.0], curve])
    if not np.isfinite(target) or not np.isfinite(curve).all() or not curve.size:
        return np.nan
    above = np.flatnonzero(curve >= target)
    if not above.size or (above[0] == 0 and curve[0] > target):
        return np.nan
    i = int(above[0])
    if i == 0:
        return float(lead[0])
    return float(lead[i - 1] + (target - curve[i - 1]) / (curve[i] - curve[i - 1])
                 * (lead[i] - lead[i - 1]))


def ages(leads, truth_rmse, rmse) -> np.ndarray:
    """A(L) = L' − L at every lead of a curve ``rmse`` against the truth curve."""
    leads = np.asarray(leads, dtype=float)
    return np.array([equivalent_lead(leads, truth_rmse, r) - lead
                     for lead, r in zip(leads, rmse, strict=True)])


def gains(leads, background_rmse, rmse) -> np.ndarray:
    """G(L) = L − L_b at every lead of the analysis-started curve ``rmse``, L_b on the
    background-started curve."""
    leads = np.asarray(leads, dtype=float)
    return np.array([lead - equivalent_lead(leads, background_rmse, r, origin=False)
                     for lead, r in zip(leads, rmse, strict=True)])


def mean_curves(ds: xr.Dataset, method: str, density: float, channel: str,
                spinup: int) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """(leads, {source: mean RMSE per lead}, number of forecasts) of one cell and channel over
    the forecasts after spin-up complete at every lead of the longest run of complete leads."""
    starts = ds["forecast_start"].values >= spinup
    values = {s: select_cell(ds[v], method, density).sel(channel=channel)
              .transpose("seed", "forecast_start", "lead_hours").values[:, starts]
              for s, v in SOURCES.items()}
    leads = ds["lead_hours"].values
    finite = np.logical_and.reduce([np.isfinite(v) for v in values.values()])
    finite = finite.reshape(-1, len(leads))
    complete = np.logical_and.accumulate(finite, axis=1)  # finite at every lead up to here
    counts = complete.sum(axis=0)
    p = int(np.flatnonzero(counts > 0).max()) + 1 if counts.any() else 0
    use = complete[:, p - 1] if p else np.zeros(len(finite), bool)
    curves = {s: v.reshape(-1, len(leads))[use, :p].mean(axis=0) for s, v in values.items()}
    return leads[:p], curves, int(use.sum())


def impact_numbers(ds: xr.Dataset, spinup_cycles: int | None = None) -> pd.DataFrame:
    """The forecast-impact table as numbers (the CSV): one row per (method, density, channel,
    lead), columns method, density, channel, lead_hours, status, n_forecasts, rmse_analysis,
    rmse_background, rmse_truth (channel units), analysis_age_hours, background_age_hours
    (A, NaN beyond the truth curve), gain_hours (G, NaN outside the background curve),
    max_lead_hours (the longest lead of the curves)."""
    spinup = spinup_of(ds, spinup_cycles)
    chans = headline_channels(ds, IMPACT_CHANNELS)
    wanted = [lead for lead in IMPACT_LEADS if lead in set(ds["lead_hours"].values.tolist())]
    rows = []
    for method, density in cells(ds):
        diverged = bool(diverged_seeds(ds, method, density))
        for channel in chans:
            leads, curves, n = mean_curves(ds, method, density, channel, spinup)
            age = {s: ages(leads, curves["truth"], curves[s]) for s in ("analysis", "background")}
            gain = gains(leads, curves["background"], curves["analysis"])
            for lead in wanted:
                row = {"method": method, "density": density, "channel": channel,
                       "lead_hours": lead, "status": "diverged" if diverged else "ok",
                       "n_forecasts": n, "max_lead_hours": float(leads.max()) if n else np.nan}
                if not diverged and lead in leads:
                    i = int(np.flatnonzero(leads == lead)[0])
                    row.update({f"rmse_{s}": float(c[i]) for s, c in curves.items()})
                    row.update(analysis_age_hours=age["analysis"][i],
                               background_age_hours=age["background"][i],
                               gain_hours=gain[i])
                rows.append(row)
    columns = ["method", "density", "channel", "lead_hours", "status", "n_forecasts",
               "rmse_analysis", "rmse_background", "rmse_truth", "analysis_age_hours",
               "background_age_hours", "gain_hours", "max_lead_hours"]
    return pd.DataFrame(rows, columns=columns)


def _hours(value: float, bound: float) -> str:
    if np.isfinite(value):
        return f"{value:.1f} h"
    return f"> {bound:g} h" if np.isfinite(bound) else "n/a"


def impact_table(ds: xr.Dataset, spinup_cycles: int | None = None) -> pd.DataFrame:
    """The forecast-impact table for reading."""
    rows = []
    for r in impact_numbers(ds, spinup_cycles).itertuples():
        row = {"method": r.method, "density": format_density(r.density),
               "channel": channel_label(ds, r.channel), "lead": f"{r.lead_hours:g} h"}
        if r.status != "ok":
            row["from analysis"] = "diverged"
        else:
            scale = display_scale(ds, r.channel)
            bound = r.max_lead_hours - r.lead_hours
            row.update({f"from {s}": format_number(scale * getattr(r, f"rmse_{s}"))
                        for s in SOURCES})
            row.update({"analysis age": _hours(r.analysis_age_hours, bound),
                        "lead time gained": (f"{r.gain_hours:.1f} h" if np.isfinite(r.gain_hours)
                                             else "n/a")})
        rows.append(row)
    columns = ["method", "density", "channel", "lead", "from analysis", "from background",
               "from truth", "analysis age", "lead time gained"]
    return pd.DataFrame(rows, columns=columns).fillna("")


def impact_notes(ds: xr.Dataset, spinup_cycles: int | None = None) -> str:
    spinup = spinup_of(ds, spinup_cycles)
    return "\n\n".join([
        f"Free forecasts of the same model from the analysis, from the background before it "
        f"and from the truth, at the same start times (cycles ≥ {spinup}, seeds pooled; the "
        f"forecasts complete at every lead): RMSE at each lead, {CONVENTIONS[DEFAULT_CONVENTION]} "
        f"(per forecast), in the channel's units.",
        "analysis age A = L′ − L: the forecast from the analysis at lead L is as good as the "
        "forecast from the truth at lead L′ (the truth curve interpolated linearly in lead "
        "through 0 at lead 0), i.e. the analysis is worth a truth A hours old (0: as good as "
        "the truth); “> x h”: L′ is beyond the longest truth forecast, x a lower bound. "
        "lead time gained G = L − L_b: the forecast from the analysis at lead L is as good as "
        "the forecast from the background at lead L_b, i.e. the analysis adds G hours of "
        "forecast skill to its background (n/a: outside the background curve's range). The "
        "CSV also has the background's age.",
        provenance(ds),
    ])
