"""U_h's synthesis and U_p's winds in real arithmetic, with hand-written adjoints.

Both are built from torch-harmonics' precomputed Legendre tables (so the conventions are
exactly those of methods/common/spectral.py, which tests compare against) but applied in
real arithmetic, one Legendre matrix per zonal order m, with the adjoints written out instead
of taken by autograd. Why: autograd's backward through torch-harmonics' complex einsums cost
4–5× the forward at 32 × 64 and made Uᵀ 85 % of a 3DVar iteration (profiled: U 6.8 ms,
Uᵀ 50 ms per call, 1 thread).

Notation: a real field f(φ_h, λ_w) on H × W points, its longitude Fourier coefficients
F_m(h) for m < M (M = mmax), spectral coefficients a_lm for l < L (L = lmax).

Synthesis (torch-harmonics' InverseRealSHT, norm "ortho"):
    F_m(h) = Σ_l P_m[h, l] a_lm,      f(h, w) = Σ_m c_m Re(F_m(h) e^{2πimw/W}),
    c_0 = 1, c_m = 2 (0 < m < W/2), c_{W/2} = 1   (irfft with norm "forward")
Its adjoint, for a grid field g:
    G_m(h) = c_m Σ_w g(h, w) e^{−2πimw/W}   (c_m × rfft),    a*_lm = Σ_h P_m[h, l] G_m(h)
(the imaginary parts of m = 0 and m = W/2 carry nothing and are zeroed).

Winds from ψ̃, χ̃ (spectral.Transforms.winds): analysis of each field, then vector synthesis
with the derivative tables (d0, d1) of InverseRealVectorSHT. Analysis and synthesis fuse into
two H × H matrices per order, A_m = d0_m Q_m and B_m = d1_m Q_m, Q_m the analysis table
(quadrature weights included), acting on the rfft (norm "forward") of ψ̃ and χ̃.
"""

from __future__ import annotations

import torch

from methods.common.spectral import Transforms


