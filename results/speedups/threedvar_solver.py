"""3DVar's time per analysis, L-BFGS with 25 iterations (the default before) against CG to a
residual of 0.03 (the default now), A B A B on the same problems (issue 20 item 3).

    python results/speedups/threedvar_solver.py --threads 2 --cases 24

Problems: 6 h forecasts from the built-in world's validation-period truth (bench check's
"forecast" cases, as a cycled background) observed as cycle k of a run (seed 0) at 1 % and 5 %.
Both solvers run on the same fitted B (the cached fit), alternately, so machine load falls on
both alike; the paired ratio per problem is CG / L-BFGS. Wall and CPU seconds (the process's
user + system time: with one thread, close to the wall time of an idle machine; on a loaded
machine the wall time is not). Prints a Markdown table (ab_analysis.py does the work).
"""

import argparse

from ab_analysis import measure  # this folder's generic A/B (run as a script: it is on sys.path)

SOLVERS = {"L-BFGS, 25 iterations (before)": {"solver": "lbfgs"},
           "CG to 0.03, ≤ 25 iterations (now)": {"solver": "cg"}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", type=int, default=24)
    args = p.parse_args()
    measure("3dvar", SOLVERS, args.threads, args.cases)


if __name__ == "__main__":
    main()
