"""Times in reference units: a benchmark's CPU time divided by that of a fixed reference kernel
timed in the same process, interleaved with it (reference, benchmark, reference, …).

Why: on a shared machine CPU time still moves 10–36 % between recordings of identical code
(cache and memory-bandwidth contention with other jobs, time the hypervisor steals, clock
changes: results/asv/README.md), and asv then flags every benchmark at once. A slow phase of
the machine slows the reference kernel next to the benchmark as well, so the ratio keeps what
the code changed and drops most of what the machine did.

The reference kernel is frozen: the history compares ratios across commits, so changing
``reference_kernel`` (or its sizes) makes every earlier ratio incomparable. It mixes what the
benchmarked code spends its time on: a float64 FFT along longitude and a float64 matrix
product over latitude (the spectral transforms of 3DVar's B and of the emulator), and a float32
3×3 convolution (the networks of the emulator, DiffDA and VAE-Var).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

#: fixed sizes: 69 channels on the 32×64 grid, as the benchmarks
_CHANNELS, _LAT, _LON = 69, 32, 64


class ReferenceKernel:
    """The frozen reference work (≈ 15 ms of one core: three passes of the mix below); inputs
    drawn once from seed 0."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x64 = torch.randn(_CHANNELS, _LAT, _LON, generator=g, dtype=torch.float64)
        self.legendre = torch.randn(_LAT, _LAT, generator=g, dtype=torch.float64)
        self.x32 = torch.randn(1, _CHANNELS, _LAT, _LON, generator=g)
        self.weight = torch.randn(_CHANNELS, _CHANNELS, 3, 3, generator=g) / 25.0

    def __call__(self) -> float:
        """Run the kernel once; returns a number that depends on every output (so nothing is
        optimised away)."""
        return sum(self._once() for _ in range(3))

    def _once(self) -> float:
        spectrum = torch.fft.rfft(self.x64, dim=-1)                       # (69, 32, 33)
        mixed = torch.einsum("ij,cjm->cim", self.legendre, spectrum.real)  # (69, 32, 33)
        back = torch.fft.irfft(torch.complex(mixed, spectrum.imag), n=_LON, dim=-1)
        conv = torch.nn.functional.conv2d(self.x32, self.weight, padding=1)
        conv = torch.nn.functional.conv2d(torch.tanh(conv), self.weight, padding=1)
        return float(back.sum()) + float(conv.sum())


def interleaved_samples(fn: Callable[[], object], reference: Callable[[], object], pairs: int = 9,
                        clock: Callable[[], float] = time.process_time
                        ) -> tuple[list[float], list[float]]:
    """CPU times (s) of ``fn`` per call and of the reference next to it: ``pairs`` samples of
    (reference, n calls of fn, reference); the reference time of a sample is the mean of the
    two runs around it, so drifts of the machine slower than one sample cancel in their ratio.
    A fast ``fn`` is called ``n`` times per sample, n chosen so a sample lasts at least as long
    as one reference run (a CPU clock's resolution is ~1 µs). Returns (fn_times, ref_times)."""
    reference()
    fn()  # warm-up: lazy initialisation and first-call allocation do not count
    t0 = clock()
    reference()
    t_ref = max(clock() - t0, 1e-6)
    t0 = clock()
    fn()
    n = max(1, int(t_ref / max(clock() - t0, 1e-7)) + 1)
    fn_times, ref_times = [], []
    for _ in range(pairs):
        t0 = clock()
        reference()
        t1 = clock()
        for _ in range(n):
            fn()
        t2 = clock()
        reference()
        t3 = clock()
        fn_times.append((t2 - t1) / n)
        ref_times.append(max(0.5 * ((t1 - t0) + (t3 - t2)), 1e-9))
    return fn_times, ref_times


def in_reference_units(fn: Callable[[], object], reference: Callable[[], object],
                            pairs: int = 9, clock: Callable[[], float] = time.process_time
                            ) -> float:
    """min t(fn) / min t(reference) over ``pairs`` interleaved samples (CPU times,
    ``interleaved_samples``): each the least disturbed of its samples, taken from the same
    stretch of the machine's time. Dimensionless: 2.0 means "twice the reference kernel's time".
    Measured against the median of the per-sample ratios (results/asv/load_check.csv): two
    extra memory-streaming processes moved this by −3 … +8 %, the median ratio by +0.6 … +14 %,
    the median CPU time alone by +17 … +38 %."""
    fn_times, ref_times = interleaved_samples(fn, reference, pairs, clock)
    return min(fn_times) / min(ref_times)
