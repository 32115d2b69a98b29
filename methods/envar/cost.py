"""Hybrid 3DEnVar's control-variable transform, its quadratic cost and the CG solve.

    x = x_b + G z,   z = (v, α),   G z = β_s U v + β_e Σ_n X'_n ∘ (Λ α_n)
    J(z) = ½ ‖v‖² + ½ Σ_n ‖α_n‖² + ½ ‖(H(x_b + G z) − y) / σ‖²

so that B = G Gᵀ = β_s² U Uᵀ + β_e² (X' X'ᵀ) ∘ C_loc (Lorenc 2003; Buehner 2005), with
    v        (K, n_coef)      3DVar's control vector (U = methods/common/covariance BMatrix)
    X'_n     (C, H, W)        (x_n − x̄) / √(N − 1), the n-th normalised background perturbation
    α_n      (G, n_loc)       its localisation control variable: real spectral coefficients
                              of one field per channel group (G groups)
    Λ        (G, n_loc) -> (G, H, W)  L^{1/2}: a spectral filter f_l then the inverse SHT
    C_loc    = Λ Λᵀ, an isotropic correlation on the sphere (``Localisation``)
    ∘        the Schur (element-wise) product; channel c takes the field of its group g(c)

H is linear, so J is quadratic: ∇J(z) = A z − b with
    A = I + Gᵀ Hᵀ R⁻¹ H G,   b = Gᵀ Hᵀ R⁻¹ d,   d = y − H(x_b),   R = diag(σ²),
solved by conjugate gradients (methods/common/krylov.py) on one flat float64 vector
z = [v.ravel(), α.ravel()] from z = 0, stopping on the residual's relative 2-norm.
"""

from __future__ import annotations

import math

import torch

from methods.base import Observations
from methods.common import krylov
from methods.common.covariance import BMatrix
from methods.common.covariance.legendre import Synthesis
from methods.common.spectral import EARTH_RADIUS_M, Transforms


