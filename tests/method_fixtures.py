"""Helpers shared by the tests of the methods: an independent great-circle distance, the odd
grid case for ``untrained`` states, and the lifecycle checks every learning method passes."""

import copy
import dataclasses

import numpy as np
import torch

from bench.config import ObservationSettings
from bench.experiments.synthetic import synthetic_spec
from bench.observations import observe
from bench.state import StateSpec
from methods.base import Analysis, Assimilator, Background, Kernel, Observations

R_EARTH_KM = 6371.0


def great_circle_km(lat1, lon1, lat2, lon2):
    """Distance through unit vectors and atan2 — a different formula from the code's haversine;
    degrees in, km out, broadcasts."""
    def unit(lat, lon):
        lat, lon = np.deg2rad(lat), np.deg2rad(lon)
        return np.stack(np.broadcast_arrays(np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                            np.sin(lat)), axis=-1)
    p, q = unit(lat1, lon1), unit(lat2, lon2)
    return R_EARTH_KM * np.arctan2(np.linalg.norm(np.cross(p, q), axis=-1), (p * q).sum(-1))


def odd_grid_case(n_channels: int = 3, seed: int = 0
                  ) -> tuple[StateSpec, Background, Observations]:
    """A 9 × 16 equiangular grid (both poles; odd H: no 2× down-sampling fits), a random
    background and "columns" observations (density 0.3) of the background plus unit noise."""
    spec = synthetic_spec(9, 16, n_channels)
    g = torch.Generator().manual_seed(seed)
    x_b = torch.randn(spec.shape, generator=g)
    obs = observe(x_b + torch.randn(spec.shape, generator=g), spec,
                  ObservationSettings(density=0.3), cycle=0)
    return spec, Background(x_b, x_b[None].clone(), np.datetime64("2001-01-01"), 6, 0), obs


def check_untrained(method: Assimilator, spec: StateSpec, background: Background,
                    obs: Observations, seed: int = 0) -> tuple[dict, object, Analysis]:
    """load(untrained(spec, seed)) analyses (shape, dtype, finite, standard diagnostics); the
    memory estimate is positive and the dominant kernel runs. Returns (state, analyser,
    analysis)."""
    state = method.untrained(spec, seed)
    analyser = method.load(state, spec, "cpu")
    analysis = analyser.analyse(background, obs)
    x_b = background.x_b
    assert analysis.x_a.shape == x_b.shape and analysis.x_a.dtype == x_b.dtype
    assert torch.isfinite(analysis.x_a).all()
    assert {"evaluations", "iterations"} <= set(analysis.diagnostics)
    memory = method.memory_estimate(spec, n_obs=len(obs))
    assert memory.model > 0 and memory.analysis > 0
    kernel = analyser.dominant_kernel(background, obs)
    assert isinstance(kernel, Kernel)
    kernel.fn()
    return state, analyser, analysis


def check_fit_is_pure(method: Assimilator, ctx) -> dict:
    """fit(ctx) leaves the method equal to a fresh copy, with no attribute added; its state."""
    fresh = copy.deepcopy(method)
    state = method.fit(ctx)
    assert method == fresh and vars(method) == vars(fresh)
    assert set(vars(method)) == {f.name for f in dataclasses.fields(method)}
    return state


def taylor_errors(cost, shape: tuple[int, ...], generator: torch.Generator) -> list[float]:
    """|(J(w + εh) − J(w)) / (ε ∇J(w)·h) − 1| for ε = 1e-1 … 1e-6 (first-order Taylor test of
    ``cost(w) -> (J, ...)``'s autograd gradient), at w = 0.5 ξ and direction h, both N(0, I) of
    ``shape`` float64 drawn from ``generator``. Falls ~10× per decade of ε until round-off when
    the gradient is right."""
    w = (0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_(True)
    h = torch.randn(shape, generator=generator, dtype=torch.float64)
    j = cost(w)[0]
    (grad,) = torch.autograd.grad(j, w)
    slope = float((grad * h).sum())
    errors = []
    for eps in 10.0 ** -np.arange(1, 7):
        with torch.no_grad():
            ratio = (float(cost(w + eps * h)[0]) - float(j.detach())) / (eps * slope)
        errors.append(abs(ratio - 1))
    return errors
