"""Small synthetic worlds with known dynamics for forecast-model tests."""

import numpy as np
import torch

from bench.forecast.base import ForecastModel
from bench.state import StateSpec


def small_spec(channels=("t850", "z500", "u850"), nlat=8, nlon=16) -> StateSpec:
    lat = np.linspace(78.75, -78.75, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    return StateSpec.create(list(channels), lat, lon, "legendre-gauss")


def advected_trajectory(spec: StateSpec, frames: int, seed: int) -> torch.Tensor:
    """Smooth random fields moving one grid cell east per 6 h: x_{t+1}(λ) = x_t(λ − Δλ)."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = spec.shape
    x0 = torch.randn(c, h, w, generator=g)
    # smooth a little so the pattern is large-scale
    x0 = (x0 + x0.roll(1, -1) + x0.roll(-1, -1) + x0.roll(1, -2) + x0.roll(-1, -2)) / 5
    return torch.stack([x0.roll(t, dims=-1) for t in range(frames)])


class Shift(ForecastModel):
    """The exact model of ``advected_trajectory``."""

    def __init__(self, spec, history=2):
        self.spec, self.history, self.device = spec, history, torch.device("cpu")

    def _step(self, frames):
        return frames[:, -1].roll(1, dims=-1)


class InMemoryWorld:
    """A World look-alike over a synthetic trajectory (train = first 3/4, valid = the rest)."""

    def __init__(self, spec: StateSpec, trajectory: torch.Tensor, name="tiny"):
        import xarray as xr  # noqa: F401  (documents the dependency of to_dataset)

        self.name, self.spec, self.card = name, spec, {"name": name, "frames": len(trajectory)}
        times = np.datetime64("2001-01-01", "ns") + np.arange(len(trajectory)) * np.timedelta64(
            6, "h")
        self._ds = spec.to_dataset(trajectory, time=times)
        self._split = times[3 * len(trajectory) // 4]

    def period(self, name):
        t = self._ds["time"].values
        return self._ds.isel(time=(t < self._split) if name == "train" else (t >= self._split))


def persistence_setup(cfg):
    """A bench.setup.Setup on a small advected world with persistence as the model (a second
    to build, deterministic): the world's "valid" period stands in for the test period."""
    from bench.cycle import TruthWindow, first_background
    from bench.forecast.persistence import Persistence
    from bench.setup import Setup

    spec = small_spec()
    world = InMemoryWorld(spec, advected_trajectory(spec, 160, seed=0))
    world.period = lambda name, base=world.period: base("valid" if name == "test" else name)
    model = Persistence(spec)
    truth = TruthWindow(world.period("test"), spec, torch.device("cpu"))
    start = first_background(model, truth, cfg.cycle)
    clim = spec.to_tensor(world.period("train")).mean(0)
    return Setup(world, model, "persistence", truth, start, clim, torch.device("cpu"))