class Localisation:
    """Λ = L^{1/2}: real spectral coefficients (…, n_loc) -> grid fields (…, H, W), float64.

    Λ a = synthesis(f_l a_lm) with the heat-kernel spectrum (a Gaussian on the sphere)

        f_l² = exp(−l (l + 1) L² / (2 a²)) / Σ_l (2l + 1)/(4π) exp(−l (l + 1) L² / (2 a²)),

    L = ``length_km``, a the Earth's radius: C_loc = Λ Λᵀ has correlation
    Σ_l f_l² (2l + 1)/(4π) P_l(cos θ) ≈ exp(−d² / (2 L²)) at distance d = a θ ≪ a, and unit
    variance at every point (the normalisation). L = ∞ keeps l = 0 alone, f_0² = 4π: Λ α is
    the constant field α_00 and C_loc = 1 everywhere (no localisation). The coefficient slots
    and their √2 scaling follow covariance.BMatrix.u_h (white α gives E|a_lm|² = f_l²); slots
    with f_l = 0 are dropped (at L = ∞ one coefficient per field remains).
    """

    def __init__(self, transforms: Transforms, length_km: float):
        self.synthesis = Synthesis(transforms)
        lmax, mmax, nlon = transforms.lmax, transforms.mmax, transforms.nlon
        l_deg = torch.arange(lmax, dtype=torch.float64)
        if math.isinf(length_km):
            f2 = (l_deg == 0).to(torch.float64)
        else:  # the heat kernel of time t = L² / (2 a²)
            f2 = torch.exp(-l_deg * (l_deg + 1) * (length_km * 1e3 / EARTH_RADIUS_M) ** 2 / 2)
        f2 = f2 / ((2 * l_deg + 1) * f2 / (4 * math.pi)).sum()  # unit point variance
        ll, mm, part = torch.meshgrid(torch.arange(lmax), torch.arange(mmax), torch.arange(2),
                                      indexing="ij")
        real_only = (mm == 0) | ((nlon % 2 == 0) & (mm == nlon // 2))
        valid = ((mm <= ll) & ((part == 0) | ~real_only)).reshape(-1)
        scale = torch.where(real_only, 1.0, 1.0 / math.sqrt(2.0)).reshape(-1).to(torch.float64)
        amp = f2.sqrt()[ll.reshape(-1)] * scale
        keep = valid & (amp > 0)
        device = transforms.device
        self.slots = keep.nonzero()[:, 0].to(device)  # (n_loc,) into the (L, M, 2) array
        self.amp = amp[keep].to(device)  # (n_loc,)
        self.n_loc, self.shape_coef = int(keep.sum()), (lmax, mmax, 2)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """Λ a: (…, n_loc) -> (…, H, W)."""
        flat = a.new_zeros(*a.shape[:-1], math.prod(self.shape_coef))
        flat[..., self.slots] = a * self.amp
        return self.synthesis(flat.reshape(*a.shape[:-1], *self.shape_coef))

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Λᵀ g: (…, H, W) -> (…, n_loc), the exact transpose of __call__."""
        flat = self.synthesis.adjoint(g).reshape(*g.shape[:-2], -1)
        return flat[..., self.slots] * self.amp


class HybridTransform:
    """G and Gᵀ between the flat control vector z = [v, α] and increments (C, H, W), float64.

    Attributes:
        b: the static BMatrix (U, Uᵀ); its part is skipped when β_s = 0.
        loc: the Localisation Λ (on b's device).
        perturbations: X' (N, C, H, W), (x_n − x̄) / √(N − 1); its part is skipped when β_e = 0.
        group: (C,) long, the channel group g(c) whose α field channel c takes.
        n_groups: G.
        beta_s, beta_e: β_s, β_e (the square roots of the weights of B_static and P_e ∘ C_loc).
    """

    def __init__(self, b: BMatrix, loc: Localisation, perturbations: torch.Tensor,
                 group: torch.Tensor, beta_s: float, beta_e: float):
        self.b, self.loc, self.x_pert = b, loc, perturbations
        n, c, h, w = perturbations.shape
        # one field per member ("all"): the Schur sums as H·W batched (N × C) products on
        # contiguous operands, ~2 ms each way at 32 × 64 × 69, N = 20, one thread (the
        # broadcast product and sum of the general case: ~25 ms for the adjoint)
        self.by_point = perturbations.reshape(n, c, h * w).permute(2, 0, 1).contiguous() \
            if int(group.max()) == 0 else None  # (H·W, N, C)
        self.group, self.n_groups = group, int(group.max()) + 1
        self.beta_s, self.beta_e = beta_s, beta_e
        self.n_v = math.prod(b.shape_w)
        self.shape_alpha = (perturbations.shape[0], self.n_groups, loc.n_loc)  # (N, G, n_loc)
        self.size = self.n_v + math.prod(self.shape_alpha)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (size,) -> (v (K, n_coef), α (N, G, n_loc)), views."""
        return z[: self.n_v].reshape(self.b.shape_w), z[self.n_v:].reshape(self.shape_alpha)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """G z = β_s U v + β_e Σ_n X'_n ∘ (Λ α_n)[g(c)]: (size,) -> (C, H, W)."""
        v, alpha = self.split(z)
        out = z.new_zeros(self.x_pert.shape[1:])
        if self.beta_s:
            out = out + self.beta_s * self.b.u(v)
        if self.beta_e:
            fields = self.loc(alpha)  # (N, G, H, W)
            if self.by_point is not None:  # Σ_n X'_n,c(p) f_n(p) per point p
                f = fields.reshape(fields.shape[0], -1).T.contiguous()[:, None]  # (H·W, 1, N)
                schur = torch.bmm(f, self.by_point)[:, 0].T.reshape(out.shape)
            else:  # each channel takes its group's field
                schur = (self.x_pert * fields[:, self.group]).sum(0)
            out = out + self.beta_e * schur
        return out

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Gᵀ g = [β_s Uᵀ g, β_e Λᵀ Σ_{c in group} X'_n,c ∘ g_c]: (C, H, W) -> (size,)."""
        v = self.beta_s * self.b.u_adjoint(g) if self.beta_s else g.new_zeros(self.b.shape_w)
        if self.beta_e:
            n, c, h, w = self.x_pert.shape
            if self.by_point is not None:  # Σ_c X'_n,c(p) g_c(p) per point p
                per_point = torch.bmm(self.by_point,
                                      g.reshape(c, h * w).T.contiguous()[:, :, None])
                per_group = per_point[..., 0].T.reshape(n, 1, h, w)
            else:
                prod = self.x_pert * g  # (N, C, H, W)
                per_group = prod.new_zeros(n, self.n_groups, h, w)
                per_group.index_add_(1, self.group, prod)  # Σ over the channels of each group
            alpha = self.beta_e * self.loc.adjoint(per_group)
        else:
            alpha = g.new_zeros(self.shape_alpha)
        return torch.cat([v.reshape(-1), alpha.reshape(-1)])


def cost_function(g: HybridTransform, obs: Observations, d: torch.Tensor, sigma: torch.Tensor):
    """J(z) = ½ zᵀz + ½ ‖(H G z − d) / σ‖² (= the module's J: H linear, d = y − H(x_b))."""
    def cost(z: torch.Tensor) -> torch.Tensor:
        r = (obs.operator(g(z)) - d) / sigma
        return 0.5 * z.square().sum() + 0.5 * r.square().sum()

    return cost


def gradient(g: HybridTransform, obs: Observations, d: torch.Tensor, sigma: torch.Tensor):
    """∇J(z) = z + Gᵀ Hᵀ R⁻¹ (H G z − d) = A z − b, with the explicit adjoints."""
    def grad(z: torch.Tensor) -> torch.Tensor:
        return z + g.adjoint(obs.adjoint((obs.operator(g(z)) - d) / sigma.square()))

    return grad


def solve(g: HybridTransform, obs: Observations, d: torch.Tensor, sigma: torch.Tensor, *,
          max_iterations: int, tolerance: float) -> tuple[torch.Tensor, int]:
    """z_a = A⁻¹ b by conjugate gradients from z = 0, A = I + Gᵀ Hᵀ R⁻¹ H G,
    b = Gᵀ Hᵀ R⁻¹ d; stops when ‖b − A z‖ ≤ tolerance ‖b‖. Returns (z_a, iterations)."""
    def hessian(p: torch.Tensor) -> torch.Tensor:
        return p + g.adjoint(obs.adjoint(obs.operator(g(p)) / sigma.square()))

    rhs = g.adjoint(obs.adjoint(d / sigma.square()))
    return krylov.conjugate_gradients(hessian, rhs, max_iterations=max_iterations,
                                      tolerance=tolerance)
