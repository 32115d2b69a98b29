"""Statistics of the covariance model without samples: for timing at any grid (``untrained``).

The cost of U and Uᵀ depends on the grid, the channels and the shapes of the statistics, not on
their values; estimating them from samples (statistics.estimate) would cost more than an
analysis at 0.25°. ``synthetic_statistics`` builds the same dict directly.
"""

from __future__ import annotations

import math

import torch

from bench.state import StateSpec
from methods.common.covariance.bmatrix import layout


def synthetic_statistics(spec: StateSpec, variance_scale: float = 0.25,
                         eof_fraction: float = 0.999, seed: int = 0) -> dict:
    """The dict ``statistics.estimate`` returns, for ``spec``, without samples.

    sigma (K, lmax): σ_l² ∝ (1 + l/3)⁻⁴ for l ≥ 1 (0 at l = 0), unit point variance;
    eofs {group: (n_g, k_g)}: leading eigenvectors of corr(i, j) = exp(−|i − j| / 2) over the
    group's levels explaining ``eof_fraction`` (as estimate() keeps them; 13 levels keep 13);
    std (K, H): √variance_scale; betas {target: (H, n_t, n_p)}: N(0, 0.1²), seeded.
    Same shapes as estimated statistics, so U costs the same.
    """
    groups, _, regressions = layout(spec)
    lmax, _ = spec.truncation
    degree = torch.arange(lmax, dtype=torch.float64)
    var_l = (1 + degree / 3.0) ** -4.0 * (degree >= 1)
    var_l = var_l / ((var_l * (2 * degree + 1)).sum() / (4 * math.pi))
    eofs = {}
    for g in groups:
        idx = torch.arange(g.size, dtype=torch.float64)
        corr = torch.exp(-(idx[:, None] - idx[None, :]).abs() / 2)
        lam, vec = torch.linalg.eigh(corr)
        lam, vec = lam.flip(0), vec.flip(1)
        k = min(int((torch.cumsum(lam, 0) / lam.sum() < eof_fraction).sum()) + 1, g.size)
        eofs[g.name] = vec[:, :k].clone()
    n_modes = sum(e.shape[1] for e in eofs.values())
    gen = torch.Generator().manual_seed(seed)
    size = {g.name: g.size for g in groups}
    betas = {t: 0.1 * torch.randn(spec.shape[1], size[t], size[p], generator=gen,
                                  dtype=torch.float64) for t, p in regressions}
    return {"sigma": var_l.sqrt().expand(n_modes, lmax).clone(),
            "std": torch.full((n_modes, spec.shape[1]), math.sqrt(variance_scale),
                              dtype=torch.float64),
            "eofs": eofs, "betas": betas, "explained": {n: eof_fraction for n in eofs}}
