"""Estimating the covariance model's statistics (what BMatrix needs) from background-error samples.

From samples ε (N, C, H, W) in normalised units (NMC 48 h − 24 h forecast differences):
 1. winds -> ψ̃, χ̃ (m/s) per level by the forward vector SHT (spectral.Transforms.psi_chi).
 2. control fields X_g (N, n_g, H, W) per group (layout()); sample mean removed per grid point
    (a bias is not a random error).
 3. balance, per latitude row φ: β(φ) = C_tp (C_pp + ρ I)⁻¹ over samples and longitudes,
    C_tp the target–predictor covariance (e.g. 13 z levels on 13 ψ̃ levels); ρ a small ridge
    (``ridge`` × mean predictor variance) for rows where ψ̃ carries little signal (equator,
    poles). The unbalanced part X_t − β X_p replaces the target.
 4. vertical EOFs per group, of the vertical *correlation* (so levels with tiny variance, e.g.
    q at 50 hPa, are not truncated away): V_g = area-weighted mean of X Xᵀ (n_g × n_g),
    D = diag(V)^½, D⁻¹ V D⁻¹ = E Λ Eᵀ, keep the leading modes explaining ``eof_fraction`` of
    Σ Λ (= n_g); amplitudes A = Eᵀ D⁻¹ X, and U_v maps modes to levels by D E (stored as "eofs").
 5. S: std of each mode per latitude row, √(mean over samples and longitudes of A²), times
    √variance_scale.
 6. U_h: power spectrum per total wavenumber of A / std (unit-variance fields), averaged over
    samples, P_l / (2l + 1) = σ_l²; normalised so Σ_l σ_l² (2l + 1)/4π = 1 (unit point variance).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.state import StateSpec
from methods.common.covariance.bmatrix import layout
from methods.common.spectral import Transforms

#: Floor on a mode's std (normalised units) so a row with no signal cannot make S singular.
_STD_FLOOR = 1e-8


def control_fields(spec: StateSpec, samples: torch.Tensor, transforms: Transforms,
                   chunk: int = 32) -> dict[str, torch.Tensor]:
    """Step 1–2: {group: (N, n_g, H, W) float64} full (balanced + unbalanced) control fields."""
    groups, _, _ = layout(spec)
    std = torch.tensor(np.array(spec.std), dtype=torch.float64)
    out = {}
    for g in groups:
        if g.name in ("psi", "chi", "psi_sfc", "chi_sfc"):
            parts = []
            for start in range(0, samples.shape[0], chunk):
                block = samples[start:start + chunk].to(transforms.device, torch.float64)
                u = block[:, list(g.channels)] * std[list(g.channels), None, None]
                v = block[:, list(g.v_channels)] * std[list(g.v_channels), None, None]
                psi, chi = transforms.psi_chi(u, v)
                parts.append(psi if g.name.startswith("psi") else chi)
            field = torch.cat(parts)
        else:
            field = samples[:, list(g.channels)].to(transforms.device, torch.float64)
        out[g.name] = field - field.mean(dim=0, keepdim=True)
    return out


def regression(target: torch.Tensor, predictor: torch.Tensor, ridge: float) -> torch.Tensor:
    """Step 3: β (H, n_t, n_p) minimising Σ (target − β predictor)² per latitude row."""
    c_tp = torch.einsum("nihw,njhw->hij", target, predictor)
    c_pp = torch.einsum("nihw,njhw->hij", predictor, predictor)
    n_p = predictor.shape[1]
    rho = ridge * torch.diagonal(c_pp, dim1=-2, dim2=-1).mean() + 1e-300
    eye = torch.eye(n_p, dtype=c_pp.dtype, device=c_pp.device)
    # β = C_tp (C_pp + ρI)⁻¹ = ((C_pp + ρI)⁻¹ C_ptᵀ)ᵀ; C_pp is symmetric
    return torch.linalg.solve(c_pp + rho * eye, c_tp.transpose(-1, -2)).transpose(-1, -2)


def estimate(spec: StateSpec, samples: torch.Tensor, variance_scale: float = 1.0,
             eof_fraction: float = 0.999, ridge: float = 1e-3,
             device: torch.device | str = "cpu", balance: bool = True) -> dict:
    """All statistics BMatrix needs, from samples (N, C, H, W) normalised.

    ``balance=False`` sets every β to 0 (z, t, msl, t2m univariate; winds still from ψ̃, χ̃).

    Returns:
        {"sigma": (K, lmax), "std": (K, H), "eofs": {group: (n_g, k_g)},
         "betas": {target: (H, n_t, n_p)}, "explained": {group: fraction kept}} (float64, CPU).
    """
    groups, _, regressions = layout(spec)
    transforms = Transforms.for_spec(spec, device)
    fields = control_fields(spec, samples, transforms)
    betas = {}
    for target, predictor in regressions:
        beta = regression(fields[target], fields[predictor], ridge)
        if not balance:
            beta = torch.zeros_like(beta)
        betas[target] = beta
        fields[target] = fields[target] - torch.einsum("hij,njhw->nihw", beta, fields[predictor])

    # area weights ∝ cos φ (per row), summing to 1 over the grid
    lat = torch.tensor(np.array(spec.lat), dtype=torch.float64, device=transforms.device)
    area = torch.cos(torch.deg2rad(lat)).clamp_min(0)
    area = area / (area.sum() * spec.shape[2])
    eofs, explained, stds, sigmas = {}, {}, [], []
    for g in groups:
        x = fields[g.name]  # (N, n, H, W)
        cov = torch.einsum("nihw,njhw,h->ij", x, x, area) / x.shape[0]
        level_std = torch.diagonal(cov).sqrt().clamp_min(_STD_FLOOR)
        corr = cov / (level_std[:, None] * level_std[None, :])
        lam, vec = torch.linalg.eigh(corr)
        lam, vec = lam.flip(0).clamp_min(0), vec.flip(1)
        frac = torch.cumsum(lam, 0) / lam.sum().clamp_min(1e-300)
        k = int((frac < eof_fraction).sum()) + 1
        k = min(k, lam.numel())
        vec = vec[:, :k] * torch.where(vec[:, :k].sum(0) < 0, -1.0, 1.0)  # deterministic sign
        explained[g.name] = float(frac[k - 1])
        eofs[g.name] = (level_std[:, None] * vec).cpu()  # U_v = diag(σ_level) E
        amp = torch.einsum("ik,nihw->nkhw", vec, x / level_std[:, None, None])  # A = Eᵀ D⁻¹ X
        std = amp.square().mean(dim=(0, 3)).sqrt().clamp_min(_STD_FLOOR)  # (k, H)
        power = transforms.power(amp / std[:, :, None]).mean(dim=0)  # (k, lmax)
        degree = torch.arange(power.shape[-1], dtype=torch.float64, device=power.device)
        var_l = power / (2 * degree + 1)  # σ_l² up to normalisation
        var_l = var_l / ((var_l * (2 * degree + 1)).sum(-1, keepdim=True) / (4 * math.pi))
        stds.append(std * math.sqrt(variance_scale))
        sigmas.append(var_l.sqrt())
    return {"sigma": torch.cat(sigmas).cpu(), "std": torch.cat(stds).cpu(), "eofs": eofs,
            "betas": {k: b.cpu() for k, b in betas.items()}, "explained": explained}
