"""What a report reads from metrics.nc: its rows (method, density), the headline channels, the
cycles after spin-up, diverged seeds, ensemble sizes.

Schema names (variables, dims, phases) and the selection of one cell come from
``bench.scorer``, which owns the metrics.nc schema; this module only chooses what to report.
Old metrics.nc files (written before ``spread``, ``forecast_seconds``, ``members`` and
``window_hours`` existed) read as all-deterministic runs without forecast times.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from bench.scorer import REGIME_COORDS, select_cell
from bench.tuned import DEFAULT, TUNED, kind_at

#: Channels reported in the skill table, in this order (those missing from a Dataset are skipped).
HEADLINE = ("z500", "t850", "q700", "u850", "t2m", "u10", "msl")


def headline_channels(ds: xr.Dataset, channels: tuple[str, ...] | None = None) -> list[str]:
    """The channels of ``channels`` (default ``HEADLINE``) present in ``ds``, in that order."""
    wanted = HEADLINE if channels is None else tuple(channels)
    present = [c for c in wanted if c in set(ds["channel"].values.tolist())]
    if not present:
        raise ValueError(
            f"none of the channels {', '.join(wanted)} is in the metrics (channels: "
            f"{', '.join(map(str, ds['channel'].values))}); pass channels=[...] to choose others"
        )
    return present


def spinup_of(ds: xr.Dataset, spinup_cycles: int | None = None) -> int:
    """``spinup_cycles`` if given, else the Dataset's ``spinup_cycles`` attribute."""
    if spinup_cycles is None:
        if "spinup_cycles" not in ds.attrs:
            raise ValueError("the metrics have no 'spinup_cycles' attribute; pass spinup_cycles=")
        spinup_cycles = ds.attrs["spinup_cycles"]
    spinup = int(spinup_cycles)
    if not (ds["cycle"].values >= spinup).any():
        raise ValueError(
            f"no cycle is left after a spin-up of {spinup} cycles (cycles "
            f"{int(ds['cycle'].min())}..{int(ds['cycle'].max())}); pass a smaller spinup_cycles"
        )
    return spinup


def after_spinup(da, spinup: int):
    """The cycles whose number is ``>= spinup`` (the cycle coordinate, not the position)."""
    return da.isel(cycle=np.flatnonzero(da["cycle"].values >= spinup))


def cells(ds: xr.Dataset) -> list[tuple[str, float]]:
    """(method, density) pairs in the Dataset's order: the rows of every table."""
    return [(str(m), float(d)) for m in ds["method"].values for d in ds["density"].values]


def diverged_seeds(ds: xr.Dataset, method: str, density: float) -> list[tuple[int, int, str]]:
    """(seed, diverged cycle, reason) of each seed of a cell that diverged."""
    cell = select_cell(ds[["status", "diverged_cycle", "diverged_reason"]], method, density)
    out = []
    for seed in ds["seed"].values:
        one = cell.sel(seed=seed)
        if str(one["status"].values) != "ok":
            out.append((int(seed), int(one["diverged_cycle"]), str(one["diverged_reason"].values)))
    return out


def members_of(ds: xr.Dataset, method: str, density: float) -> int:
    """A cell's ensemble size (0: deterministic; also for files without ``members``)."""
    if "members" not in ds:
        return 0
    return int(select_cell(ds["members"], method, density).max())


def has_ensembles(ds: xr.Dataset) -> bool:
    """Whether any cell is an ensemble method with a recorded spread."""
    return "spread" in ds and "members" in ds and bool((ds["members"] > 0).any())


