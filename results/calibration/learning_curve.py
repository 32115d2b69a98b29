"""The known-prior learning curve: each learned method's analysis RMSE relative to the optimum
(3DVar with the true B) against the number N of known-prior draws it was trained on.

    python results/calibration/learning_curve.py     # from the checkout's root

Reads the `analysis_check_optimum.csv` of the folders below (each made by the command in its
own files) and writes learning_curve.{md,csv,png} here. Nothing is computed but the table.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).parent
#: (label, method row, N, folder): VAE-Var's N = 363 fit ran 60 epochs and N = 3,630 ran 6, the
#: same number of optimiser steps (~1,360 of 16 samples), N = 36,300 one epoch (2,269 steps:
#: the fewest whole epochs); DiffDA trains 600 steps per lead at any N.
RUNS = [
    ("vaevar, λ = 4000", "vaevar", 363, "known-prior-vaevar-363"),
    ("vaevar, λ = 4000", "vaevar", 3630, "known-prior-learned-3630"),
    ("vaevar, λ = 1 (R as given)", "vaevar", 363, "known-prior-vaevar-363-lam1"),
    ("vaevar, λ = 1 (R as given)", "vaevar", 3630, "known-prior-learned-3630-lam1-k8"),
    ("diffda, 1 sample", "diffda", 363, "known-prior-diffda-363"),
    ("diffda, 1 sample", "diffda", 3630, "known-prior-learned-3630"),
    ("diffda, mean of 8 samples", "diffda", 3630, "known-prior-learned-3630-lam1-k8"),
    # N = 36,300: VAE-Var 1 epoch (2,269 steps: the fewest whole epochs, 1.7x the others')
    ("vaevar, λ = 4000", "vaevar", 36300, "known-prior-learned-36300"),
    ("vaevar, λ = 1 (R as given)", "vaevar", 36300, "known-prior-learned-36300-lam1-k8"),
    ("diffda, 1 sample", "diffda", 36300, "known-prior-learned-36300"),
    ("diffda, mean of 8 samples", "diffda", 36300, "known-prior-learned-36300-lam1-k8"),
]


def table() -> pd.DataFrame:
    rows = []
    for label, method, n, folder in RUNS:
        df = pd.read_csv(HERE / folder / "analysis_check_optimum.csv", comment="#")
        for _, r in df[df.method == method].iterrows():
            rows.append({"method": label, "N": n, "density": r.density, "all": r["all"],
                         "z500": r.z500, "t850": r.t850, "folder": folder})
    return pd.DataFrame(rows)


def main() -> None:
    df = table()
    df.to_csv(HERE / "learning_curve.csv", index=False, float_format="%.4f")
    wide = df.pivot_table(index="method", columns=["density", "N"], values="all", sort=False)
    wide.columns = [f"{d:g}: N={n}" for d, n in wide.columns]
    with open(HERE / "learning_curve.md", "w") as f:
        f.write("# Known-prior learning curve\n\nMade by `python results/calibration/"
                "learning_curve.py` from the folders named in learning_curve.csv. Analysis RMSE / "
                "the optimum's (3DVar with the true B), mean over the 69 channels, 8 cases; 1 = "
                "Bayes-optimal.\n\n")
        f.write(wide.to_markdown(floatfmt=".3f") + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, density in zip(axes, (0.01, 0.05), strict=True):
        for label, group in df[df.density == density].groupby("method", sort=False):
            ax.plot(group.N, group["all"], "o-", label=label)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([363, 3630, 36300], ["363", "3,630", "36,300"])
        ax.minorticks_off()
        ax.set_xlabel("known-prior training draws N")
        ax.set_title(f"density {density:g}")
    axes[0].set_ylabel("analysis RMSE / optimum's")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "learning_curve.png", dpi=120)


if __name__ == "__main__":
    main()
