"""Small methods written the way a new method is added — one file, and a registry line that the
tests make with ``register`` — to prove the contract: a deterministic method that learns, an
ensemble method and a 4D (windowed) method that differentiates the forecast model.

None of them is meant to be good; each is exact about what it does.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from methods import METHODS
from methods.base import (
    Analyser,
    Analysis,
    Assimilator,
    Background,
    Kernel,
    MemoryEstimate,
    Observations,
    ObservationWindow,
)


def nudge(x_b: torch.Tensor, obs: Observations, weight: torch.Tensor,
          values: torch.Tensor | None = None) -> torch.Tensor:
    """x_b + Hᵀ(w_c ⊙ (y − H x_b)): each observed grid value moved by w of its innovation."""
    y = obs.values if values is None else values
    d = (y - obs.operator(x_b)) * weight[obs.channel]
    return x_b + obs.adjoint(d.to(x_b.dtype))


def gain(sigma_b: torch.Tensor, obs: Observations) -> torch.Tensor:
    """w_c = σ_b² / (σ_b² + σ_o²) per channel (σ_o: the mean of the channel's error std)."""
    sigma_o = torch.zeros_like(sigma_b)
    for c in obs.channel.unique().tolist():
        sigma_o[c] = obs.error_std[obs.channel == c].mean()
    return sigma_b.square() / (sigma_b.square() + sigma_o.square())


@dataclasses.dataclass(frozen=True)
class Nudge(Assimilator):
    """Deterministic: learns σ_b per channel from NMC samples and moves each observed point by
    the scalar Kalman gain σ_b² / (σ_b² + σ_o²) of its innovation (no spreading)."""

    scale: float = 1.0

    def fit(self, ctx) -> dict:
        samples = ctx.samples("nmc")
        return {"sigma_b": self.scale * samples.std(dim=(0, 2, 3)).double(),
                "n_samples": int(samples.shape[0])}

    def untrained(self, spec, seed=0) -> dict:
        return {"sigma_b": torch.ones(spec.shape[0], dtype=torch.float64), "n_samples": 0}

    def memory_estimate(self, spec, n_obs, members=0) -> MemoryEstimate:
        return MemoryEstimate(8.0 * spec.shape[0], 3 * 4.0 * np.prod(spec.shape))

    def load(self, state, spec, device) -> NudgeAnalyser:
        return NudgeAnalyser(state["sigma_b"].to(device))


class NudgeAnalyser(Analyser):
    def __init__(self, sigma_b: torch.Tensor):
        self.sigma_b = sigma_b

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        x_a = nudge(background.x_b, obs, gain(self.sigma_b, obs.to(self.sigma_b.device)))
        return Analysis(x_a, diagnostics={"evaluations": 1.0, "n_channels": float(
            obs.channel.unique().numel())})

    def dominant_kernel(self, background, obs) -> Kernel:
        return Kernel("H and Hᵀ", lambda: obs.adjoint(obs.operator(background.x_b)), "B",
                      work=2.0 * 4 * len(obs))


@dataclasses.dataclass(frozen=True)
class PerturbedObsNudge(Assimilator, Analyser):
    """Ensemble: each member nudged (gain ``weight``) towards the observations perturbed with
    their own error, y + ε_i, ε_i ~ N(0, σ_o²) seeded by (seed, cycle, i): a perturbed-
    observation toy of an EnKF. The analysis is the members' mean."""

    members: int = 4
    weight: float = 0.5

    def load(self, state, spec, device) -> PerturbedObsNudge:
        return self

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        xs = background.member_backgrounds
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, background.cycle]).generate_state(1)[0]))
        w = torch.full((xs.shape[1],), self.weight, dtype=obs.values.dtype)
        out = []
        for x in xs:
            eps = torch.randn(len(obs), generator=g, dtype=obs.values.dtype) * obs.error_std
            out.append(nudge(x, obs, w, obs.values + eps))
        members = torch.stack(out)
        return Analysis(members.mean(0), members=members,
                        diagnostics={"evaluations": float(len(out))})


@dataclasses.dataclass(frozen=True)
class WindowNudge(Assimilator, Analyser):
    """4D: x₀ ← x₀ − α ∇J(x₀) for ``steps`` gradient steps from x_b, with
    J(x₀) = (1 / 2T) Σ_t ‖H_t M_{0→t}(x₀) − y_t‖² over the window's T times, through the
    model's autograd (for persistence each step moves an observed point by α of its mean
    innovation). Refuses a window without a differentiable model."""

    window_hours: int = 6
    steps: int = 2
    step_size: float = 0.5

    def load(self, state, spec, device) -> WindowNudge:
        return self

    def analyse(self, background: Background, window: ObservationWindow) -> Analysis:
        if window.model is None:
            raise TypeError("WindowNudge needs a differentiable forecast model in its window")
        x0 = background.x_b.clone().requires_grad_(True)
        evaluations = 0
        for _ in range(self.steps):
            cost = self._cost(x0, background.history, window)
            (grad,) = torch.autograd.grad(cost, x0)
            evaluations += 1
            with torch.no_grad():
                x0 -= self.step_size * grad
        return Analysis(x0.detach(), diagnostics={"evaluations": float(evaluations),
                                                  "j_min": float(self._cost(
                                                      x0.detach(), background.history, window))})

    def _cost(self, x0, history, window: ObservationWindow) -> torch.Tensor:
        frames = torch.cat([history[:-1] + (x0 - history[-1]), x0[None]])[None]
        state, cost, at = x0, 0.0, 0
        for offset, obs in window.observations:
            while at < offset:
                state = window.model.step_differentiable(frames)[0]
                frames = torch.cat([frames[:, 1:], state[None, None]], dim=1)
                at += 6
            cost = cost + 0.5 * (obs.operator(state) - obs.values).square().sum()
        return cost / len(window.observations)


TOYS = {"toy-nudge": Nudge, "toy-ensemble": PerturbedObsNudge, "toy-window": WindowNudge}


@contextlib.contextmanager
def register(*names: str):
    """The toy methods in the registry (the one line a new method adds), for a test."""
    added = {name: TOYS[name] for name in names or TOYS}
    METHODS.update(added)
    try:
        yield added
    finally:
        for name in added:
            METHODS.pop(name, None)
