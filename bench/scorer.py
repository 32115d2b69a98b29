"""Per-cycle scores and the ``metrics.nc`` schema, in one place (DESIGN.md §4, §6).

The cycle hands each cycle's states to a ``CellScores`` (``score``, ``record_analysis``,
``record_forecast``); ``CellScores.dataset`` is one cell's Dataset; ``merge`` stacks cells into
metrics.nc. The runner, the tables, the figures and ``bench compare`` read these names only.

metrics.nc — dims ``method`` (str), ``density`` (float, observed fraction of grid points),
``seed`` (int), ``cycle`` (int, 0-based), ``phase`` ("background", "analysis"), ``channel``
(str, e.g. "z500"), ``innovation_bin`` (float, 42: bin centres of the innovation histograms in
units of norm_std, −∞ and +∞ for the underflow and overflow bins); coordinates ``valid_time``
(cycle), ``units`` (channel, SI, e.g. "m**2 s**-2"), ``norm_std`` (channel, channel units: the
world's normalisation std, the scale of "normalised" errors such as the divergence test's) and
``innovation_bin_lower``, ``innovation_bin_upper`` (innovation_bin: the bin edges, bins
[lower, upper); bench/innovations.histogram_bins), ``obs_columns`` (density: observed columns
per cycle; "elements" sampling: the equivalent elements / observed channels) and
``obs_spacing_km`` (density, km: their expected mean spacing on the world's grid; both
bench/obs_regime.py, absent from files written before them). Variables (units in brackets;
NaN where not applicable or after a stop):

    rmse               (…, cycle, phase, channel)  latitude-weighted RMSE vs truth [channel units]
    bias               (…, cycle, phase, channel)  latitude-weighted mean of x − truth [channel]
    acc                (…, cycle, phase, channel)  anomaly correlation vs the training-period
                                                    climatology [1]
    spread             (…, cycle, phase, channel)  ensemble spread: √(latitude-weighted mean of
                                                    the members' variance, N − 1) [channel];
                                                    NaN for deterministic methods
    crps               (…, cycle, phase, channel)  latitude-weighted fair CRPS of the members
                                                    (bench/metrics.crps_fair) [channel]; NaN for
                                                    deterministic methods
    rank_histogram     (…, phase, channel, rank)  area fraction of the truth's rank among the
                                    members (bench/metrics.rank_histogram), mean over the
                                    cycles ≥ spinup_cycles [1]; ``rank`` 0 … N of the largest
                                    ensemble of the file; NaN for ranks beyond a cell's N and
                                    for deterministic methods
    obs_count          (…, cycle, channel)  observations of the channel at the analysis time
    omb_mean, omb_rms  (…, cycle, channel)  O − B = y − H x_b [channel]     (bench/innovations.py;
    oma_mean, oma_rms  (…, cycle, channel)  O − A = y − H x_a [channel]      NaN where the
    desroziers_r       (…, cycle, channel)  mean (O − A)(O − B) [channel²]   channel has no
    desroziers_hbh     (…, cycle, channel)  mean (H x_a − H x_b)(O − B) [channel²]  observation)
    obs_error_var      (…, cycle, channel)  mean σ_o² given to the method [channel²]
    omb_histogram      (…, channel, innovation_bin)  counts of (O − B) / norm_std and of
    oma_histogram      (…, channel, innovation_bin)  (O − A) / norm_std [1], summed over the
                                    cycles ≥ the run's spinup_cycles (attribute; fixed at run
                                    time); their sum over bins is that of obs_count
    analysis_seconds   (…, cycle)   wall time of ``analyse`` [s]
    peak_memory_bytes  (…, cycle)   memory the analysis added [B] (attr peak_memory_kind says how)
    forecast_seconds   (…, cycle)   wall time of the 6-hour forecast after the analysis (every
                                    member, in batches) [s]; NaN on the last cycle
    n_obs              (…, cycle)   observations given to the method (a window's: all of them)
    n_points           (…, cycle)   distinct observed grid points at the analysis time
    dropped_obs        (…, cycle)   observations dropped (missing truth) before the method
    diag_<key>         (…, cycle)   the method's diagnostics (methods/base STANDARD_DIAGNOSTICS:
                                    evaluations, iterations, j_min; others free)
    members            (…)          ensemble size (0: deterministic)
    window_hours       (…)          observation window of the method (0: 3D)
    status             (…)          "ok", "diverged" or "error"
    diverged_cycle     (…)          first cycle that stopped the cell (−1: none)
    diverged_reason    (…)          why
    forecast_rmse      (…, forecast_start, lead_hours, channel)  free forecasts from analyses
                                    (only with --forecast-every) [channel units]
    background_forecast_rmse, truth_forecast_rmse  (same dims)  the same model's forecasts from
                                    the background (before the analysis) and from the truth
                                    at the same starts: the references of "lead time gained"

where … is (method, density, seed). Attributes: device, world, model, spinup_cycles, command,
config (the RunConfig JSON), peak_memory_kind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from bench import innovations, metrics
from bench.state import StateSpec
from methods.base import Observations

PHASES = ("background", "analysis")
#: Variables with dims (cycle, phase, channel).
PER_CHANNEL = ("rmse", "bias", "acc", "spread", "crps")
#: Variables with dims (cycle, channel): observation-space diagnostics (bench/innovations.py).
PER_OBSERVED_CHANNEL = innovations.NAMES
#: Histogram counts with dims (channel, innovation_bin), summed over the cycles after spin-up.
HISTOGRAMS = innovations.HISTOGRAM_NAMES
#: Free forecasts with dims (forecast_start, lead_hours, channel), by where they start.
FORECASTS = ("forecast_rmse", "background_forecast_rmse", "truth_forecast_rmse")
#: Variables with dim (cycle,).
PER_CYCLE = ("analysis_seconds", "peak_memory_bytes", "forecast_seconds", "n_obs", "n_points",
             "dropped_obs")
CELL_DIMS = ("method", "density", "seed")
#: Coordinates of ``density`` -> their key in bench/obs_regime.regimes.
REGIME_COORDS = {"obs_columns": "columns", "obs_spacing_km": "spacing_km"}


def scores(x: torch.Tensor, truth: torch.Tensor, clim: torch.Tensor, spec: StateSpec,
           weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical RMSE, bias and ACC per channel of one normalised state (C, H, W): 3 × (C,)."""
    std = torch.tensor(spec.std)
    x64, t64, c64 = x[None].double().cpu(), truth[None].double().cpu(), clim.double().cpu()
    return (
        (metrics.rmse(x64, t64, weights) * std).numpy(),
        (metrics.bias(x64, t64, weights) * std).numpy(),
        metrics.acc(x64, t64, c64, weights).numpy(),
    )


