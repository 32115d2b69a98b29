"""Timing in reference units (benchmarks/reference_units.py) cancels a machine that slows down
between and within samples, where a plain time does not; a fast function is repeated so its
samples are not below the clock's resolution."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.reference_units import (  # noqa: E402
    ReferenceKernel,
    in_reference_units,
    interleaved_samples,
)

sys.path.remove(str(ROOT))


class FakeMachine:
    """A clock that advances only when work is done: ``work(units)`` costs units × the
    machine's current slowness, which grows by ``drift`` per unit of work done (a machine whose
    load rises during the measurement, 10 % per reference run for drift 0.1 / 0.015)."""

    load_ends_at = float("inf")  # the clock time after which the machine is idle (slowness 1)

    def __init__(self, drift: float):
        self.now, self.slowness, self.drift = 0.0, 1.0, drift

    def clock(self) -> float:
        return self.now

    def work(self, units: float) -> None:
        self.now += units * self.slowness
        self.slowness *= 1 + self.drift * units
        if self.now > self.load_ends_at:
            self.slowness = 1.0


@pytest.mark.parametrize("fn_units", [0.045, 0.0015])
def test_ratio_cancels_a_machine_slowing_down(fn_units):
    ref_units, drift = 0.015, 0.1 / 0.015
    machine = FakeMachine(drift=0.0)
    steady = in_reference_units(lambda: machine.work(fn_units),
                                     lambda: machine.work(ref_units), clock=machine.clock)
    machine = FakeMachine(drift=drift)
    fn_times, _ = interleaved_samples(lambda: machine.work(fn_units),
                                      lambda: machine.work(ref_units), clock=machine.clock)
    machine = FakeMachine(drift=drift)
    drifting = in_reference_units(lambda: machine.work(fn_units),
                                       lambda: machine.work(ref_units), clock=machine.clock)
    assert steady == pytest.approx(fn_units / ref_units, rel=1e-9)
    # the plain times grew by an order of magnitude over the samples …
    assert fn_times[-1] > 5 * fn_times[0]
    # … the ratio moved by the drift within one sample only (reference before and after)
    assert drifting == pytest.approx(fn_units / ref_units, rel=0.1)


def test_ratio_uses_references_timed_beside_the_function():
    """Twice as slow for the first third of the measurement, then idle: the fastest function
    sample and the fastest reference both come from the idle part, so the ratio is exact; a
    reference timed once at the start (the slow part) would halve it."""
    machine = FakeMachine(drift=0.0)
    machine.slowness, machine.load_ends_at = 2.0, 0.5
    ratio = in_reference_units(lambda: machine.work(0.045), lambda: machine.work(0.015),
                                    clock=machine.clock)
    assert ratio == pytest.approx(3.0, rel=1e-9)


def test_fast_function_is_repeated_to_the_reference_time():
    calls = []
    machine = FakeMachine(drift=0.0)

    def fast():
        calls.append(1)
        machine.work(0.0015)

    in_reference_units(fast, lambda: machine.work(0.015), pairs=3, clock=machine.clock)
    # warm-up and probe (2) + 3 samples of n calls each, n × 1.5 ms ≥ the 15 ms reference
    # (n = 10 or 11 as the division rounds)
    n, rest = divmod(len(calls) - 2, 3)
    assert rest == 0 and n in (10, 11)


def test_reference_kernel_is_deterministic():
    assert ReferenceKernel()() == ReferenceKernel()()
