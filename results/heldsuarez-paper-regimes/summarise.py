"""Defaults against per-density tuned settings on the paper-regime grid, per seed and paired.

    python results/heldsuarez-paper-regimes/summarise.py DEFAULT_RUN TUNED_RUN TUNED_TOML

Reads the two runs' metrics.nc (identical cycles: same truth, observations per seed, first
background and forecast model) and writes comparison.md / comparison.csv next to this file:
per method and density, the channel-mean normalised analysis RMSE (mean over channels of
RMSE / the channel's normalisation std, over cycles >= the spin-up) of each run as the mean
over seeds with the seeds' range, and tuned − default paired per seed with its between-seed
95 % interval (t over the seed differences, S − 1 degrees of freedom). "diverged (c)": the
first cycle at which any seed diverged.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

HERE = Path(__file__).resolve().parent


def per_seed_scores(run: Path) -> tuple[xr.DataArray, xr.DataArray]:
    """(score, the cycle it diverged at or -1), each (method, density, seed)."""
    ds = xr.open_dataset(run / "metrics.nc")
    rmse = ds["rmse"].sel(phase="analysis") / ds["norm_std"]
    channel_mean = rmse.mean("channel", skipna=False)  # (method, density, seed, cycle)
    scored = channel_mean.isel(cycle=slice(int(ds.attrs["spinup_cycles"]), None))
    return scored.mean("cycle", skipna=False), ds["diverged_cycle"]


def settings_text(tuned: dict, method: str, density: float) -> str:
    chosen = tuned.get("methods", {}).get(method, {}).get(f"{density:g}")
    if chosen is None:
        return "(not tuned)"
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                     for k, v in chosen.items()) or "default"


def _cell(scores: np.ndarray, diverged: np.ndarray) -> str:
    if (diverged >= 0).any():
        return f"diverged ({int(diverged[diverged >= 0].min())})"
    return f"{scores.mean():.3f} ({scores.min():.3f}–{scores.max():.3f})"


def main(default_run: Path, tuned_run: Path, tuned_toml: Path) -> None:
    base, base_div = per_seed_scores(default_run)
    tuned, tuned_div = per_seed_scores(tuned_run)
    chosen = tomllib.loads(tuned_toml.read_text())
    rows = []
    for method in tuned.method.values:
        for density in tuned.density.values:
            cell = {"method": method, "density": density}  # .sel(method=) is interpolation's
            b, t = base.sel(cell).values, tuned.sel(cell).values
            bd, td = base_div.sel(cell).values, tuned_div.sel(cell).values
            row = {"method": method, "density": density,
                   "columns": int(tuned.obs_columns.sel(density=density)),
                   "tuned settings": settings_text(chosen, method, float(density)),
                   "default": _cell(b, bd), "tuned": _cell(t, td)}
            if (bd < 0).all() and (td < 0).all():
                diff = t - b
                half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
                row["tuned − default"] = f"{diff.mean():+.4f} ± {half:.4f}"
                row["significant"] = "yes" if abs(diff.mean()) > half else "no"
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "comparison.csv", index=False)
    command = " ".join(["python", "results/heldsuarez-paper-regimes/summarise.py", *sys.argv[1:]])
    (HERE / "comparison.md").write_text(
        f"# Paper regimes: defaults vs per-density tuned settings\n\nMade by:\n\n```bash\n"
        f"{command}\n```\n\n{__doc__.split(chr(10) * 2)[2]}\n\n"
        f"{table.fillna('').to_markdown(index=False)}\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: summarise.py DEFAULT_RUN TUNED_RUN TUNED_TOML")
    main(*(Path(a) for a in sys.argv[1:]))
