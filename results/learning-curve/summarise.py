"""The data-volume learning curve's table and figure, from the runs of run.sh.

    OUT=/tmp/learning-curve results/learning-curve/run.sh      # the runs (hours on 2 cores)
    python results/learning-curve/summarise.py /tmp/learning-curve

For each training volume (1, 2, 5 years of heldsuarez-5.625-long) and method: the 15-day cycled
analysis score on the long world's test period (channel-mean normalised analysis RMSE after
spin-up, `bench tune`'s score: bench/experiments/tune.py) at each density, and `bench check`'s
one-analysis ratio (analysis / background RMSE, mean over the 69 channels) on its validation
period; "vaevar (λ = 1)": the same fits checked with R as given (check-lam1-*: an analysis
setting, no refit); "vaevar (5× steps)": five years at 60 epochs, 5 × the curve's steps.
Writes learning_curve.{md,csv,png} here, and copies the runs' config.json,
log.txt and tables beside them (runs/<name>/). Nothing is computed but the tables.
"""

import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from bench.experiments.tune import score  # noqa: E402

HERE = Path(__file__).parent
YEARS = (1, 2, 5)
#: VAE-Var with 5 × the optimiser steps of the equal-steps curve (five years, 60 epochs)
STEPS5X = " (5× steps)"


def cycled(src: Path) -> pd.DataFrame:
    rows = []
    for years in YEARS:
        for folder, suffix in ((f"run-{years}y", ""), (f"diffda-{years}y", ""),
                               (f"run-{years}y-steps5x", STEPS5X)):
            path = src / folder / "metrics.nc"
            if not path.exists():
                continue
            ds = xr.load_dataset(path)
            for method in ds["method"].values:
                for density in ds["density"].values:
                    value, status, seconds = score(ds, str(method), float(density))
                    rows.append({"years": years, "method": str(method) + suffix,
                                 "density": float(density), "cycled": value, "status": status,
                                 "seconds": seconds, "run": folder})
    return pd.DataFrame(rows)


def checked(src: Path) -> pd.DataFrame:
    rows = []
    for years in YEARS:
        for folder, suffix in ((f"check-{years}y", ""), (f"check-diffda-{years}y", ""),
                               (f"check-lam1-{years}y", " (λ = 1)"),
                               (f"check-{years}y-steps5x", STEPS5X)):
            path = src / folder / "analysis_check.csv"
            if not path.exists():
                continue
            df = pd.read_csv(path, comment="#")
            for _, r in df.iterrows():
                rows.append({"years": years, "method": r.method + suffix, "density": r.density,
                             "check": r["all"], "check_run": folder})
    return pd.DataFrame(rows)


def copy_runs(src: Path) -> None:
    for run in sorted(src.glob("*-*y*")):
        dest = HERE / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "log.txt", "analysis_check.md", "analysis_check.csv"):
            if (run / name).exists():
                shutil.copy(run / name, dest / name)
        if (run / "tables").exists():
            shutil.copytree(run / "tables", dest / "tables", dirs_exist_ok=True)


def main(src: Path) -> None:
    df = cycled(src)
    checks = checked(src)
    if not checks.empty:
        df = df.merge(checks, on=["years", "method", "density"], how="outer")
    df = df.sort_values(["method", "density", "years"])
    df.to_csv(HERE / "learning_curve.csv", index=False, float_format="%.4f")
    with open(HERE / "learning_curve.md", "w") as f:
        f.write("# The data-volume learning curve (heldsuarez-5.625-long)\n\n"
                "Made by `python results/learning-curve/summarise.py /tmp/learning-curve` from "
                "the runs of `results/learning-curve/run.sh` (their config.json and log.txt in "
                "runs/). Cycled: channel-mean normalised analysis RMSE after spin-up, test "
                "period, 15 days, seed 0 (∞: diverged). Check: one analysis of truth − 48 h "
                "forecast errors, analysis / background RMSE, mean over 69 channels, 8 "
                "validation cases.\n\n")
        for value, title in (("cycled", "Cycled"), ("check", "Check")):
            if value not in df:
                continue
            wide = df.pivot_table(index=["method", "density"], columns="years", values=value)
            if wide.empty:
                continue
            wide.columns = [f"{y} year{'s' * (y > 1)}" for y in wide.columns]
            f.write(f"## {title}\n\n" + wide.reset_index().to_markdown(
                index=False, floatfmt=(None, "g", ".3f", ".3f", ".3f")) + "\n\n")
    densities = sorted(df.loc[df.cycled.notna(), "density"].unique()) if "cycled" in df else []
    if densities:
        methods = sorted(df.loc[df.cycled.notna(), "method"].unique())
        colours = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour per method
        fig, axes = plt.subplots(1, len(densities), figsize=(3.6 * len(densities), 3.6),
                                 squeeze=False)
        for ax, density in zip(axes[0], densities, strict=True):
            part = df[(df.density == density) & df.cycled.notna()]
            for method, group in part.groupby("method"):
                ok = group[group.cycled < float("inf")]
                ax.plot(ok.years, ok.cycled, "o-", color=colours[method], label=method)
                for years in group.years[group.cycled == float("inf")]:  # diverged
                    ax.annotate(f"{method}: diverged", (years, 0.9), color=colours[method],
                                xycoords=("data", "axes fraction"), ha="left", fontsize=8)
            ax.set_xticks(YEARS)
            ax.set_xlabel("training years")
            ax.set_title(f"density {density:g}")
        axes[0][0].set_ylabel("cycled analysis RMSE\n(channel mean, normalised)")
        handles = [plt.Line2D([], [], color=colours[m], marker="o", label=m) for m in methods]
        fig.legend(handles=handles, loc="lower center", ncol=len(methods), fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(HERE / "learning_curve.png", dpi=120)
    copy_runs(src)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/learning-curve"))
