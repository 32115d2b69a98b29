"""The cycled-training table, from the runs of run.sh.

    OUT=/tmp/cycled-training results/cycled-training/run.sh
    python results/cycled-training/summarise.py /tmp/cycled-training

One row per run and method: the 15-day cycled score at its density (channel-mean normalised analysis
RMSE after spin-up, `bench tune`'s score, bench/experiments/tune.py; ∞: diverged, with the
cycle) and the median seconds per analysis. Writes comparison.{md,csv} here and copies the runs'
config.json, log.txt and tables beside them (runs/<name>/). Nothing is computed but the table.
"""

import shutil
import sys
from pathlib import Path

import pandas as pd
import xarray as xr

from bench.experiments.tune import score

HERE = Path(__file__).parent
#: run folder -> (period, what the learned methods were trained on)
RUNS = {"valid-default": ("valid", "default"), "valid-cycled": ("valid", "cycled backgrounds"),
        "valid-backbone": ("valid", "emulator backbone, from the emulator's weights"),
        "valid-backbone-scratch": ("valid", "emulator backbone, from scratch"),
        "test-cycled": ("test", "cycled backgrounds"), "test-default": ("test", "default"),
        "test-vaevar-default-tuned": ("test", "default, λ tuned on validation"),
        "test-vaevar-cycled-tuned": ("test", "cycled backgrounds, λ tuned on validation"),
        "test-3seeds-default": ("test, 3 seeds", "default"),
        "test-3seeds-cycled-tuned": ("test, 3 seeds", "cycled backgrounds, λ tuned on validation")}
RUNS.update({name.replace("valid-", "valid-5pct-"): (period, training)
             for name, (period, training) in list(RUNS.items()) if name.startswith("valid-")})


def rows(src: Path) -> list[dict]:
    out = []
    for name, (period, training) in RUNS.items():
        path = src / name / "metrics.nc"
        if not path.exists():
            continue
        ds = xr.load_dataset(path)
        for method in ds["method"].values:
            density = float(ds["density"].values[0])
            value, status, seconds = score(ds, str(method), density)
            cycle = int(ds["diverged_cycle"].sel(method=method).max())
            out.append({"period": period, "density": density, "method": str(method),
                        "training": training,
                        "score": value, "status": status if status == "ok" else
                        f"{status} (cycle {cycle})", "seconds": seconds, "run": name})
        dest = HERE / "runs" / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "log.txt"):
            shutil.copy(src / name / file, dest / file)
        shutil.copytree(src / name / "tables", dest / "tables", dirs_exist_ok=True)
    return out


def main(src: Path) -> None:
    df = pd.DataFrame(rows(src)).sort_values(["period", "density", "method", "run"])
    df.to_csv(HERE / "comparison.csv", index=False, float_format="%.4f")
    (HERE / "comparison.md").write_text(
        "# Training on cycled backgrounds; DiffDA's denoiser from the emulator\n\n"
        "Made by `python results/cycled-training/summarise.py /tmp/cycled-training` from the "
        "runs of `results/cycled-training/run.sh` (their config.json, log.txt and tables in "
        "runs/). Score: channel-mean normalised analysis RMSE after spin-up, 15 days, "
        "seed 0 (∞: diverged); seconds: median per analysis (1 thread, shared machine).\n\n"
        + df.to_markdown(index=False, floatfmt=".3f") + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cycled-training"))
