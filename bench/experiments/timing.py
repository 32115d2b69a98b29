"""``python -m bench timing``: the cost of one analysis per method at any grid, as a table.

Per method (built "untrained, for timing" by bench/experiments/synthetic.py: networks of the
configured size with random weights, synthetic 3DVar statistics) and device:
- ``repeats`` analyses of one random background with grid-point observations ("columns"
  sampling at ``density``), after one untimed warm-up: median and p90 wall time (s) and the
  peak memory the analysis added (bytes; bench/timing.measure: CUDA max_memory_allocated, CPU
  resident set size), the max over all calls;
- its dominant kernel, timed alone, and its achieved rate against a measured device peak:
  FLOP/s against a square matmul of the kernel's dtype, or bytes/s against a device copy.
  FLOPs are those torch.utils.flop_counter counts (matmuls, convolutions, attention); FFTs and
  elementwise work are not counted, so a fraction of peak is a lower bound.

The cost of iterative methods depends on the iteration count, which does depend on the weights
(VAE-Var's L-BFGS stops after a few iterations on a random decoder): ``evaluations`` reports
it and ``seconds_per_evaluation`` the cost per cost-function / denoiser evaluation.
"""

from __future__ import annotations

import dataclasses
import re
import statistics as stats
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import store
from bench.config import DEVICES, ObservationSettings
from bench.experiments.synthetic import (
    MAX_CHANNELS,
    grid_coordinates,
    harness_bytes,
    synthetic_spec,
    untrained,
)
from bench.memory_check import (
    available_bytes,
    exceeding,
    needed_bytes,
    observation_count,
    shortfall,
)
from bench.obs_regime import DensityRequest, ObservationGrid, regimes, resolve_densities
from bench.observations import observe
from bench.setup import resolve_device
from bench.state import StateSpec
from bench.timing import device_name, measure
from bench.validation import ConfigError
from methods import METHODS, get_method
from methods.base import Analyser, Assimilator, Background, Kernel, MemoryEstimate, Observations

