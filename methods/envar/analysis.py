"""Hybrid 3DEnVar's analyser: the variational mean (cost.py) and the recentred LETKF members
(notation and method in method.py's docstring)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from methods.base import Analyser, Analysis, Background, Kernel, Observations
from methods.common.covariance import BMatrix
from methods.envar.cost import HybridTransform, Localisation, cost_function, solve

if TYPE_CHECKING:
    from methods.envar.method import EnVar
    from methods.letkf import LETKFAnalyser


class EnVarAnalyser(Analyser):
    """Hybrid 3DEnVar on one device.

    Attributes:
        method: the EnVar (weights, localisation, solver settings).
        b: the static BMatrix (U and Uᵀ, 3DVar's) on the analysis device.
        loc: the localisation square root Λ (cost.Localisation) on the same device.
        group: (C,) long, each channel's localisation group (``EnVar.channel_groups``).
        letkf: the LETKF analyser that updates the members before recentring.
    """

    def __init__(self, method: EnVar, b: BMatrix, group: torch.Tensor, letkf: LETKFAnalyser):
        self.method, self.b, self.letkf = method, b, letkf
        self.loc = Localisation(b.transforms, method.localisation_km)
        self.group = group.to(b.device)

    def transform(self, background: Background) -> HybridTransform:
        """G for this background's members: X'_n = (x_n − x̄) / √(N − 1), float64 (N, C, H, W)."""
        xs = background.member_backgrounds.to(device=self.b.device, dtype=torch.float64)
        n = xs.shape[0]
        if n != self.method.members or tuple(xs.shape[1:]) != tuple(background.x_b.shape):
            raise ValueError(f"EnVar of {self.method.members} members got members "
                             f"{tuple(xs.shape)} for a background {tuple(background.x_b.shape)}")
        m = self.method
        return HybridTransform(self.b, self.loc, (xs - xs.mean(0)) / math.sqrt(n - 1),
                               self.group, math.sqrt(m.beta_static), math.sqrt(m.beta_ensemble))

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a = x_b + G z_a, z_a = argmin J (CG); members: the LETKF's analysed members
        recentred on x_a.

        Notation (code → symbol):
            x_b              background x_b (C, H, W), normalised (the members' mean)
            g, g.adjoint     G and Gᵀ (cost.HybridTransform): z = (v, α) -> increment
            obs.operator, obs.adjoint, obs.values   H, Hᵀ, y (N,)
            sigma            σ = max(σ_o, min_obs_error), R = diag(σ²)
            d                innovations d = y − H(x_b)
            z                control vector [v, α] flat float64, 0 at the start
            letkf_members    x_a,LETKF⁽ⁿ⁾ (N, C, H, W), the LETKF's analysed members
            members          x_a,LETKF⁽ⁿ⁾ − mean_m x_a,LETKF⁽ᵐ⁾ + x_a (recentred)

        Returns:
            Analysis: x_a (C, H, W) and members (N, C, H, W) in x_b's dtype and device.
            Diagnostics: ``iterations`` (CG), ``evaluations`` (Hessian products + 1 for the
            right-hand side), ``j_min`` (= ``cost_final``: J at z_a), ``cost_initial`` (J at
            z = 0), ``seconds_minimise``, and the LETKF's ``spread_prior``,
            ``spread_analysis``, ``local_obs`` (as ``letkf_*``).
        """
        m, x_b = self.method, background.x_b
        start = time.perf_counter()
        ensemble = self.letkf.analyse(background, obs)
        letkf_diag = {f"letkf_{k}": v for k, v in ensemble.diagnostics.items()
                      if k in ("spread_prior", "spread_analysis", "local_obs")}
        if len(obs) == 0:
            return Analysis(x_b.clone(), members=self._recentre(ensemble.members, x_b),
                            diagnostics={"iterations": 0.0, "evaluations": 0.0, "j_min": 0.0,
                                         **letkf_diag})
        solve_start = time.perf_counter()
        obs = obs.to(self.b.device)
        g = self.transform(background)
        xb64 = x_b.to(device=self.b.device, dtype=torch.float64)
        sigma = obs.error_std.to(torch.float64).clamp_min(m.min_obs_error)
        d = obs.values.to(torch.float64) - obs.operator(xb64)  # d = y − H(x_b)
        j0 = 0.5 * float((d / sigma).square().sum())  # J(0)
        z, iterations = solve(g, obs, d, sigma, max_iterations=m.max_iterations,
                              tolerance=m.tolerance)
        with torch.no_grad():
            j_final = float(cost_function(g, obs, d, sigma)(z))
            x_a = (xb64 + g(z)).to(device=x_b.device, dtype=x_b.dtype)  # x = x_b + G z
        return Analysis(x_a, members=self._recentre(ensemble.members, x_a), diagnostics={
            "iterations": float(iterations), "evaluations": float(iterations + 1),
            "j_min": j_final, "cost_initial": j0, "cost_final": j_final,
            "seconds_minimise": time.perf_counter() - solve_start,
            "seconds_letkf": solve_start - start, **letkf_diag})

    @staticmethod
    def _recentre(members: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
        """x⁽ⁿ⁾ − mean_m x⁽ᵐ⁾ + x_a: the LETKF's perturbations around the EnVar mean, as
        operational hybrids recentre their EnKF members on the variational analysis."""
        members = members.to(device=x_a.device, dtype=x_a.dtype)
        return members - members.mean(0) + x_a

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """G then Gᵀ on a random control vector (U, Uᵀ and the N × G localisation SHTs with
        their Schur products): every CG iteration's cost but H (FLOP, float64)."""
        g = self.transform(background)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(g.size, generator=gen, dtype=torch.float64).to(self.b.device)
        return Kernel("G and Gᵀ (U, Uᵀ and the localisation SHTs)",
                      lambda: g.adjoint(g(z)), "FLOP", "float64")
