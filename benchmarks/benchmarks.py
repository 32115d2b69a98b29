"""asv benchmarks: time and peak memory of the hot paths, and skill on a fixed short cycle.

Run (see README): ``asv machine --yes --machine NAME`` once, then
``asv run -E existing --set-commit-hash=$(git rev-parse HEAD) --machine NAME``.
Torch uses ONE thread here (set before torch is imported): with two threads on a busy 2-core
machine torch slows by up to 100×, which would turn every comparison into noise.

Times are CPU seconds of the benchmark process (``timer = time.process_time``), not wall time:
the history is recorded on shared machines, where another job on the other core moved wall
times by ±25 % between two recordings of identical code (a false 0.89× "improvement" flagged)
and hid a deliberate +20 ms (1.26×) slow-down of 3DVar. With one thread, CPU time is the wall
time of an idle machine, and time-slicing with other jobs does not count; cache and memory
contention still do: recordings made under different loads differed by 10–20 % on identical
code (results/asv/README.md), so record the commits compared back to back. The
``*InReferenceUnits`` tracks divide by a frozen reference kernel timed beside the benchmark
(benchmarks/reference_units.py), which cancels most of that load.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from bench.config import CycleSettings, ObservationSettings  # noqa: E402
from bench.cycle import TruthWindow, first_background, run_cycles  # noqa: E402
from bench.experiments.synthetic import untrained  # noqa: E402
from bench.experiments.timing import synthetic_inputs  # noqa: E402
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet  # noqa: E402
from bench.forecast.persistence import Persistence  # noqa: E402
from bench.state import FENGWU_CHANNELS, StateSpec  # noqa: E402
from methods import METHODS  # noqa: E402
from methods.base import TrainingContext  # noqa: E402

from .reference_units import ReferenceKernel, in_reference_units  # noqa: E402

LAT = np.linspace(85.76, -85.76, 32)
LON = np.arange(64) * 5.625


def _spec() -> StateSpec:
    return StateSpec.create(FENGWU_CHANNELS, LAT, LON, "legendre-gauss")


class _CPUTimed:
    """asv timing settings shared by every time_ benchmark (module docstring says why)."""

    timer = time.process_time
    rounds = 4  # interleaved rounds: a slow minute of the machine hits every commit alike
    repeat = (5, 10, 30.0)  # per round: at least 5 samples, at most 10, stop after 30 s


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """One pass of a 5-point mean over the last two (lat, lon) axes, periodic."""
    return (x + x.roll(1, -1) + x.roll(-1, -1) + x.roll(1, -2) + x.roll(-1, -2)) / 5


class EmulatorStep(_CPUTimed):
    """One 6-hour emulator step at 32×64×69 (budget: 20 ms on 2 cores)."""

    def setup(self):
        torch.manual_seed(0)
        self.model = Emulator(EmulatorNet(69, LAT, 64, EmulatorConfig()), _spec())
        self.frames = torch.randn(1, 2, 69, 32, 64)

    def time_step(self):
        self.model.step(self.frames)

    def peakmem_step(self):
        self.model.step(self.frames)


class Analysis(_CPUTimed):
    """One analysis per registered method at 32×64×69 with 1 % of the grid observed, with the
    method's random internals of its configured size (``untrained``: what `bench timing` uses;
    no training in asv). An iterative method's iteration count depends on those weights, so
    compare a method with itself across commits."""

    params = sorted(METHODS)
    param_names = ["method"]
    timeout = 600

    def setup(self, name):
        spec = _spec()
        method = METHODS[name]()
        self.analyser = untrained(method, spec)
        self.background, self.obs = synthetic_inputs(method, spec, 0.01, torch.device("cpu"), 0)

    def teardown(self, name):
        self.analyser = None

    def time_analyse(self, name):
        self.analyser.analyse(self.background, self.obs)

    def peakmem_analyse(self, name):
        self.analyser.analyse(self.background, self.obs)


class ThreeDVarTransform(_CPUTimed):
    """3DVar's U and Uᵀ (B = UUᵀ) at 32×64×69 with statistics of the estimated shapes."""

    def setup(self):
        from methods.common.covariance import BMatrix, synthetic_statistics

        spec = _spec()
        self.b = BMatrix(spec, synthetic_statistics(spec), "cpu")
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(self.b.shape_w, generator=g, dtype=torch.float64)
        self.x = torch.randn(spec.shape, generator=g, dtype=torch.float64)

    def time_u(self):
        self.b.u(self.w)

    def time_u_adjoint(self):
        self.b.u_adjoint(self.x)


