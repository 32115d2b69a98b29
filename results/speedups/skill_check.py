"""Issue 20's skill bound, side by side: every method's 15-day analysis RMSE at 1 % and 5 %
with the defaults before the speed-ups against the defaults now, on the test period.

    python results/speedups/skill_check.py results/heldsuarez-paper \\
        results/heldsuarez-paper-regimes/default > results/speedups/skill_check.md

BEFORE and AFTER are runs of the same protocol (built-in world, same cycles, seeds 0–2, same
emulator and fits); the script reads their committed ``tables/paper_rmse_analysis.csv`` and
prints, per method, density and headline column, the two means with their between-seed 95 %
half-widths and the relative change (the bound: within 2 %, or better).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

DENSITIES = (0.01, 0.05)


def read(run: Path) -> pd.DataFrame:
    table = pd.read_csv(run / "tables" / "paper_rmse_analysis.csv", comment="#")
    return table[table["density"].isin(DENSITIES)].set_index(["method", "density", "column"])


def cell(row) -> str:
    if row["status"] != "ok":
        return f"diverged (cycle {int(row['diverged_cycle'])})"
    half = (row["ci_high"] - row["ci_low"]) / 2
    return f"{row['mean_rmse']:.4g} ± {half:.2g}"


def main(before_run: Path, after_run: Path) -> None:
    before, after = read(before_run), read(after_run)
    rows = []
    for key in before.index.intersection(after.index):
        b, a = before.loc[key], after.loc[key]
        both = b["status"] == a["status"] == "ok"
        change = f"{a['mean_rmse'] / b['mean_rmse'] - 1:+.1%}" if both else ""
        rows.append({"method": key[0], "density": key[1], "column": key[2],
                     "before": cell(b), "after": cell(a), "change": change,
                     "within 2 % or better": ("yes" if a["mean_rmse"] <= 1.02 * b["mean_rmse"]
                                              else "no") if both else ""})
    table = pd.DataFrame(rows)
    print(f"# Skill before and after the speed-ups (issue 20)\n\nMade by:\n\n```bash\n"
          f"python results/speedups/skill_check.py {before_run} {after_run}\n```\n\n"
          f"{__doc__.split(chr(10) * 2)[2]}\n\n{table.to_markdown(index=False)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
