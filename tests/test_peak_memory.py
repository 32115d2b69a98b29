"""Each stage's peak memory in log.txt is the stage's own (bench/peak_memory.py): a stage that
holds 300 MB reports at least that much above the process's resident set, and the next stage,
which holds nothing, reports less again."""

import sys

import numpy as np
import pytest

from bench.peak_memory import GB, Stage, peak_bytes, reset_peak

MB = 2**20


def resident_bytes() -> float:
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc")
def test_a_stage_reports_its_own_peak_and_the_next_one_starts_afresh():
    if not reset_peak():
        pytest.skip("this kernel refuses to reset the resident high-water mark")
    before = resident_bytes()
    big = Stage.start()
    block = np.ones(300 * MB, dtype=np.uint8)  # touched: resident
    del block
    big.stop()
    assert big.own and big.peak >= before + 290 * MB
    small = Stage.start()
    small.stop()
    assert small.own and small.peak < big.peak - 200 * MB
    assert "(peak " in small.describe() and small.describe().endswith(" GB)")


def test_without_a_reset_the_peak_is_labelled_the_process_peak_so_far():
    stage = Stage(0.0, False).stop()
    assert stage.peak == pytest.approx(peak_bytes(), rel=0.05)
    assert f"(peak so far {stage.peak / GB:.2f} GB)" in stage.describe()