#: Timed calls of the dominant kernel (median).
KERNEL_REPEATS = 3
GIB = 2.0**30
MIB = 2.0**20


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    """What ``python -m bench timing`` measures (one row per method).

    ``methods``: registered names; empty (the default) times every registered method.
    ``columns``, ``spacing_km``: the density asked as observed columns or their mean spacing
    [km] on ``grid`` instead (bench/obs_regime.py; ``resolved`` converts them).
    """

    methods: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods or METHODS))
    grid: str = "32x64"
    channels: int = MAX_CHANNELS
    density: float = 0.01
    repeats: int = 5
    device: str = "auto"
    seed: int = 0
    columns: int | None = None
    spacing_km: float | None = None

    def observation_grid(self) -> ObservationGrid:
        """The grid's observation geometry (odd nlat: with poles, as synthetic_spec)."""
        lat, lon, grid = grid_coordinates(*self.shape())
        return ObservationGrid(lat, lon.size, f"the {self.grid} {grid} grid")

    def resolved(self) -> TimingSettings:
        """These settings with ``density`` from ``columns`` or ``spacing_km`` when one is
        given (N / (H·W) for N whole columns). ConfigError naming ``columns`` or
        ``spacing_km`` for a value the grid cannot have."""
        if self.columns is None and self.spacing_km is None:
            return self
        request = DensityRequest(
            columns=None if self.columns is None else (self.columns,),
            spacing_km=None if self.spacing_km is None else (self.spacing_km,))
        (density,) = resolve_densities(self.observation_grid(), request.columns,
                                       request.spacing_km, field_prefix="")
        return dataclasses.replace(self, density=density)

    def shape(self) -> tuple[int, int]:
        """(nlat, nlon) from ``grid`` ("32x64"); ValueError naming the text otherwise."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", self.grid)
        if not match or int(match[1]) < 2 or int(match[2]) < 4:
            raise ValueError(f"--grid {self.grid!r} is not like 32x64 (latitudes x longitudes, "
                             "at least 2x4)")
        return int(match[1]), int(match[2])

    def check(self) -> None:
        """Raise a ValueError naming the first bad value (the CLI turns it into exit code 2)."""
        for name in self.methods:
            get_method(name)  # UnknownMethodError (a ValueError) lists the valid names
        self.shape()
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise ValueError(f"--channels {self.channels} is outside 1..{MAX_CHANNELS}")
        if not 0 < self.density <= 1:
            raise ValueError(f"--density {self.density} is outside (0, 1]")
        if self.repeats < 1:
            raise ValueError(f"--repeats {self.repeats} must be at least 1")
        if self.device not in DEVICES:
            raise ConfigError("device", self.device, f"one of {', '.join(DEVICES)}")
        resolve_device(self.device)


# ----------------------------------------------------------------------------- device peaks
def _seconds(fn: Callable[[], object], device: torch.device, repeats: int,
             best: bool = False) -> float:
    """Median (or, for peaks, the best) wall time of ``repeats`` calls after a warm-up."""
    fn()  # warm-up: first-call allocations, lazy initialisation, kernel selection
    times = [measure(fn, device)[1].seconds for _ in range(repeats)]
    return min(times) if best else stats.median(times)


def device_peaks(device: torch.device) -> dict[str, float]:
    """Measured peaks: {"float32", "float64": matmul FLOP/s, "bytes": copy bytes/s}, the best
    of several calls (a peak; on a shared machine the median would measure the neighbours).

    CPU: a 1024 × 1024 matmul and a 256 MiB copy (cheap: well under a second on one thread).
    CUDA: 8192 × 8192 (float32) and 4096 × 4096 (float64) matmuls and a 1 GiB copy, large
    enough to reach the device's sustained rates.
    """
    cuda = device.type == "cuda"
    peaks = {}
    for dtype, n in ((torch.float32, 8192 if cuda else 1024), (torch.float64,
                                                               4096 if cuda else 1024)):
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        peaks[str(dtype).removeprefix("torch.")] = 2.0 * n**3 / _seconds(
            lambda a=a, b=b: a @ b, device, 10, best=True)
        del a, b
    nbytes = (GIB if cuda else 256 * MIB)
    src = torch.empty(int(nbytes) // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    # a copy reads and writes every byte once
    peaks["bytes"] = 2.0 * nbytes / _seconds(lambda: dst.copy_(src), device, 5, best=True)
    return peaks


# ----------------------------------------------------------------------------- kernels
def kernel_rate(kernel: Kernel, device: torch.device, peaks: dict[str, float]
                ) -> dict[str, float | str]:
    """Median seconds of one kernel call, its work, achieved rate and fraction of peak."""
    if kernel.unit == "FLOP":
        with FlopCounterMode(display=False) as counter:
            kernel.fn()
        work = float(counter.get_total_flops())
        peak = peaks[kernel.dtype]
    else:
        work, peak = float(kernel.work), peaks["bytes"]
    seconds = _seconds(kernel.fn, device, KERNEL_REPEATS)
    achieved = work / seconds if seconds > 0 else float("nan")
    return {"kernel": kernel.label, "kernel_s": seconds, "kernel_work": work,
            "kernel_unit": kernel.unit, "achieved_per_s": achieved,
            "device_peak_per_s": peak, "fraction_of_peak": achieved / peak}


# ----------------------------------------------------------------------------- one method
def synthetic_case(spec: StateSpec, density: float, device: torch.device, seed: int,
                   members: int = 0) -> tuple[Background, Observations]:
    """A random background (history of 2 frames; ``members`` perturbed copies for an ensemble
    method) and "columns" observations of a random truth at ``density``, 1 % noise: what a
    cycle would hand a method, without a world."""
    g = torch.Generator().manual_seed(seed)
    fields = torch.randn(3, *spec.shape, generator=g).to(device)
    ensemble = None
    if members:
        noise = 0.1 * torch.randn(members, 2, *spec.shape, generator=g).to(device)
        ensemble = fields[None, :2] + noise - noise.mean(0, keepdim=True)
    background = Background(fields[1], fields[:2], np.datetime64("2001-01-01"), 6, 0,
                            members=ensemble)
    obs = observe(fields[2], spec, ObservationSettings(density=density, seed=seed), cycle=0)
    return background, obs


def synthetic_inputs(method: Assimilator, spec: StateSpec, density: float, device: torch.device,
                     seed: int):
    """(background, obs) for ``method``: Observations, or for a 4D method an
    ObservationWindow of the same observations at every 6 h offset with a random-weight
    emulator of the grid as its differentiable model (its cost is the emulator's)."""
    background, obs = synthetic_case(spec, density, device, seed, method.members)
    if not method.window_hours:
        return background, obs
    from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
    from methods.base import ObservationWindow

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EmulatorNet(spec.shape[0], spec.lat, spec.shape[2], EmulatorConfig(), spec.grid)
    model = Emulator(net, spec, device)
    offsets = ObservationSettings().window_offsets(method.window_hours)
    return background, ObservationWindow(tuple((o, obs) for o in offsets), model=model)


def time_method(name: str, spec: StateSpec, density: float, device: torch.device, repeats: int,
                peaks: dict[str, float], seed: int = 0) -> dict:
    """One row of the timing table for method ``name`` (see the module docstring)."""
    method = get_method(name)()
    analyser: Analyser = untrained(method, spec, device, seed)
    background, obs = synthetic_inputs(method, spec, density, device, seed)

    def analyse():
        return analyser.analyse(background, obs)

    analysis, warm = measure(analyse, device)
    runs = [measure(analyse, device)[1] for _ in range(repeats)]
    seconds = [m.seconds for m in runs]
    evaluations = analysis.diagnostics.get("evaluations", float("nan"))
    median = stats.median(seconds)
    row = {
        "method": name,
        "members": method.members,
        "median_s": median,
        "p90_s": float(np.percentile(seconds, 90)),
        "peak_mem_mib": max(m.peak_bytes for m in [warm, *runs]) / MIB,
        "evaluations": float(evaluations),
        "seconds_per_evaluation": median / evaluations if evaluations else float("nan"),
    }
    row.update(kernel_rate(analyser.dominant_kernel(background, obs), device, peaks))
    return row


# ----------------------------------------------------------------------------- the command
def check_memory(settings: TimingSettings, spec: StateSpec, n_obs: int,
                 device: torch.device) -> dict[str, MemoryEstimate]:
    """{method: estimate}; ValueError if one would exceed the memory available now
    (bench/memory_check.py: the same estimate and words as ``run``'s preflight).
    """
    estimates, needed = {}, {}
    for name in settings.methods:
        estimates[name], needed[name] = needed_bytes(get_method(name)(), spec, n_obs)
    available = available_bytes(device)
    too_big = exceeding(needed, available)
    if too_big:
        raise ValueError(f"refusing --grid {settings.grid} with {settings.channels} channels on "
                         f"{device.type}: estimated peak memory "
                         f"{shortfall(too_big, available, device)}; leave those methods out or "
                         "use a smaller grid")
    return estimates


def timing_table(settings: TimingSettings, progress: Callable[[str], None] | None = None
                 ) -> tuple[pd.DataFrame, str]:
    """Measure every method of ``settings``; (table with one row per method, device name).

    Raises ValueError for bad settings or a run that would not fit in memory, before any
    method is built.
    """
    settings.check()
    device = resolve_device(settings.device)
    nlat, nlon = settings.shape()
    spec = synthetic_spec(nlat, nlon, settings.channels)
    # "columns" sampling (all C channels at round(density · H · W) points, ≥ 1), as
    # synthetic_case draws them; checked before the states exist: at 0.25° they alone are ~1 GB
    n_obs = observation_count("columns", settings.channels, nlat * nlon, settings.density)
    estimates = check_memory(settings, spec, n_obs, device)
    peaks = device_peaks(device)
    rows = []
    for name in settings.methods:
        if progress:
            progress(f"timing {name} at {nlat}x{nlon}x{settings.channels} on {device.type} …")
        row = time_method(name, spec, settings.density, device, settings.repeats, peaks,
                          settings.seed)
        row["est_analysis_mib"] = estimates[name].analysis / MIB
        row["est_total_mib"] = (estimates[name].total + harness_bytes(
            spec, int(row["members"]))) / MIB
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    name = device_name(device)
    table.insert(1, "device", name)
    table.insert(2, "grid", f"{nlat}x{nlon} {spec.grid}")
    table.insert(3, "channels", settings.channels)
    table.insert(4, "observations", n_obs)
    # the observed columns and their mean spacing [km] on this grid (bench/obs_regime.py)
    regime = regimes(settings.observation_grid(), [settings.density])[0]
    table.insert(5, "obs_columns", regime["columns"])
    table.insert(6, "obs_spacing_km", round(regime["spacing_km"], 1))
    table.insert(7, "repeats", settings.repeats)
    return table, name


def notes(settings: TimingSettings, device: str) -> str:
    """The text above the Markdown table: what was measured and how."""
    return (
        f"One analysis per method on {device}: {settings.channels} of FengWu's channels "
        "(surface, then whole levels from 500, 850, 250 hPa …; bench/experiments/synthetic.py), "
        f"observations at density {settings.density:g} ('columns': all channels at the chosen "
        "points; obs_columns of them, drawn uniformly over grid points, obs_spacing_km their "
        "expected mean spacing in km: bench/obs_regime.py). Networks of each method's default "
        "size with random weights, synthetic 3DVar "
        "statistics (python -m bench timing never trains). Times: median and p90 of "
        f"{settings.repeats} analyses after one warm-up; peak_mem_mib: the largest memory an "
        "analysis added (CUDA: max_memory_allocated; CPU: resident set size); est_analysis_mib: "
        "its estimate; est_total_mib: the estimate with the method's tables/weights and the "
        "process, used to refuse runs that would not fit. evaluations: the method's "
        "`evaluations` diagnostic (cost-function evaluations of variational methods, denoiser "
        "calls of diffusion methods; a random decoder stops VAE-Var's L-BFGS early, so compare "
        "seconds_per_evaluation). Kernel columns: the dominant "
        "kernel timed alone; its work in FLOP (matmuls/convolutions/attention counted by "
        "torch.utils.flop_counter; FFTs and elementwise work are not, so fractions are lower "
        "bounds) or bytes moved; device_peak_per_s: a measured matmul of the kernel's dtype or "
        "a device copy (the copy's buffer is far larger than caches; a small kernel working "
        "in cache can exceed it).")


def run_timing(settings: TimingSettings, out: str | Path, command: str,
               progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Measure, then write ``timing.{md,csv,tex}`` under ``out``; nothing is written on error."""
    table, device = timing_table(settings, progress)
    title = f"Analysis cost per method ({settings.grid}, {settings.channels} channels)"
    paths = store.write_table(table, out, "timing", title, command, notes(settings, device))
    return table, paths


def format_for_terminal(table: pd.DataFrame) -> str:
    """The headline columns, readable: method, median/p90 (s), peak MiB, kernel rate."""
    cols = ["method", "median_s", "p90_s", "peak_mem_mib", "est_analysis_mib", "evaluations",
            "kernel", "achieved_per_s", "fraction_of_peak"]
    return table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
