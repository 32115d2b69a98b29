"""Does timing in reference units survive a change of machine load where CPU time does not?

    for i in 1 2 3 4; do   # load_check.csv: alternated, beside 2-3 other single-threaded jobs
      python results/asv/load_check.py --label base --out results/asv/load_check.csv
      python results/asv/load_check.py --label hogs2 --hogs 2 --out results/asv/load_check.csv
    done

Times a few of the asv benchmarks (benchmarks/benchmarks.py, the same setups) both ways, CPU
seconds (9 calls: median, as asv's time_ benchmarks, and min) and reference units (9
interleaved pairs: median of the ratios, as the *InReferenceUnits track_ benchmarks, and
min over min), and appends one row per
benchmark to the CSV with the label. ``--hogs K`` starts K extra processes that stream a
256 MB array through memory (memory-bandwidth and cache contention, the kind of load a CPU
clock does not exclude) for the duration of the run.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import benchmarks as bm  # noqa: E402
from benchmarks.reference_units import ReferenceKernel, interleaved_samples  # noqa: E402

METHODS = ("3dvar", "vaevar", "diffda", "interp", "letkf")


def _hog(stop):
    import numpy as np

    a = np.ones(32 * 2**20)  # 256 MB of float64
    while not stop.is_set():
        a += 1.0


def _measures(fn, reference) -> dict[str, str]:
    """CPU time alone (9 calls: median and min, as asv's time_ benchmarks could report) and in
    reference units (9 interleaved pairs: median of the ratios, and min over min)."""
    fn()
    alone = []
    for _ in range(9):
        t0 = time.process_time()
        fn()
        alone.append(time.process_time() - t0)
    fn_times, ref_times = interleaved_samples(fn, reference)
    ratios = [f / r for f, r in zip(fn_times, ref_times, strict=True)]
    return {"cpu_median_s": f"{statistics.median(alone):.5f}", "cpu_min_s": f"{min(alone):.5f}",
            "ref_units_median": f"{statistics.median(ratios):.4f}",
            "ref_units_min_over_min": f"{min(fn_times) / min(ref_times):.4f}"}


def _cases():
    for name in METHODS:
        case = bm.Analysis()
        case.setup(name)
        yield f"analyse[{name}]", lambda c=case: c.analyser.analyse(c.background, c.obs)
    step = bm.EmulatorStep()
    step.setup()
    yield "emulator step", lambda: step.model.step(step.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    stop = mp.Event()
    hogs = [mp.Process(target=_hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    load = os.getloadavg()[0]
    rows = []
    try:
        reference = ReferenceKernel()
        for name, fn in _cases():
            rows.append({"label": args.label, "hogs": args.hogs, "loadavg_1min": f"{load:.2f}",
                         "benchmark": name, **_measures(fn, reference)})
            print(rows[-1], flush=True)
    finally:
        stop.set()
        for h in hogs:
            h.join()
    new = not args.out.exists()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
