"""Device-aware timing and peak memory of one call (the harness wraps ``analyse`` with it).

GPU: CUDA events around the call, with ``torch.cuda.synchronize()`` before reading them (kernels
run asynchronously, so a host clock would time only the launches). Memory: the peak of
``torch.cuda.max_memory_allocated`` during the call minus what was allocated before it.
CPU: ``time.perf_counter``; memory: the peak resident set size during the call minus the RSS
before it, sampled from /proc/self/statm every millisecond by a background thread (torch's CPU
allocator is invisible to tracemalloc). Both memories are what the call *added*: the state, the
observations and the model that were already resident are not counted. Unknown -> NaN.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Wall time (s) and peak additional memory (bytes, NaN if unknown) of one call."""

    seconds: float
    peak_bytes: float


def device_name(device: torch.device) -> str:
    """A human-readable name of the device, for the timing table."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} torch threads)"


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return float("nan")


class _RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.001):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[Any, Measurement]:
    """Call ``fn()`` once; return its result and the Measurement."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000.0
        peak = float(torch.cuda.max_memory_allocated(device) - before)
        return result, Measurement(seconds, peak)
    before = _rss_bytes()
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - t0
        peak = sampler.stop()
    return result, Measurement(seconds, max(0.0, peak - before))
