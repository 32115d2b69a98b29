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

Streaming: the samples (a tensor, e.g. memory-mapped from the samples cache) are read in batches
of ``batch_size`` samples, and every step above is a float64 sum over batches, one pass each:
means (2), regression moments C_tp, C_pp (3), group covariances (4), mode variances (5), spectra
(6). Memory is O(batch × C × H × W) whatever N; the results equal the all-at-once estimate up to
the order of summation (~1e-13 relative on the built-in world). The wind transforms are
recomputed in each pass: cheaper than holding N × C × H × W float64 control fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from bench.state import StateSpec
from methods.common.covariance.bmatrix import Group, layout
from methods.common.spectral import Transforms

#: Floor on a mode's std (normalised units) so a row with no signal cannot make S singular.
_STD_FLOOR = 1e-8
#: float64 bytes of one batch's samples (at least one sample a batch): 32 MiB is 29 samples
#: of the built-in 69 × 32 × 64 world; the control fields and their centred copies are ~3×.
BATCH_BYTES = 32 * 2**20

Fields = dict[str, torch.Tensor]


def batch_size(shape: tuple[int, ...], budget: int | None = None) -> int:
    """Samples per batch: float64 samples of ``shape`` (C, H, W) within ``budget`` bytes
    (default ``BATCH_BYTES``, read at call time), at least 1."""
    budget = BATCH_BYTES if budget is None else budget
    return max(1, int(budget) // (8 * math.prod(int(n) for n in shape)))


def control_fields(spec: StateSpec, block: torch.Tensor, transforms: Transforms,
                   groups: list[Group]) -> Fields:
    """Step 1: {group: (B, n_g, H, W) float64} full (balanced + unbalanced) control fields of a
    batch of samples (B, C, H, W) normalised, not centred; ψ̃ and χ̃ from one vector SHT."""
    std = torch.tensor(np.array(spec.std), dtype=torch.float64, device=transforms.device)
    block = block.to(transforms.device, torch.float64)
    out, winds = {}, {}
    for g in groups:
        if g.name in ("psi", "chi", "psi_sfc", "chi_sfc"):
            key = g.channels + g.v_channels  # psi and chi of the same levels share one SHT
            if key not in winds:
                u = block[:, list(g.channels)] * std[list(g.channels), None, None]
                v = block[:, list(g.v_channels)] * std[list(g.v_channels), None, None]
                winds[key] = transforms.psi_chi(u, v)
            out[g.name] = winds[key][0 if g.name.startswith("psi") else 1]
        else:
            out[g.name] = block[:, list(g.channels)]
    return out


def _batches(spec: StateSpec, samples: torch.Tensor, transforms: Transforms,
             groups: list[Group], size: int) -> Iterator[Fields]:
    """Control fields of consecutive batches of ``size`` samples (one pass over the samples)."""
    for start in range(0, samples.shape[0], size):
        yield control_fields(spec, samples[start:start + size], transforms, groups)


def solve_regression(c_tp: torch.Tensor, c_pp: torch.Tensor, ridge: float) -> torch.Tensor:
    """Step 3: β (H, n_t, n_p) = C_tp (C_pp + ρI)⁻¹ per latitude row, from the sums over samples
    and longitudes C_tp (H, n_t, n_p) and C_pp (H, n_p, n_p) of centred fields."""
    n_p = c_pp.shape[-1]
    rho = ridge * torch.diagonal(c_pp, dim1=-2, dim2=-1).mean() + 1e-300
    eye = torch.eye(n_p, dtype=c_pp.dtype, device=c_pp.device)
    # β = C_tp (C_pp + ρI)⁻¹ = ((C_pp + ρI)⁻¹ C_ptᵀ)ᵀ; C_pp is symmetric
    return torch.linalg.solve(c_pp + rho * eye, c_tp.transpose(-1, -2)).transpose(-1, -2)


def estimate(spec: StateSpec, samples: torch.Tensor, variance_scale: float = 1.0,
             eof_fraction: float = 0.999, ridge: float = 1e-3,
             device: torch.device | str = "cpu", balance: bool = True,
             batch: int | None = None) -> dict:
    """All statistics BMatrix needs, from samples (N, C, H, W) normalised, read ``batch``
    samples at a time (default ``batch_size``; module docstring).

    ``balance=False`` sets every β to 0 (z, t, msl, t2m univariate; winds still from ψ̃, χ̃).

    Returns:
        {"sigma": (K, lmax), "std": (K, H), "eofs": {group: (n_g, k_g)},
         "betas": {target: (H, n_t, n_p)}, "explained": {group: fraction kept}} (float64, CPU).
    """
    groups, _, regressions = layout(spec)
    # each target is regressed on a predictor that is never itself a target (z, t on ψ̃; msl,
    # t2m on ψ̃_sfc), so the regressions are independent and one pass estimates them all
    assert not {t for t, _ in regressions} & {p for _, p in regressions}, regressions
    transforms = Transforms.for_spec(spec, device)
    n = samples.shape[0]
    size = batch or batch_size(spec.shape)

    def passes() -> Iterator[Fields]:
        return _batches(spec, samples, transforms, groups, size)

    # step 2: the sample mean per grid point (a bias is not a random error)
    sums: Fields = {}
    for fields in passes():
        for name, x in fields.items():
            sums[name] = sums.get(name, 0) + x.sum(dim=0)
    mean = {name: total / n for name, total in sums.items()}

    def centred() -> Iterator[Fields]:
        for fields in passes():
            yield {name: x - mean[name] for name, x in fields.items()}

    # step 3: balance regressions from the moments summed over batches
    moments = {t: [0, 0] for t, _ in regressions}
    for fields in centred():
        for target, predictor in regressions:
            p = fields[predictor]
            moments[target][0] += torch.einsum("nihw,njhw->hij", fields[target], p)
            moments[target][1] += torch.einsum("nihw,njhw->hij", p, p)
    betas = {}
    for target, _ in regressions:
        beta = solve_regression(*moments[target], ridge)
        betas[target] = beta if balance else torch.zeros_like(beta)

    def unbalanced() -> Iterator[Fields]:
        for fields in centred():
            for target, predictor in regressions:
                fields[target] = fields[target] - torch.einsum(
                    "hij,njhw->nihw", betas[target], fields[predictor])
            yield fields

    # step 4: vertical covariances (area weights ∝ cos φ per row, summing to 1 over the grid)
    lat = torch.tensor(np.array(spec.lat), dtype=torch.float64, device=transforms.device)
    area = torch.cos(torch.deg2rad(lat)).clamp_min(0)
    area = area / (area.sum() * spec.shape[2])
    cov: Fields = {}
    for fields in unbalanced():
        for g in groups:
            x = fields[g.name]
            cov[g.name] = cov.get(g.name, 0) + torch.einsum("nihw,njhw,h->ij", x, x, area)
    eofs, explained, scaled, level_stds = {}, {}, {}, {}
    for g in groups:
        c = cov[g.name] / n
        level_std = torch.diagonal(c).sqrt().clamp_min(_STD_FLOOR)
        lam, vec = torch.linalg.eigh(c / (level_std[:, None] * level_std[None, :]))
        lam, vec = lam.flip(0).clamp_min(0), vec.flip(1)
        frac = torch.cumsum(lam, 0) / lam.sum().clamp_min(1e-300)
        k = min(int((frac < eof_fraction).sum()) + 1, lam.numel())
        vec = vec[:, :k] * torch.where(vec[:, :k].sum(0) < 0, -1.0, 1.0)  # deterministic sign
        explained[g.name] = float(frac[k - 1])
        eofs[g.name] = (level_std[:, None] * vec).cpu()  # U_v = diag(σ_level) E
        scaled[g.name], level_stds[g.name] = vec, level_std

    def amplitudes() -> Iterator[Fields]:  # A = Eᵀ D⁻¹ X per group
        for fields in unbalanced():
            yield {g.name: torch.einsum("ik,nihw->nkhw", scaled[g.name],
                                        fields[g.name] / level_stds[g.name][:, None, None])
                   for g in groups}

    # step 5: each mode's std per latitude row
    squares: Fields = {}
    for amps in amplitudes():
        for name, a in amps.items():
            squares[name] = squares.get(name, 0) + a.square().sum(dim=(0, 3))
    mode_std = {name: (sq / (n * spec.shape[2])).sqrt().clamp_min(_STD_FLOOR)
                for name, sq in squares.items()}  # (k, H)
    # step 6: spectra of the unit-variance amplitudes, averaged over samples
    powers: Fields = {}
    for amps in amplitudes():
        for name, a in amps.items():
            powers[name] = powers.get(name, 0) + transforms.power(
                a / mode_std[name][:, :, None]).sum(dim=0)
    stds, sigmas = [], []
    for g in groups:
        power = powers[g.name] / n  # (k, lmax)
        degree = torch.arange(power.shape[-1], dtype=torch.float64, device=power.device)
        var_l = power / (2 * degree + 1)  # σ_l² up to normalisation
        var_l = var_l / ((var_l * (2 * degree + 1)).sum(-1, keepdim=True) / (4 * math.pi))
        stds.append(mode_std[g.name] * math.sqrt(variance_scale))
        sigmas.append(var_l.sqrt())
    return {"sigma": torch.cat(sigmas).cpu(), "std": torch.cat(stds).cpu(), "eofs": eofs,
            "betas": {k: b.cpu() for k, b in betas.items()}, "explained": explained}
