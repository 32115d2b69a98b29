"""Additive inflation for the LETKF (methods/letkf) from the forecast model's own 6-hour errors.

The emulator's 6-hour background error is mostly model error (it was trained on a different
model's nature run), which an ensemble of the same deterministic emulator cannot represent: the
remedy of Mitchell & Houtekamer (2000), Whitaker et al. (2008) and Houtekamer et al. (2009) is to
add to each member a sample of that error. Here the samples are the training period's
truth − 6 h forecast differences ε = x_{i+6h} − M_6h(x_{i−1}, x_i) (bench/samples.py), a
deterministic, evenly spaced subset of at most ``additive_pool`` of them kept in float16
(128 × 69 × 32 × 64 × 2 B = 36.2 MB at the built-in grid). Each analysis draws N distinct
samples ε_{j_1..N} with a generator seeded by (method seed, cycle) and adds

    x_b⁽ⁿ⁾ ← x_b⁽ⁿ⁾ + α (ε_{j_n} − mean_m ε_{j_m})

to the members before the local analyses: the centred draw leaves the mean as it is and adds
α² × (the draw's sample covariance) to the ensemble's.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.state import StateSpec

#: The forecast lead of the samples: one cycle.
LEAD_HOURS = 6

#: Tags the additive draws' generator (apart from the initial ensemble's, bench/setup.py).
_TAG = int.from_bytes(b"additive", "little")


def fit_pool(ctx, size: int, stride: int) -> dict:
    """{"additive_pool": (≤ size, C, H, W) float16, "shape", "names"}: an evenly spaced subset
    of the training period's truth − 6 h forecast samples, one start every ``stride`` frames."""
    eps = ctx.samples("truth_minus_forecast", lead_hours=LEAD_HOURS, start_stride=stride)
    keep = np.arange(min(size, eps.shape[0])) * eps.shape[0] // min(size, eps.shape[0])
    return {"additive_pool": eps[torch.as_tensor(keep)].to(torch.float16).contiguous(),
            "shape": list(ctx.spec.shape), "names": list(ctx.spec.names)}


def random_pool(spec: StateSpec, size: int, seed: int) -> dict:
    """A pool of ``size`` standard normal fields × 0.1 in ``fit_pool``'s layout (for timing)."""
    g = torch.Generator().manual_seed(seed)
    eps = 0.1 * torch.randn(size, *spec.shape, generator=g)
    return {"additive_pool": eps.to(torch.float16), "shape": list(spec.shape),
            "names": list(spec.names)}


def load_pool(state: dict, spec: StateSpec, members: int, device: torch.device
              ) -> torch.Tensor:
    """The pool of ``state`` (fit_pool's or random_pool's) on ``device``, checked against the
    grid and the ensemble size."""
    pool = state.get("additive_pool")
    if pool is None:
        raise ValueError("LETKF.additive_inflation > 0 needs the pool of 6 h forecast errors "
                         "that fit() learns; got a state without one (fitted with "
                         "additive_inflation = 0?)")
    if list(state["shape"]) != list(spec.shape) or list(state["names"]) != list(spec.names):
        raise ValueError(f"the LETKF's additive pool is for (C, H, W) = {tuple(state['shape'])}"
                         f"; the spec is {spec.shape}: fit on this world")
    if pool.shape[0] < members:
        raise ValueError(f"the LETKF's additive pool holds {pool.shape[0]} samples, fewer than "
                         f"its {members} members (drawn without replacement)")
    return torch.as_tensor(pool).to(device)


def draw(pool: torch.Tensor, members: int, alpha: float, seed: int, cycle: int,
         dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) in ``dtype``: α (ε_{j_n} − mean ε_j) for N distinct pool samples j drawn by
    a generator seeded by (seed, cycle)."""
    pick = np.random.default_rng([int(seed), int(cycle), _TAG]).choice(
        pool.shape[0], members, replace=False)
    eps = pool[torch.as_tensor(pick, device=pool.device)].to(dtype)
    return eps.sub_(eps.mean(0)).mul_(alpha)
