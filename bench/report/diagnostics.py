"""Observation-space diagnostics: are a method's B and R consistent with what it sees?

From the per-cycle, per-channel statistics metrics.nc records (bench/innovations.py, written
by bench/scorer.py), pooled over the cycles after spin-up of every seed with observation-count
weights n_k (so the pooled numbers are those of all the observations together):

    O − B mean  Σ n_k mean_k / Σ n_k                 rms  √(Σ n_k rms_k² / Σ n_k)
    O − A mean, rms  likewise (y − H x_a)
    σ_o (Desroziers)  √(Σ n_k desroziers_r_k / Σ n_k)       E[(O − A)(O − B)] = R
    σ_o (given)       √(Σ n_k obs_error_var_k / Σ n_k)      the R the method was given
    σ_b (Desroziers)  √(Σ n_k desroziers_hbh_k / Σ n_k)     E[(Hx_a − Hx_b)(O − B)] = HBHᵀ
    χ²/N              Σ_k 2 J_min,k / Σ_k n_obs,k          ≈ 1 when B and R are right

(Desroziers et al. 2005, QJRMS 131, 3385, eqs. 1–3, diagonal per channel; χ²: Talagrand's
E[2 J_min] = number of observations, for variational methods that report ``diag_j_min`` —
"—" for the others.) A σ_o (Desroziers) well above σ_o (given) says the method trusts the
observations too much (its R is too small, or its B too large); O − A rms near O − B rms says
the analysis barely moved towards the observations. A negative pooled mean product has no
square root ("n/a"; the CSV keeps the means).

The individual innovations are not stored; besides these per-cycle aggregates, newer metrics.nc
files keep histograms of O − B and O − A (``omb_histogram``, ``oma_histogram``, summed over the
cycles after the run's spin-up), drawn with O − B and O − A rms against cycle by
bench/report/diagnostic_plots.py. Headline channels without observations are left
out (named in the notes); a metrics.nc without the variables (written before them) gets no
diagnostics table. A cell that diverged for any seed has no numbers, as in the skill table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bench.report.diagnostic_plots import has_histograms
from bench.report.formatting import (
    NOT_APPLICABLE,
    channel_label,
    channel_units,
    display_scale,
    format_count,
    format_density,
    format_number,
)
from bench.report.render import provenance
from bench.report.selection import (
    after_spinup,
    cells,
    diverged_seeds,
    headline_channels,
    spinup_of,
)
from bench.scorer import select_cell

#: The per-cycle, per-channel variables the table needs (bench/innovations.NAMES).
OBS_VARIABLES = ("obs_count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "desroziers_r",
                 "desroziers_hbh", "obs_error_var")
#: The variational methods' cost at the analysis (methods/base STANDARD_DIAGNOSTICS).
J_MIN = "diag_j_min"
#: CSV column -> (displayed header, kind): "value" in channel units, "sigma" (a √ of units²).
SHOWN = {"omb_mean": ("O−B mean", "value"), "omb_rms": ("O−B rms", "value"),
         "oma_mean": ("O−A mean", "value"), "oma_rms": ("O−A rms", "value"),
         "sigma_o_desroziers": ("σ_o Desroziers", "value"),
         "sigma_o_given": ("σ_o given", "value"),
         "sigma_b_desroziers": ("σ_b Desroziers", "value")}


def has_diagnostics(ds: xr.Dataset) -> bool:
    """Whether the metrics record the observation-space statistics."""
    return all(name in ds for name in OBS_VARIABLES)


def observed_channels(ds: xr.Dataset, channels=None) -> tuple[list[str], list[str]]:
    """(headline channels with observations in any cell, those without)."""
    counts = ds["obs_count"].sum([d for d in ds["obs_count"].dims if d != "channel"])
    chans = headline_channels(ds, channels)
    with_obs = [c for c in chans if float(counts.sel(channel=c)) > 0]
    return with_obs, [c for c in chans if c not in with_obs]


def pooled(cell: xr.Dataset, channel: str) -> dict[str, float]:
    """The count-weighted pooled statistics of one cell and channel over its (seed, cycle)
    values (the module docstring), as CSV columns."""
    one = cell.sel(channel=channel)
    n = np.nan_to_num(one["obs_count"].values.ravel())
    total = n.sum()

    def mean(name: str, square: bool = False) -> float:
        v = one[name].values.ravel()
        keep = n > 0
        if not keep.any():
            return np.nan
        v = v[keep] ** 2 if square else v[keep]
        return float((n[keep] * v).sum() / total)

    out = {"obs_count": float(total), "omb_mean": mean("omb_mean"),
           "omb_rms": np.sqrt(mean("omb_rms", True)), "oma_mean": mean("oma_mean"),
           "oma_rms": np.sqrt(mean("oma_rms", True)),
           "desroziers_r": mean("desroziers_r"), "obs_error_var": mean("obs_error_var"),
           "desroziers_hbh": mean("desroziers_hbh")}
    with np.errstate(invalid="ignore"):
        out.update(sigma_o_desroziers=float(np.sqrt(out["desroziers_r"])),
                   sigma_o_given=float(np.sqrt(out["obs_error_var"])),
                   sigma_b_desroziers=float(np.sqrt(out["desroziers_hbh"])))
    return out


def chi2_per_obs(cell: xr.Dataset) -> float:
    """Σ 2 J_min / Σ n_obs over the cycles where the method reported J_min (NaN if none)."""
    if J_MIN not in cell:
        return np.nan
    j, n = cell[J_MIN].values.ravel(), cell["n_obs"].values.ravel()
    keep = np.isfinite(j) & np.isfinite(n) & (n > 0)
    return float(2.0 * j[keep].sum() / n[keep].sum()) if keep.any() else np.nan


def diagnostics_numbers(ds: xr.Dataset, spinup_cycles: int | None = None,
                        channels=None) -> pd.DataFrame:
    """The diagnostics table as numbers (the CSV): one row per (method, density, observed
    headline channel), columns method, density, channel, units, status, obs_count, omb_mean,
    omb_rms, oma_mean, oma_rms, desroziers_r, obs_error_var, desroziers_hbh (units²),
    sigma_o_desroziers, sigma_o_given, sigma_b_desroziers (units), chi2_per_obs (per method
    and density, repeated on its channels). Diverged cells: status "diverged", NaN."""
    spinup = spinup_of(ds, spinup_cycles)
    names = [*OBS_VARIABLES, "n_obs", *([J_MIN] if J_MIN in ds else [])]
    kept = after_spinup(ds[names], spinup)
    chans, _ = observed_channels(ds, channels)
    rows = []
    for method, density in cells(ds):
        cell = select_cell(kept, method, density)
        diverged = bool(diverged_seeds(ds, method, density))
        chi2 = np.nan if diverged else chi2_per_obs(cell)
        for channel in chans:
            row = {"method": method, "density": density, "channel": channel,
                   "units": channel_units(ds, channel),
                   "status": "diverged" if diverged else "ok"}
            if not diverged:
                row.update(pooled(cell, channel))
            row["chi2_per_obs"] = chi2
            rows.append(row)
    columns = ["method", "density", "channel", "units", "status", "obs_count", "omb_mean",
               "omb_rms", "oma_mean", "oma_rms", "desroziers_r", "obs_error_var",
               "desroziers_hbh", "sigma_o_desroziers", "sigma_o_given", "sigma_b_desroziers",
               "chi2_per_obs"]
    return pd.DataFrame(rows, columns=columns)


def diagnostics_table(ds: xr.Dataset, spinup_cycles: int | None = None,
                      channels=None) -> pd.DataFrame:
    """The diagnostics table for reading: channel with its displayed units, numbers with 3
    significant digits (humidity in g kg⁻¹), χ²/N on the first channel row of its cell."""
    numbers = diagnostics_numbers(ds, spinup_cycles, channels)
    rows, previous = [], None
    for r in numbers.itertuples():
        row = {"method": r.method, "density": format_density(r.density),
               "channel": channel_label(ds, r.channel)}
        if r.status != "ok":
            row["observations"] = "diverged"
        else:
            scale = display_scale(ds, r.channel)
            row["observations"] = format_count(r.obs_count)
            row.update({label: format_number(scale * getattr(r, key))
                        for key, (label, _) in SHOWN.items()})
        first = (r.method, r.density) != previous
        row["χ²/N"] = ("" if not first or r.status != "ok" else NOT_APPLICABLE
                       if np.isnan(r.chi2_per_obs) else format_number(r.chi2_per_obs))
        previous = (r.method, r.density)
        rows.append(row)
    columns = ["method", "density", "channel", "observations",
               *(label for label, _ in SHOWN.values()), "χ²/N"]
    return pd.DataFrame(rows, columns=columns).fillna("")


def diagnostics_notes(ds: xr.Dataset, spinup_cycles: int | None = None, channels=None) -> str:
    spinup = spinup_of(ds, spinup_cycles)
    _, unobserved = observed_channels(ds, channels)
    lines = [
        f"Observation-space statistics per method, density and headline channel, pooled over "
        f"the cycles ≥ {spinup} of seeds {', '.join(str(int(s)) for s in ds['seed'].values)} "
        f"with observation-count weights, in the channel's units (q in g kg⁻¹): a mean is "
        f"the mean over all those observations and an rms their root-mean-square (√ of the "
        f"count-weighted mean of the per-cycle rms², i.e. the √(mean square) convention, not "
        f"the time-mean of per-cycle rms the RMSE tables use). O−B = y − H x_b "
        f"(innovation), O−A = y − H x_a (residual). σ_o Desroziers = √ mean (O−A)(O−B), to "
        f"compare with σ_o given = √ mean σ_o² (the R the method was given); σ_b Desroziers = "
        f"√ mean (H x_a − H x_b)(O−B), the background error in observation space (Desroziers "
        f"et al. 2005). Both estimates are right only when the method's B and R are: a σ_o "
        f"Desroziers far from σ_o given points at a mis-specified R or B.",
        f"χ²/N = Σ 2 J_min / Σ n_obs over the same cycles, for methods that report J at the "
        f"analysis (diag_j_min; ≈ 1 when B and R are right; {NOT_APPLICABLE}: not reported), "
        f"one number per method and density.",
        histograms_note(ds),
    ]
    if unobserved:
        lines.append(f"No observations of {', '.join(unobserved)}: left out.")
    lines.append(provenance(ds))
    return "\n\n".join(lines)



def histograms_note(ds: xr.Dataset) -> str:
    """Where the distributions are drawn (the old wording for files without histograms)."""
    if not has_histograms(ds):
        return ("Only per-cycle aggregates are stored (no histograms of individual innovations); "
                "figures/innovations_*.png show O−B and O−A rms against cycle.")
    return (f"figures/innovations_*.png show O−B and O−A rms against cycle; "
            f"figures/innovation_histogram_*.png their histograms, summed over the cycles ≥ "
            f"{int(ds.attrs.get('spinup_cycles', 0))} (the run's spin-up) of every seed, with "
            f"N(0, σ_o² given) for reference.")