def spread(members: torch.Tensor, spec: StateSpec, weights: np.ndarray) -> np.ndarray:
    """Ensemble spread per channel in physical units, (C,), from members (N, C, H, W):
    √(Σ_h w_h mean_w var_N(x)) with the unbiased (N − 1) variance; NaN for N < 2."""
    if members.shape[0] < 2:
        return np.full(members.shape[1], np.nan)
    var = members.double().cpu().var(dim=0)  # (C, H, W)
    w = torch.as_tensor(weights, dtype=torch.float64)[:, None]
    return (torch.sqrt((var * w).mean(dim=(-2, -1))) * torch.tensor(spec.std)).numpy()


def crps(members: torch.Tensor, truth: torch.Tensor, spec: StateSpec,
         weights: np.ndarray) -> np.ndarray:
    """Fair CRPS per channel in physical units, (C,), of members (N, C, H, W); NaN for N < 2."""
    if members.shape[0] < 2:
        return np.full(members.shape[1], np.nan)
    value = metrics.crps_fair(members.double().cpu(), truth.double().cpu(), weights)
    return (value * torch.tensor(spec.std)).numpy()


class CellScores:
    """The records of one (method, density, seed) cell; see the module docstring for names."""

    def __init__(self, cycles: int, spec: StateSpec, members: int = 0, window_hours: int = 0,
                 forecast_starts: np.ndarray | None = None, forecast_leads: int = 0,
                 spinup_cycles: int = 0):
        self.spec, self.cycles, self.spinup_cycles = spec, cycles, spinup_cycles
        c = len(spec.channels)
        self.per_channel = {name: np.full((cycles, len(PHASES), c), np.nan)
                            for name in PER_CHANNEL}
        self.per_cycle = {name: np.full(cycles, np.nan) for name in PER_CYCLE}
        self.per_observed_channel = {name: np.full((cycles, c), np.nan)
                                     for name in PER_OBSERVED_CHANNEL}
        self.histograms = {name: np.zeros((c, innovations.N_BINS), dtype=np.int64)
                           for name in HISTOGRAMS}
        # rank-histogram sums and the number of cycles in them, per phase
        self.ranks = np.zeros((len(PHASES), c, members + 1))
        self.rank_cycles = np.zeros(len(PHASES), dtype=np.int64)
        self.diagnostics: list[dict] = [{} for _ in range(cycles)]
        self.members, self.window_hours = members, window_hours
        self.status, self.stopped_at, self.reason = "ok", -1, ""
        self.forecast_starts = forecast_starts
        self.forecasts = ({} if forecast_starts is None else
                          {name: np.full((len(forecast_starts), forecast_leads, c), np.nan)
                           for name in FORECASTS})

    def score(self, k: int, phase: str, x: torch.Tensor, truth: torch.Tensor, clim: torch.Tensor,
              weights: np.ndarray, members: torch.Tensor | None = None) -> None:
        """RMSE, bias and ACC of state x (and the spread of its members) at cycle k."""
        p = PHASES.index(phase)
        r, b, a = scores(x, truth, clim, self.spec, weights)
        self.per_channel["rmse"][k, p], self.per_channel["bias"][k, p] = r, b
        self.per_channel["acc"][k, p] = a
        if members is not None:
            # one float64 CPU copy of the members for the three ensemble scores
            members, truth = members.double().cpu(), truth.double().cpu()
            self.per_channel["spread"][k, p] = spread(members, self.spec, weights)
            self.per_channel["crps"][k, p] = crps(members, truth, self.spec, weights)
            if k >= self.spinup_cycles and members.shape[0] + 1 == self.ranks.shape[-1]:
                self.ranks[p] += metrics.rank_histogram(members, truth, weights).numpy()
                self.rank_cycles[p] += 1

    def score_observations(self, k: int, obs: Observations, x_b: torch.Tensor,
                           x_a: torch.Tensor) -> None:
        """O − B, O − A and Desroziers statistics of cycle k, and from the end of the spin-up on
        its O − B and O − A histograms (bench/innovations.py)."""
        for name, values in innovations.innovation_statistics(obs, x_b, x_a, self.spec).items():
            self.per_observed_channel[name][k] = values
        if k >= self.spinup_cycles:
            for name, counts in innovations.innovation_histograms(obs, x_b, x_a,
                                                                  self.spec).items():
                self.histograms[name] += counts

    def record(self, k: int, **values: float) -> None:
        """Per-cycle numbers (PER_CYCLE names)."""
        for name, value in values.items():
            self.per_cycle[name][k] = value

    def record_diagnostics(self, k: int, diagnostics: dict) -> None:
        self.diagnostics[k] = dict(diagnostics)

    def stop(self, k: int, reason: str, status: str = "diverged") -> None:
        self.status, self.stopped_at, self.reason = status, k, reason

    def analysis_error(self, k: int) -> float:
        """Cycle k's analysis RMSE, normalised, mean over channels (the divergence test)."""
        return float((self.per_channel["rmse"][k, PHASES.index("analysis")] / self.spec.std)
                     .mean())

    def dataset(self, times: np.ndarray) -> xr.Dataset:
        """The cell as a Dataset with dims (cycle, phase, channel, innovation_bin); ``times``
        (cycles,)."""
        dims3 = ("cycle", "phase", "channel")
        data = {name: (dims3, v) for name, v in self.per_channel.items()}
        data.update({name: ("cycle", v) for name, v in self.per_cycle.items()})
        data.update({name: (("cycle", "channel"), v)
                     for name, v in self.per_observed_channel.items()})
        data.update({name: (("channel", "innovation_bin"), v)
                     for name, v in self.histograms.items()})
        with np.errstate(invalid="ignore", divide="ignore"):
            ranks = self.ranks / self.rank_cycles[:, None, None]  # NaN: no cycle counted
        data["rank_histogram"] = (("phase", "channel", "rank"), ranks)
        data.update({
            "members": ((), self.members), "window_hours": ((), self.window_hours),
            "status": ((), self.status), "diverged_cycle": ((), self.stopped_at),
            "diverged_reason": ((), self.reason)})
        for key in sorted({key for d in self.diagnostics for key in d}):
            values = np.full(self.cycles, np.nan)
            for i, d in enumerate(self.diagnostics):
                if isinstance(d.get(key), int | float):
                    values[i] = d[key]
            data[f"diag_{key}"] = ("cycle", values)
        coords = {"cycle": np.arange(self.cycles), "phase": list(PHASES),
                  "channel": list(self.spec.names), "valid_time": ("cycle", times),
                  "units": ("channel", [ch.units for ch in self.spec.channels]),
                  "norm_std": ("channel", np.asarray(self.spec.std, dtype=np.float64)),
                  "rank": np.arange(self.ranks.shape[-1])}
        centre, lower, upper = innovations.histogram_bins()
        coords.update(innovation_bin=centre, innovation_bin_lower=("innovation_bin", lower),
                      innovation_bin_upper=("innovation_bin", upper))
        if self.forecasts:
            data.update({name: (("forecast_start", "lead_hours", "channel"), v)
                         for name, v in self.forecasts.items()})
            coords["forecast_start"] = self.forecast_starts
            leads = self.forecasts["forecast_rmse"].shape[1]
            coords["lead_hours"] = 6 * np.arange(1, leads + 1)
        return xr.Dataset(data, coords=coords)


