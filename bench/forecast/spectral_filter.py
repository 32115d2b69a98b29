"""Triangular spherical-harmonic truncation of grid fields: the wavenumbers a grid resolves.

Truncation rule (shared with 3DVar's transforms, methods/threedvar/spectral.py):
    "legendre-gauss" (no poles, e.g. the built-in 32 × 64 world): lmax = nlat, an exact round
        trip for fields of total wavenumber l < nlat (T31 on 32 × 64, the nature run's own
        truncation).
    "equiangular" (ERA5, poles included): lmax = (nlat + 1) // 2 (the largest degree the
        Clenshaw–Curtis quadrature integrates exactly; a larger lmax aliases).
    mmax = min(lmax, nlon // 2 + 1): orders m ≤ l < lmax need no more.

The emulator projects each 6-h increment with it (bench/forecast/emulator.py): the 32 × 64
grid also carries the zonal Nyquist order m = 32 and the l ≥ 32 parts of m ≤ 31, where the
nature run has no power, and where the unfiltered emulator grew a 2Δλ mode in its meridional
wind over 10–15 days of free running (see EmulatorConfig.truncate_increments).
"""

from __future__ import annotations

import torch
import torch_harmonics as th
from torch import nn


def truncation(grid: str, nlat: int, nlon: int) -> tuple[int, int]:
    """(lmax, mmax) for a grid type (see the module docstring)."""
    if grid == "legendre-gauss":
        lmax = nlat
    elif grid == "equiangular":
        lmax = (nlat + 1) // 2
    else:
        raise ValueError(f"no spherical-harmonic truncation for grid {grid!r}")
    return lmax, min(lmax, nlon // 2 + 1)


class TriangularTruncation(nn.Module):
    """P: (..., H, W) -> (..., H, W), the projection on spherical harmonics with l < lmax.

    P = synthesis ∘ analysis (torch-harmonics RealSHT / InverseRealSHT, norm "ortho"); linear,
    P ∘ P = P up to quadrature round-off, and the identity on fields the grid resolves exactly.
    Works in the input's dtype (float32 for the emulator).
    """

    def __init__(self, grid: str, nlat: int, nlon: int):
        super().__init__()
        lmax, mmax = truncation(grid, nlat, nlon)
        kw = dict(lmax=lmax, mmax=mmax, grid=grid, norm="ortho")
        self.analysis = th.RealSHT(nlat, nlon, **kw)
        self.synthesis = th.InverseRealSHT(nlat, nlon, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.analysis(x)).to(x.dtype)