def observation_regimes(ds: xr.Dataset) -> tuple[dict[float, tuple[float, float]], str]:
    """Each density's observed columns per cycle and their mean spacing [km]
    (bench/obs_regime.py), and where they come from.

    Returns ({density: (columns, spacing_km)}, source), source one of "recorded" (metrics.nc's
    ``obs_columns`` and ``obs_spacing_km``), "grid" (a file written before them: computed from
    the grid on the card of its ``world`` attribute, with the sampling of its ``config``) or
    "none" (neither: NaN, shown as "—").
    """
    densities = [float(d) for d in ds["density"].values]
    if all(name in ds.coords for name in REGIME_COORDS):
        columns, spacing = (ds[name].values for name in REGIME_COORDS)
        return ({d: (float(n), float(k)) for d, n, k in zip(densities, columns, spacing,
                                                           strict=True)}, "recorded")
    try:
        from bench.obs_regime import regimes
        from bench.worlds import card_grid

        grid = card_grid(str(ds.attrs["world"]))
        config = json.loads(ds.attrs.get("config", "{}"))
        sampling = config.get("observations", {}).get("sampling",
                                                      config.get("obs_sampling", "columns"))
        found = regimes(grid, densities, sampling)
    except (KeyError, ValueError, OSError):  # no world attribute or card, an unreadable config
        return {d: (np.nan, np.nan) for d in densities}, "none"
    return {r["density"]: (r["columns"], r["spacing_km"]) for r in found}, "grid"


def regime_note(ds: xr.Dataset) -> str:
    """What the obs columns and spacing columns are, and where this file's come from."""
    _, source = observation_regimes(ds)
    text = ("obs columns: grid columns observed per cycle (\"elements\" sampling: the "
            "equivalent elements / observed channels); spacing: their expected mean spacing in "
            "km. Columns are drawn uniformly over grid points, not over area, so on this "
            "latitude–longitude grid they are denser towards the poles; the spacing is the mean "
            "over the drawn columns of √(area of the column's grid cell × grid points / columns), "
            "which for columns placed evenly is the equal-area spacing √(4πR²/N), R = 6371 km "
            "(bench/obs_regime.py).")
    if source == "grid":
        text += (f" This metrics.nc predates obs_columns and obs_spacing_km: they are computed "
                 f"from the grid on the card of its world ({ds.attrs['world']}).")
    elif source == "none":
        text += (" This metrics.nc records neither and names no world with a card: they show "
                 "as —.")
    return text


# ----------------------------------------------------------------------------- tuned settings
def tuned_of(ds: xr.Dataset) -> dict:
    """The run's per-density tuned settings (config.json's ``tuned``, bench/tuned.py; ``{}``
    for an untuned run or a file without a config)."""
    try:
        return dict(json.loads(ds.attrs.get("config", "{}")).get("tuned", {}))
    except (ValueError, AttributeError):
        return {}


def settings_kind(ds: xr.Dataset, method: str, density: float) -> str:
    """"tuned" when the cell ran with settings of ``bench tune``, else "default"."""
    return kind_at(tuned_of(ds), method, density)


def method_label(ds: xr.Dataset, method: str, density: float | None = None) -> str:
    """A row's method as tables show it: "3dvar (tuned)" when tuned (at ``density``, or at
    any density of the run when None), else the name alone."""
    tuned = tuned_of(ds)
    densities = [float(d) for d in ds["density"].values] if density is None else [density]
    return f"{method} ({TUNED})" if any(kind_at(tuned, method, d) == TUNED
                                        for d in densities) else method


def tuned_note(ds: xr.Dataset) -> str:
    """The notes' sentence on tuned rows and their values ("" for an untuned run)."""
    tuned = tuned_of(ds)
    if not tuned:
        return ""
    values = "; ".join(
        f"{method} at {float(key):g}: " + (", ".join(f"{k}={v}" for k, v in s.items())
                                           or "its defaults")
        for method, by_density in tuned.items() for key, s in by_density.items())
    return (f"({TUNED}): settings chosen per density on the validation period by `python -m "
            f"bench tune` (the same grid budget for every method), then frozen for these "
            f"cycles: {values}. Other rows: {DEFAULT} settings (and the run's --set values).")
