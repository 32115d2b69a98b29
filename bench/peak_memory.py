"""Time and peak resident memory of one stage of a run (world, forecast model, each method's fit
and cycles), for log.txt: so a user sees which stage needs the memory, not only the run's peak.

The peak is the kernel's high-water mark of this process's resident set (``VmHWM`` in
/proc/self/status), reset at the start of each stage by writing 5 to /proc/self/clear_refs
(Linux ≥ 4.0), so it is the stage's own peak. Where the reset is refused or there is no /proc
(macOS), it is the process's peak so far (``ru_maxrss``), and the log says "peak so far".
Resident pages of memory-mapped cache files (samples, the training truth) count: the kernel may
drop them under pressure, so this is an upper bound of the memory the stage needs.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time

GB = 1e9


def reset_peak() -> bool:
    """Reset this process's resident high-water mark to its current resident set; whether the
    kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_bytes(path: str, key: str) -> float | None:
    """The ``key:`` line of a /proc file that counts in kB (/proc/meminfo, /proc/self/status),
    in bytes; None where the file or the line is missing (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_bytes() -> float:
    """This process's resident high-water mark (bytes): VmHWM where /proc has it (since the
    last reset), else ru_maxrss (since the process started; kB on Linux, bytes on macOS)."""
    hwm = proc_bytes("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss) * (1 if sys.platform == "darwin" else 1024)


@dataclasses.dataclass
class Stage:
    """One stage's wall time and peak memory: ``Stage.start()`` … ``stage.stop()``.

    Attributes:
        seconds: wall time (s), set by ``stop``.
        peak: peak resident memory (bytes) during the stage (``own``) or of the process so far.
        own: whether ``peak`` is the stage's own (the high-water mark was reset at the start).
    """

    started: float
    own: bool
    seconds: float = 0.0
    peak: float = 0.0

    @classmethod
    def start(cls) -> Stage:
        return cls(time.perf_counter(), reset_peak())

    def stop(self) -> Stage:
        self.seconds, self.peak = time.perf_counter() - self.started, peak_bytes()
        return self

    def describe(self) -> str:
        """``12.3 s (peak 1.45 GB)`` (``peak so far`` where the peak could not be reset)."""
        label = "peak" if self.own else "peak so far"
        return f"{self.seconds:.1f} s ({label} {self.peak / GB:.2f} GB)"
