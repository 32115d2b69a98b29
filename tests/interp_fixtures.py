"""Shared by the interpolation tests (tests/test_interp*.py): a 16 × 32 Gaussian grid with three
channels, the analyser on it, grid-point observations, the Gaussian kernel, and a smooth truth
observed densely."""

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import Background, Observations
from methods.interp import Interpolation, InterpolationAnalyser

SPEC = StateSpec.create(
    ["t850", "z500", "u850"], lat=np.linspace(84.375, -84.375, 16), lon=np.arange(32) * 11.25,
    grid="legendre-gauss")
C, H, W = SPEC.shape


# --------------------------------------------------------------------------------- helpers
def loaded(**config) -> InterpolationAnalyser:
    """The analyser of Interpolation(**config) on SPEC's grid (nothing to fit)."""
    return Interpolation(**config).load({}, SPEC, "cpu")


def background(x_b: torch.Tensor) -> Background:
    return Background(x_b=x_b, history=x_b[None], valid_time=np.datetime64("2020-01-01T00"),
                      lead_hours=6, cycle=0)


def grid_obs(points, dtype=torch.float32) -> Observations:
    """Grid-point observations (K = 1) from (channel, lat_index, lon_index, value) tuples."""
    n = len(points)
    ch, i, j, y = (np.array([p[k] for p in points]) for k in range(4)) if n else ([],) * 4
    i, j = np.asarray(i, dtype=int), np.asarray(j, dtype=int)
    return Observations(
        values=torch.as_tensor(np.asarray(y, dtype=float), dtype=dtype),
        error_std=torch.zeros(n, dtype=dtype),
        channel=torch.as_tensor(np.asarray(ch, dtype=int), dtype=torch.long),
        flat_index=torch.as_tensor(i * W + j, dtype=torch.long).reshape(n, 1),
        weights=torch.ones(n, 1, dtype=dtype),
        lat=SPEC.lat[i], lon=SPEC.lon[j], grid_shape=(C, H, W))


def gaussian(r, length, cutoff_scales=3.0):
    return np.where(r < cutoff_scales * length, np.exp(-0.5 * (r / length) ** 2), 0.0)


def smooth_field(phase: float) -> np.ndarray:
    """(H, W) smooth field of wavenumbers 1–2, different per phase."""
    lat, lon = np.deg2rad(SPEC.lat)[:, None], np.deg2rad(SPEC.lon)[None, :]
    return (np.cos(lat) * np.cos(lon - phase) + 0.6 * np.sin(2 * lat)
            + 0.4 * np.cos(lat) ** 2 * np.sin(2 * lon + phase))


def dense_setup():
    """Truth, a smooth background error, and noise-free observations at half the grid points
    (checkerboard) of every channel."""
    truth = np.stack([smooth_field(0.3 * k) for k in range(C)])
    error = np.stack([np.roll(smooth_field(1.0 + k), 5, axis=1) for k in range(C)])
    x_b = torch.tensor(truth + error, dtype=torch.float64)
    points = [(c, i, j, truth[c, i, j]) for c in range(C) for i in range(H) for j in range(W)
              if (i + j) % 2 == 0]
    return torch.tensor(truth), x_b, grid_obs(points, dtype=torch.float64)