class Skill:
    """Analysis RMSE (normalised, channel mean, after 2 cycles) on a fixed synthetic cycle:
    smooth fields advected one cell east per 6 h, forecast by persistence, 5 % observed."""

    params = sorted(METHODS)
    param_names = ["method"]
    timeout = 900

    def track_analysis_rmse(self, name):
        spec = StateSpec.create(("t850", "z500", "u850"), np.linspace(78.75, -78.75, 8),
                                np.arange(16) * 22.5, "legendre-gauss")
        g = torch.Generator().manual_seed(0)
        x0 = _smooth(torch.randn(3, 8, 16, generator=g))
        trajectory = torch.stack([x0.roll(t, dims=-1) for t in range(64)])
        times = np.datetime64("2001-01-01", "ns") + np.arange(64) * np.timedelta64(6, "h")
        ds = spec.to_dataset(trajectory, time=times)
        model = Persistence(spec)
        cls = METHODS[name]
        method = cls.for_tests() if hasattr(cls, "for_tests") else cls()
        errors = trajectory[4:48] - trajectory[:44]  # 24-h persistence errors
        # sample j's truth is frame j + 4 (DiffDA trains on (truth − error, truth) pairs)
        ctx = TrainingContext(spec=spec, model=model, train_truth=lambda: trajectory[:48],
                              samples=lambda kind="nmc", **kw: errors,
                              sample_targets=lambda kind="nmc", **kw: torch.arange(44) + 4,
                              device=torch.device("cpu"), seed=0, progress=False)
        analyser = method.load(method.fit(ctx), spec, "cpu")
        truth = TruthWindow(ds.isel(time=slice(48, 64)), spec, torch.device("cpu"))
        settings = CycleSettings(days=2, first_lead_hours=6, spinup_cycles=2)
        start = first_background(model, truth, settings)
        if method.members:  # centred 24-h persistence errors as the initial perturbations
            eps = errors[: method.members] - errors[: method.members].mean(0)
            start = dataclasses.replace(start, members=start.history[None] + eps[:, None])
        result = run_cycles(analyser, model, truth, start, ObservationSettings(density=0.05),
                            settings, trajectory[:48].mean(0), window_hours=method.window_hours,
                            progress=False)
        return float(np.nanmean(result.per_channel["rmse"][2:, 1] / spec.std))

    track_analysis_rmse.unit = "normalised RMSE"


class AnalysisInReferenceUnits:
    """One analysis per method as in ``Analysis``, in reference units (benchmarks/
    reference_units.py): its CPU time over that of a frozen kernel timed next to it. Compare
    these across recordings made under different loads, where raw times move together."""

    params = sorted(METHODS)
    param_names = ["method"]
    timeout = 900
    setup = Analysis.setup
    teardown = Analysis.teardown

    def track_analyse(self, name):
        return in_reference_units(lambda: self.analyser.analyse(self.background, self.obs),
                                  ReferenceKernel())

    track_analyse.unit = "reference kernels"


class EmulatorStepInReferenceUnits:
    """``EmulatorStep`` in reference units."""

    setup = EmulatorStep.setup

    def track_step(self):
        return in_reference_units(lambda: self.model.step(self.frames), ReferenceKernel())

    track_step.unit = "reference kernels"
