"""asv benchmarks: time and peak memory of the hot paths, and skill on a fixed short cycle.

Run (see README): ``asv machine --yes --machine NAME`` once, then
``asv run -E existing --set-commit-hash=$(git rev-parse HEAD) --machine NAME``.
Torch uses ONE thread here (set before torch is imported): with two threads on a busy 2-core
machine torch slows by up to 100×, which would turn every comparison into noise.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from bench.config import CycleSettings, ObservationSettings  # noqa: E402
from bench.cycle import TruthWindow, first_background, run_cycles  # noqa: E402
from bench.experiments.synthetic import synthetic_statistics, untrained  # noqa: E402
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet  # noqa: E402
from bench.forecast.persistence import Persistence  # noqa: E402
from bench.observations import observe  # noqa: E402
from bench.state import FENGWU_CHANNELS, StateSpec  # noqa: E402
from methods import METHODS  # noqa: E402
from methods.base import Background, TrainingContext  # noqa: E402

LAT = np.linspace(85.76, -85.76, 32)
LON = np.arange(64) * 5.625


def _spec() -> StateSpec:
    return StateSpec.create(FENGWU_CHANNELS, LAT, LON, "legendre-gauss")


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """One pass of a 5-point mean over the last two (lat, lon) axes, periodic."""
    return (x + x.roll(1, -1) + x.roll(-1, -1) + x.roll(1, -2) + x.roll(-1, -2)) / 5


def _smooth_fields(n: int, seed: int) -> torch.Tensor:
    """n random large-scale fields (n, 69, 32, 64): white noise smoothed a few times."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 69, 32, 64, generator=g)
    for _ in range(4):
        x = _smooth(x)
    return x / x.std()


def _context(spec, cache: Path) -> TrainingContext:
    truth = _smooth_fields(64, 0)
    samples = _smooth_fields(48, 1) * 0.3
    return TrainingContext(spec=spec, model=Persistence(spec), train_truth=lambda: truth,
                           samples=lambda kind="nmc", **kw: samples, device=torch.device("cpu"),
                           cache_dir=cache, seed=0, progress=False)


class EmulatorStep:
    """One 6-hour emulator step at 32×64×69 (budget: 20 ms on 2 cores)."""

    def setup(self):
        torch.manual_seed(0)
        self.model = Emulator(EmulatorNet(69, LAT, 64, EmulatorConfig()), _spec())
        self.frames = torch.randn(1, 2, 69, 32, 64)

    def time_step(self):
        self.model.step(self.frames)

    def peakmem_step(self):
        self.model.step(self.frames)


class Analysis:
    """One analysis per registered method at 32×64×69 with 1 % of the grid observed."""

    params = sorted(METHODS)
    param_names = ["method"]
    timeout = 600

    def setup(self, name):
        spec = _spec()
        self._tmp = tempfile.TemporaryDirectory()
        if name == "diffda":
            # DiffDA's default training takes ~15 min; its cost per analysis is a fixed number
            # of denoiser calls of the configured network, whatever the weights
            self.method = untrained(name, spec)
        else:
            self.method = METHODS[name]()
            self.method.prepare(_context(spec, Path(self._tmp.name)))
        fields = _smooth_fields(3, 2)
        self.background = Background(fields[1], fields[:2], np.datetime64("2001-01-01"), 6, 0)
        self.obs = observe(fields[2], spec, ObservationSettings(density=0.01), cycle=0)

    def teardown(self, name):
        self._tmp.cleanup()

    def time_analyse(self, name):
        self.method.analyse(self.background, self.obs)

    def peakmem_analyse(self, name):
        self.method.analyse(self.background, self.obs)


class ThreeDVarTransform:
    """3DVar's U and Uᵀ (B = UUᵀ) at 32×64×69 with statistics of the estimated shapes."""

    def setup(self):
        from methods.threedvar.b_matrix import BMatrix

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
        import xarray as xr  # noqa: F401

        spec = StateSpec.create(("t850", "z500", "u850"), np.linspace(78.75, -78.75, 8),
                                np.arange(16) * 22.5, "legendre-gauss")
        g = torch.Generator().manual_seed(0)
        x0 = _smooth(torch.randn(3, 8, 16, generator=g))
        trajectory = torch.stack([x0.roll(t, dims=-1) for t in range(64)])
        times = np.datetime64("2001-01-01", "ns") + np.arange(64) * np.timedelta64(6, "h")
        ds = spec.to_dataset(trajectory, time=times)
        model = Persistence(spec)
        with tempfile.TemporaryDirectory() as tmp:
            method = METHODS[name].for_tests() if hasattr(METHODS[name], "for_tests") \
                else METHODS[name]()
            errors = trajectory[4:48] - trajectory[:44]  # 24-h persistence errors
            ctx = TrainingContext(spec=spec, model=model,
                                  train_truth=lambda: trajectory[:48],
                                  samples=lambda kind="nmc", **kw: errors,
                                  device=torch.device("cpu"), cache_dir=Path(tmp), seed=0,
                                  progress=False)
            method.prepare(ctx)
            truth = TruthWindow(ds.isel(time=slice(48, 64)), spec, torch.device("cpu"))
            settings = CycleSettings(days=2, first_lead_hours=6)
            start = first_background(model, truth, settings)
            result = run_cycles(method, model, truth, start, ObservationSettings(density=0.05),
                                settings, trajectory[:48].mean(0), progress=False)
        return float(np.nanmean(result.rmse[2:, 1] / spec.std))

    track_analysis_rmse.unit = "normalised RMSE"