def _fourier_weights(nlon: int, mmax: int, dtype, device) -> torch.Tensor:
    """c_m (M,): how often order m appears in a real field's irfft (1, 2, …, 2, [1])."""
    c = torch.full((mmax,), 2.0, dtype=dtype, device=device)
    c[0] = 1.0
    if nlon % 2 == 0 and nlon // 2 < mmax:
        c[nlon // 2] = 1.0
    return c


def _real_parts(nlon: int, mmax: int, dtype, device) -> torch.Tensor:
    """(M,) 0 where the imaginary part of order m is meaningless (m = 0, Nyquist), else 1."""
    keep = torch.ones(mmax, dtype=dtype, device=device)
    keep[0] = 0.0
    if nlon % 2 == 0 and nlon // 2 < mmax:
        keep[nlon // 2] = 0.0
    return keep


def _per_order(m: torch.Tensor, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """m_m f_m for each order m and each part f (…, K, M): one batched matmul (M, R, K)."""
    x = torch.stack(parts)  # (P, …, K, M)
    lead = x.shape[:-2]
    cols = x.reshape(-1, x.shape[-2], x.shape[-1]).permute(2, 1, 0).contiguous()  # (M, K, P·…)
    out = torch.bmm(m, cols).permute(2, 1, 0)  # (P·…, R, M)
    return list(out.reshape(*lead, m.shape[1], x.shape[-1]).unbind(0))


class Synthesis:
    """U_h's inverse scalar SHT a (…, L, M, 2 = re/im) -> f (…, H, W) and its adjoint."""

    def __init__(self, t: Transforms):
        self.nlon, self.mmax = t.nlon, t.mmax
        self.p = t.isht.pct.to(torch.float64)  # (M, H, L)
        self.p_t = self.p.transpose(1, 2)  # (M, L, H): a view, BLAS reads it transposed
        self.c = _fourier_weights(t.nlon, t.mmax, torch.float64, self.p.device)
        self.keep_im = _real_parts(t.nlon, t.mmax, torch.float64, self.p.device)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """a (…, L, M, 2) real -> (…, H, W)."""
        re, im = _per_order(self.p, [a[..., 0], a[..., 1] * self.keep_im])
        return torch.fft.irfft(torch.complex(re, im), n=self.nlon, dim=-1, norm="forward")

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """g (…, H, W) -> (…, L, M, 2), the exact transpose of __call__."""
        spec = torch.fft.rfft(g, dim=-1)[..., : self.mmax] * self.c  # G_m(h), (…, H, M)
        re, im = _per_order(self.p_t, [spec.real, spec.imag])
        return torch.stack([re, im * self.keep_im], dim=-1)


class Winds:
    """(u, v) from (ψ̃, χ̃) on the grid, (…, H, W) each, and the adjoint (all float64)."""

    def __init__(self, t: Transforms):
        self.nlon, self.mmax = t.nlon, t.mmax
        q = t.sht.weights.to(torch.float64)  # (M, L, H): analysis, quadrature included
        d = t.ivsht.dpct.to(torch.float64)  # (2, M, H, L)
        self.a = torch.einsum("mhl,mlk->mhk", d[0], q)  # (M, H, H)
        self.b = torch.einsum("mhl,mlk->mhk", d[1], q)
        # transposes as views (no copies: at 721 × 1440 each (M, H, H) table is 1.5 GB)
        self.a_t, self.b_t = self.a.transpose(1, 2), self.b.transpose(1, 2)
        self.c = _fourier_weights(t.nlon, t.mmax, torch.float64, q.device)
        self.keep_im = _real_parts(t.nlon, t.mmax, torch.float64, q.device)

    def _fourier(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.fft.rfft(f, dim=-1, norm="forward")[..., : self.mmax]
        return spec.real, spec.imag * self.keep_im

    @staticmethod
    def _both(m1: torch.Tensor, m2: torch.Tensor, parts: list[torch.Tensor]):
        """m1 f and m2 f for each (…, H, M) part, as two batched matmuls over m."""
        x = torch.stack(parts)  # (P, …, H, M)
        shape = x.shape
        cols = x.reshape(-1, shape[-2], shape[-1]).permute(2, 1, 0).contiguous()  # (M, H, P·…)
        out = [torch.bmm(m, cols).permute(2, 1, 0).reshape(shape) for m in (m1, m2)]
        return out[0].unbind(0), out[1].unbind(0)

    def __call__(self, psi: torch.Tensor, chi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spheroidal s = χ̂, toroidal t = −ψ̂ (spectral.Transforms.winds); components
        (θ, λ) = (−v, u):
            θ: re = A s_re − B t_im,  im = A s_im + B t_re
            λ: re = −B s_im − A t_re, im = B s_re − A t_im
        """
        s_re, s_im = self._fourier(chi)
        p_re, p_im = self._fourier(psi)  # t = −ψ̂
        (as_re, as_im, ap_re, ap_im), (bs_re, bs_im, bp_re, bp_im) = self._both(
            self.a, self.b, [s_re, s_im, p_re, p_im])
        k = self.keep_im  # irfft ignores the imaginary parts of m = 0 (and W/2): say so
        theta = torch.complex(as_re + bp_im, (as_im - bp_re) * k)
        lam = torch.complex(-bs_im + ap_re, (bs_re + ap_im) * k)
        u = torch.fft.irfft(lam, n=self.nlon, dim=-1, norm="forward")
        v = -torch.fft.irfft(theta, n=self.nlon, dim=-1, norm="forward")
        return u, v

    def adjoint(self, gu: torch.Tensor, gv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g_u, g_v) (…, H, W) -> (g_ψ̃, g_χ̃), the exact transpose of __call__."""
        # transpose of irfft(norm="forward"): c_m × rfft; θ carries −v, λ carries u
        g_th = torch.fft.rfft(-gv, dim=-1)[..., : self.mmax] * self.c
        g_la = torch.fft.rfft(gu, dim=-1)[..., : self.mmax] * self.c
        th_re, la_re = g_th.real, g_la.real
        th_im, la_im = g_th.imag * self.keep_im, g_la.imag * self.keep_im
        (a_th_re, a_th_im, a_la_re, a_la_im), (b_th_re, b_th_im, b_la_re, b_la_im) = self._both(
            self.a_t, self.b_t, [th_re, th_im, la_re, la_im])
        s_re = a_th_re + b_la_im
        s_im = a_th_im - b_la_re
        p_re = -b_th_im + a_la_re
        p_im = b_th_re + a_la_im
        return self._fourier_adjoint(p_re, p_im), self._fourier_adjoint(s_re, s_im)

    def _fourier_adjoint(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Transpose of f -> (Re, Im·keep) of rfft(f, norm="forward")[:M]:
        f*(w) = (1/W) Σ_m (re_m cos θ − im_m sin θ) = irfft(G / c, norm="forward") / W."""
        g = torch.complex(re, im * self.keep_im) / self.c
        return torch.fft.irfft(g, n=self.nlon, dim=-1, norm="forward") / self.nlon
