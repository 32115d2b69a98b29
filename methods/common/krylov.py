"""Conjugate gradients on a symmetric positive-definite system given as a product function.

The variational methods' Hessians are never formed: 3DVar's A = I + Uᵀ Hᵀ R⁻¹ H U
(methods/threedvar/solvers.py) and 4DVar's Gauss–Newton inner loops
A = I + Σ_t Uᵀ M'_tᵀ H_tᵀ R_t⁻¹ H_t M'_t U (methods/fourdvar/cost.py) are applied to vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def conjugate_gradients(hessian: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, *,
                        max_iterations: int, tolerance: float) -> tuple[torch.Tensor, int]:
    """Solve A x = rhs by conjugate gradients from x = 0.

    Args:
        hessian: v -> A v (A symmetric positive definite), any tensor shape.
        rhs: the right-hand side, the shape of x.
        max_iterations: at most this many products A p.
        tolerance: stop when the residual's 2-norm has shrunk by this factor from ‖rhs‖.

    Returns:
        (x, iterations): iterations = products A p computed (0 when rhs = 0).
    """
    x = torch.zeros_like(rhs)
    r, p = rhs.clone(), rhs.clone()
    rr = float(r.square().sum())
    stop = tolerance**2 * rr
    k = 0
    while k < max_iterations and rr > stop:
        ap = hessian(p)
        alpha = rr / float((p * ap).sum())
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = float(r.square().sum())
        p = r + (rr_new / rr) * p
        rr, k = rr_new, k + 1
    return x, k