def merge(cells: dict[tuple[str, float, int], xr.Dataset], methods, densities, seeds,
          attrs: dict, regimes: list[dict] | None = None) -> xr.Dataset:
    """Cells -> metrics.nc: dims (method, density, seed, cycle, phase, channel). ``regimes``
    (bench/obs_regime.regimes, one per density) become the coordinates ``obs_columns`` and
    ``obs_spacing_km`` of ``density``."""
    nested = [[[cells[(m, d, s)] for s in seeds] for d in densities] for m in methods]
    # join="outer": cells of ensembles of different sizes pad the shorter "rank" axes with NaN
    ds = xr.combine_nested(nested, concat_dim=list(CELL_DIMS), combine_attrs="drop",
                           join="outer")
    ds = ds.assign_coords(method=list(methods), density=list(densities), seed=list(seeds))
    ds = ds.transpose(*CELL_DIMS, ...)  # combine_nested stacks the innermost list first
    if regimes is not None:
        ds = ds.assign_coords({name: ("density", [float(r[key]) for r in regimes])
                               for name, key in REGIME_COORDS.items()})
    ds.attrs.update(attrs)
    return ds


def timing_frame(ds: xr.Dataset) -> pd.DataFrame:
    """One row per analysis: method, density, seed, cycle, seconds, peak bytes, forecast
    seconds, device (timing.csv)."""
    columns = ["analysis_seconds", "peak_memory_bytes", "forecast_seconds"]
    frame = ds[[c for c in columns if c in ds]].to_dataframe().reset_index()
    frame = frame[["method", "density", "seed", "cycle", *[c for c in columns if c in ds]]]
    frame["device"] = ds.attrs.get("device", "")
    return frame.dropna(subset=["analysis_seconds"])


def select_cell(ds: xr.Dataset, method: str, density: float, seed: int | None = None):
    """``ds`` at one (method, density[, seed]) — ``ds.sel(method=…)`` would pass ``method`` as
    xarray's interpolation-method argument."""
    where = {"method": method, "density": density}
    if seed is not None:
        where["seed"] = seed
    return ds.sel(where)
