"""Summarise a solver or sampling sweep's runs (validation period): per run folder and density, the
channel-mean normalised analysis RMSE after spin-up (bench tune's score), the median cost
evaluations and iterations per analysis, the largest iteration count and the median wall time.

    python results/speedups/solver_sweep.py /tmp/cg-sweep/*/    # the folders of README's commands
    python results/speedups/solver_sweep.py --method vaevar /tmp/vv-sweep/*/

Diagnostics a method does not report are shown as "—".
"""

import sys
from pathlib import Path

import numpy as np
import xarray as xr

from bench.experiments.tune import score

args = sys.argv[1:]
method = "3dvar"
if args[:1] == ["--method"]:
    method, args = args[1], args[2:]


def _median_max(ds, name, cell):
    if name not in ds:
        return "—", "—"
    values = ds[name].sel(cell).values
    return f"{np.nanmedian(values):g}", f"{np.nanmax(values):g}"


print("| run | density | score | evaluations (median) | iterations (median / max) | "
      "wall s (median) |\n|:--|--:|--:|--:|--:|--:|")
for folder in args:
    path = Path(folder) / "metrics.nc"
    if not path.exists():
        continue
    ds = xr.load_dataset(path)
    for density in ds["density"].values:
        value, status, seconds = score(ds, method, float(density))
        cell = {"method": method, "density": density}
        ev, _ = _median_max(ds, "diag_evaluations", cell)
        it, it_max = _median_max(ds, "diag_iterations", cell)
        shown = f"{value:.4f}" if status == "ok" else status
        print(f"| {Path(folder).name} | {density:g} | {shown} | {ev} | {it} / {it_max} | "
              f"{seconds:.3f} |")
