"""Time per analysis of one method under two or more settings, A B A B on the same problems
(issue 20 item 3), with the paired ratio of each setting to the first.

    python results/speedups/ab_analysis.py --method vaevar --threads 1 --cases 16 \
        --variant "float64 (before)" analysis_dtype=float64 \
        --variant "mixed (now)" analysis_dtype=mixed

Problems: 6 h forecasts from the built-in world's validation-period truth (bench check's
"forecast" cases, as a cycled background) observed as cycle k of a run (seed 0) at 1 % and 5 %.
Every setting runs on the same fit (the cached one; the settings are analysis fields),
alternately, so machine load falls on all alike. Wall and CPU seconds (the process's user +
system time: with one thread, close to the wall time of an idle machine; on a loaded machine
the wall time is not). Prints a Markdown table.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from bench.cli.fields import field_hint, parse_text
from bench.config import RunConfig
from bench.experiments.check import cases
from bench.observations import observe
from bench.setup import build_method, fit_and_load, setup
from methods import get_method
from methods.base import Background


def measure(method: str, variants: dict[str, dict], threads: int, n_cases: int) -> None:
    """Print the table: per density and variant the median wall and CPU seconds and cost
    evaluations, and the median over problems of (wall of the variant / wall of the first)."""
    cfg = RunConfig(methods=(method,), densities=(0.01, 0.05), threads=threads)
    s = setup(cfg, progress=False)
    torch.set_num_threads(threads)
    valid = s.world.period("valid")
    truth = s.world.spec.to_tensor(valid.load()).float()
    problems = cases(s.model, truth, valid.time.values, "forecast", 6, n_cases)
    base = build_method(cfg, method)
    analysers = {label: fit_and_load(s, dataclasses.replace(base, **change), progress=False)
                 for label, change in variants.items()}
    first = next(iter(variants))
    print("| density | setting | median wall s | median CPU s | evaluations (median) | "
          f"wall / {first} (median of pairs) |\n|--:|:--|--:|--:|--:|--:|")
    for density in cfg.densities:
        settings = dataclasses.replace(cfg.observations, density=density)
        seconds = {label: [] for label in variants}
        cpu = {label: [] for label in variants}
        evaluations = {label: [] for label in variants}
        for k, c in enumerate(problems):
            obs = observe(c.x_true, s.world.spec, settings, cycle=k)
            background = Background(c.x_b, c.history, c.valid_time, c.lead_hours, k)
            for label, analyser in analysers.items():  # A B A B …
                start, start_cpu = time.perf_counter(), time.process_time()
                analysis = analyser.analyse(background, obs)
                seconds[label].append(time.perf_counter() - start)
                cpu[label].append(time.process_time() - start_cpu)
                evaluations[label].append(analysis.diagnostics.get("evaluations", float("nan")))
        for label in variants:
            ratio = statistics.median(a / b for a, b in
                                      zip(seconds[label], seconds[first], strict=True))
            print(f"| {density:g} | {label} | {statistics.median(seconds[label]):.3f} | "
                  f"{statistics.median(cpu[label]):.3f} | "
                  f"{statistics.median(evaluations[label]):g} | "
                  f"{'' if label == first else f'{ratio:.2f}'} |")
    print(f"\n{n_cases} problems per density, {threads} torch threads, "
          f"{torch.get_num_threads()} in use; {s.device}.")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", required=True)
    p.add_argument("--variant", nargs="+", action="append", required=True,
                   metavar=("LABEL", "FIELD=VALUE"),
                   help="a label and the analysis fields it sets (none: the defaults)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", type=int, default=24)
    args = p.parse_args()
    cls = get_method(args.method)
    variants = {label: {k: parse_text(v, field_hint(cls, k))
                        for k, v in (a.split("=", 1) for a in assignments)}
                for label, *assignments in args.variant}
    measure(args.method, variants, args.threads, args.cases)


if __name__ == "__main__":
    main()
