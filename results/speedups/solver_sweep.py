"""Summarise the 3DVar solver sweep's runs (validation period): per run folder and density, the
channel-mean normalised analysis RMSE after spin-up (bench tune's score), the median cost
evaluations and iterations per analysis, the largest iteration count and the median wall time.

    python results/speedups/solver_sweep.py /tmp/cg-sweep/*/    # the folders of README's commands
"""

import sys
from pathlib import Path

import numpy as np
import xarray as xr

from bench.experiments.tune import score

print("| run | density | score | evaluations (median) | iterations (median / max) | "
      "wall s (median) |\n|:--|--:|--:|--:|--:|--:|")
for folder in sys.argv[1:]:
    path = Path(folder) / "metrics.nc"
    if not path.exists():
        continue
    ds = xr.load_dataset(path)
    for density in ds["density"].values:
        value, status, seconds = score(ds, "3dvar", float(density))
        cell = {"method": "3dvar", "density": density}
        ev = ds["diag_evaluations"].sel(cell).values
        it = ds["diag_iterations"].sel(cell).values
        shown = f"{value:.4f}" if status == "ok" else status
        print(f"| {Path(folder).name} | {density:g} | {shown} | {np.nanmedian(ev):g} | "
              f"{np.nanmedian(it):g} / {np.nanmax(it):g} | {seconds:.3f} |")
