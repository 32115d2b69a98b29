"""Spherical-harmonic transforms for 3DVar: scalar fields and winds from ψ, χ (torch-harmonics).

Truncation (pass ``lmax``/``mmax`` explicitly; torch-harmonics 0.9 defaults differ by grid):
    "legendre-gauss" (no poles, e.g. the built-in 32 × 64 world): lmax = nlat, exact round trip.
    "equiangular" (ERA5, poles included): lmax = (nlat + 1) // 2 (the largest degree the
        Clenshaw–Curtis quadrature integrates exactly; a larger lmax aliases).
    mmax = min(lmax, nlon // 2 + 1): orders m ≤ l < lmax need no more.

Winds from stream function ψ and velocity potential χ (φ latitude, λ longitude, a Earth radius):
    u = −(1/a) ∂ψ/∂φ + 1/(a cos φ) ∂χ/∂λ,      v = 1/(a cos φ) ∂ψ/∂λ + (1/a) ∂χ/∂φ.
We carry ψ̃ = ψ/a and χ̃ = χ/a (units m/s, so numbers are O(1)). With norm "ortho" scalar
coefficients ψ̃_lm, χ̃_lm, torch-harmonics 0.9.3's InverseRealVectorSHT takes coefficients
(spheroidal, toroidal) = (χ̃_lm, −ψ̃_lm) — its vector harmonics are ∇Y and r̂ × ∇Y, *not*
divided by √(l(l+1)), so no such factor appears — and returns components (colatitude θ,
longitude λ) = (−v, u). Calibrated by tests (solid-body rotation ψ = −Ω a² sin φ gives
u = Ω a cos φ, v = 0; ψ̃ = χ̃ = cos φ cos λ against the formulas above).
"""

from __future__ import annotations

import torch
import torch_harmonics as th

from bench.forecast.spectral_filter import truncation

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
