"""Spherical-harmonic transforms of one grid, with the truncation ``StateSpec`` gives it.

Truncation: ``bench.state.truncation`` (``StateSpec.truncation``): lmax = nlat on Gauss–Legendre
grids (exact round trip), (nlat + 1) // 2 on equiangular grids with poles; mmax = min(lmax,
nlon // 2 + 1). Always passed explicitly: torch-harmonics 0.9's defaults differ by grid.

``Transforms`` (scalar and vector SHTs in float64; 3DVar's covariance model): winds from stream
function ψ and velocity potential χ (φ latitude, λ longitude, a Earth radius):
    u = −(1/a) ∂ψ/∂φ + 1/(a cos φ) ∂χ/∂λ,      v = 1/(a cos φ) ∂ψ/∂λ + (1/a) ∂χ/∂φ.
We carry ψ̃ = ψ/a and χ̃ = χ/a (units m/s, so numbers are O(1)). With norm "ortho" scalar
coefficients ψ̃_lm, χ̃_lm, torch-harmonics 0.9.3's InverseRealVectorSHT takes coefficients
(spheroidal, toroidal) = (χ̃_lm, −ψ̃_lm) — its vector harmonics are ∇Y and r̂ × ∇Y, *not*
divided by √(l(l+1)), so no such factor appears — and returns components (colatitude θ,
longitude λ) = (−v, u). Calibrated by tests (solid-body rotation ψ = −Ω a² sin φ gives
u = Ω a cos φ, v = 0; ψ̃ = χ̃ = cos φ cos λ against the formulas above).

``TriangularTruncation`` (the built-in emulator's increment filter): the projection on the
harmonics the grid resolves. On the 32 × 64 grid it removes the zonal Nyquist order m = 32 and
the l ≥ 32 parts of m ≤ 31, where the nature run has no power and where the unfiltered emulator
grew a 2Δλ mode in its meridional wind over 10–15 days of free running (see
bench/forecast/emulator.py, EmulatorConfig.truncate_increments).
"""

from __future__ import annotations

import torch
import torch_harmonics as th
from torch import nn

from bench.state import StateSpec, truncation

EARTH_RADIUS_M = 6.371e6


class Transforms:
    """Scalar and vector SHTs of one grid, in float64, on one device.

    Shapes: grid fields (..., H, W) real; coefficients (..., lmax, mmax) complex (entries with
    m > l are zero).
    """

    def __init__(self, grid: str, nlat: int, nlon: int, device: torch.device | str = "cpu"):
        self.grid, self.nlat, self.nlon = grid, nlat, nlon
        self.lmax, self.mmax = truncation(grid, nlat, nlon)
        kw = dict(lmax=self.lmax, mmax=self.mmax, grid=grid, norm="ortho")
        self.sht = th.RealSHT(nlat, nlon, **kw).double().to(device)
        self.isht = th.InverseRealSHT(nlat, nlon, **kw).double().to(device)
        self.vsht = th.RealVectorSHT(nlat, nlon, **kw).double().to(device)
        self.ivsht = th.InverseRealVectorSHT(nlat, nlon, **kw).double().to(device)
        self.device = torch.device(device)

    @classmethod
    def for_spec(cls, spec: StateSpec, device: torch.device | str = "cpu") -> Transforms:
        """The transforms of ``spec``'s grid."""
        return cls(spec.grid, spec.shape[1], spec.shape[2], device)

    def to(self, device: torch.device | str) -> Transforms:
        if torch.device(device) == self.device:
            return self
        return Transforms(self.grid, self.nlat, self.nlon, device)

    def winds(self, psi: torch.Tensor, chi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) in m/s from ψ̃, χ̃ (m/s), all (..., H, W) float64. Linear."""
        coeffs = torch.stack([self.sht(chi), -self.sht(psi)], dim=-3)  # (..., 2, L, M)
        vec = self.ivsht(coeffs)  # (..., 2, H, W): (θ, λ) components = (−v, u)
        return vec[..., 1, :, :], -vec[..., 0, :, :]

    def psi_chi(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ψ̃, χ̃) in m/s from winds (m/s), (..., H, W); the l = 0 parts (no wind) are 0."""
        coeffs = self.vsht(torch.stack([-v, u], dim=-3))  # (..., 2, L, M): (spheroidal, toroidal)
        chi_c, psi_c = coeffs[..., 0, :, :].clone(), -coeffs[..., 1, :, :]
        psi_c[..., 0, :] = 0
        chi_c[..., 0, :] = 0
        return self.isht(psi_c), self.isht(chi_c)

    def power(self, field: torch.Tensor) -> torch.Tensor:
        """Power per total wavenumber, (..., H, W) -> (..., lmax): |f_l0|² + 2 Σ_{m>0} |f_lm|².

        With orthonormal harmonics this is the part of ∫ f² dΩ in degree l (a real field's
        m > 0 coefficient stands for ±m)."""
        c = self.sht(field).abs().square()
        return c[..., 0] + 2.0 * c[..., 1:].sum(dim=-1)


class TriangularTruncation(nn.Module):
    """P: (..., H, W) -> (..., H, W), the projection on spherical harmonics with l < lmax.

    P = synthesis ∘ analysis (torch-harmonics RealSHT / InverseRealSHT, norm "ortho"); linear,
    P ∘ P = P up to quadrature round-off, and the identity on fields the grid resolves exactly.
    Works in the input's dtype (float32 for the emulator). Its tables are non-persistent
    buffers: rebuilt here, never stored in a checkpoint.
    """

    def __init__(self, grid: str, nlat: int, nlon: int):
        super().__init__()
        lmax, mmax = truncation(grid, nlat, nlon)
        kw = dict(lmax=lmax, mmax=mmax, grid=grid, norm="ortho")
        self.analysis = th.RealSHT(nlat, nlon, **kw)
        self.synthesis = th.InverseRealSHT(nlat, nlon, **kw)

    @classmethod
    def for_spec(cls, spec: StateSpec) -> TriangularTruncation:
        """The truncation of ``spec``'s grid (``StateSpec.truncation``)."""
        return cls(spec.grid, spec.shape[1], spec.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.analysis(x)).to(x.dtype)
