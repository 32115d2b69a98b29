"""The covariance model's real-arithmetic spectral maps (methods/common/covariance/legendre.py)
against torch-harmonics, and their hand-written adjoints by the dot-product test."""

import pytest
import torch

from methods.common.covariance.legendre import Synthesis, Winds
from methods.common.spectral import Transforms

GRIDS = [("legendre-gauss", 32, 64), ("equiangular", 33, 64), ("equiangular", 17, 32)]


def _coefficients(t: Transforms, batch: int, g: torch.Generator) -> torch.Tensor:
    """(batch, L, M, 2) random coefficients, zero where m > l and Im(a_l0) = 0."""
    a = torch.randn(batch, t.lmax, t.mmax, 2, dtype=torch.float64, generator=g)
    a = a * (torch.arange(t.mmax)[None, :] <= torch.arange(t.lmax)[:, None])[..., None]
    a[:, :, 0, 1] = 0
    return a


@pytest.mark.parametrize("grid,nlat,nlon", GRIDS)
def test_synthesis_equals_torch_harmonics_and_its_adjoint_is_exact(grid, nlat, nlon):
    t = Transforms(grid, nlat, nlon)
    syn = Synthesis(t)
    g = torch.Generator().manual_seed(0)
    a = _coefficients(t, 5, g)
    reference = t.isht(torch.view_as_complex(a.contiguous()))
    torch.testing.assert_close(syn(a), reference, rtol=0, atol=1e-12)
    y = torch.randn(5, nlat, nlon, dtype=torch.float64, generator=g)
    lhs, rhs = (syn(a) * y).sum(), (a * syn.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@pytest.mark.parametrize("grid,nlat,nlon", GRIDS)
def test_winds_equal_torch_harmonics_and_their_adjoint_is_exact(grid, nlat, nlon):
    t = Transforms(grid, nlat, nlon)
    winds = Winds(t)
    g = torch.Generator().manual_seed(1)
    psi, chi, gu, gv = torch.randn(4, 3, nlat, nlon, dtype=torch.float64, generator=g)
    u, v = winds(psi, chi)
    u_ref, v_ref = t.winds(psi, chi)
    scale = u_ref.abs().max()
    torch.testing.assert_close(u, u_ref, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-12 * scale)
    g_psi, g_chi = winds.adjoint(gu, gv)
    lhs = (u * gu).sum() + (v * gv).sum()
    rhs = (psi * g_psi).sum() + (chi * g_chi).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
