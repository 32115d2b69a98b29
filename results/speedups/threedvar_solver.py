"""3DVar's time per analysis, L-BFGS with 25 iterations (the default before) against CG to a
residual of 0.03 (the default now), A B A B on the same problems (issue 20 item 3).

    python results/speedups/threedvar_solver.py --threads 2 --cases 24

Problems: 6 h forecasts from the built-in world's validation-period truth (bench check's
"forecast" cases, as a cycled background) observed as cycle k of a run (seed 0) at 1 % and 5 %.
Both solvers run on the same fitted B (the cached fit), alternately, so machine load falls on
both alike; the paired ratio per problem is CG / L-BFGS. Wall and CPU seconds (the process's
user + system time: with one thread, close to the wall time of an idle machine; on a loaded
machine the wall time is not). Prints a Markdown table.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from bench.config import RunConfig
from bench.experiments.check import cases
from bench.observations import observe
from bench.setup import build_method, fit_and_load, setup
from methods.base import Background

SOLVERS = {"L-BFGS, 25 iterations (before)": {"solver": "lbfgs"},
           "CG to 0.03, ≤ 25 iterations (now)": {"solver": "cg"}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", type=int, default=24)
    args = p.parse_args()
    cfg = RunConfig(methods=("3dvar",), densities=(0.01, 0.05), threads=args.threads)
    s = setup(cfg, progress=False)
    torch.set_num_threads(args.threads)
    valid = s.world.period("valid")
    truth = s.world.spec.to_tensor(valid.load()).float()
    problems = cases(s.model, truth, valid.time.values, "forecast", 6, args.cases)
    base = build_method(cfg, "3dvar")
    analysers = {label: fit_and_load(s, dataclasses.replace(base, **change), progress=False)
                 for label, change in SOLVERS.items()}
    print("| density | solver | median wall s | median CPU s | evaluations (median) | "
          "CG / L-BFGS wall (median of pairs) |\n|--:|:--|--:|--:|--:|--:|")
    for density in cfg.densities:
        settings = dataclasses.replace(cfg.observations, density=density)
        seconds = {label: [] for label in SOLVERS}
        cpu = {label: [] for label in SOLVERS}
        evaluations = {label: [] for label in SOLVERS}
        for k, c in enumerate(problems):
            obs = observe(c.x_true, s.world.spec, settings, cycle=k)
            background = Background(c.x_b, c.history, c.valid_time, c.lead_hours, k)
            for label, analyser in analysers.items():  # A B A B …
                start, start_cpu = time.perf_counter(), time.process_time()
                analysis = analyser.analyse(background, obs)
                seconds[label].append(time.perf_counter() - start)
                cpu[label].append(time.process_time() - start_cpu)
                evaluations[label].append(analysis.diagnostics["evaluations"])
        before, after = (seconds[label] for label in SOLVERS)
        ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
        for i, label in enumerate(SOLVERS):
            print(f"| {density:g} | {label} | {statistics.median(seconds[label]):.3f} | "
                  f"{statistics.median(cpu[label]):.3f} | "
                  f"{statistics.median(evaluations[label]):g} | {f'{ratio:.2f}' if i else ''} |")
    print(f"\n{args.cases} problems per density, {args.threads} torch threads, "
          f"{torch.get_num_threads()} in use; {s.device}.")


if __name__ == "__main__":
    main()
