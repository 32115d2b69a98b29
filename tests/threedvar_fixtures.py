"""Synthetic background-error samples with known structure for the 3DVar tests.

A 16 × 32 Gaussian grid, levels 250/500/850 hPa of z, q, u, v, t plus u10, v10, t2m, msl.
Samples (physical units, then normalised by their own std):
    ψ̃ (m/s) per level (+ surface): isotropic random fields (red spectrum, no l = 0), vertically
        correlated with corr(i, j) = exp(−|i − j| / 2) the same everywhere;
    χ̃ = 0.3 × independent fields of the same kind;  (u, v) from (ψ̃, χ̃) exactly;
    z = f a ψ̃ (geostrophic balance, f = 2Ω sin φ) + 10 % unbalanced noise;
    t = 2e-4 · f a ψ̃ + noise; msl = 1.2 · f a ψ̃_sfc + noise; t2m = noise + 1e-4 f a ψ̃_sfc;
    q: independent noise.
"""

import numpy as np
import torch

from bench.state import StateSpec, channel_names
from methods.common.spectral import EARTH_RADIUS_M, Transforms

OMEGA = 7.292e-5
LEVELS = (250, 500, 850)


def gaussian_spec(nlat=16, nlon=32, levels=LEVELS) -> StateSpec:
    nodes, _ = np.polynomial.legendre.leggauss(nlat)
    lat = np.degrees(np.arcsin(-nodes))  # north -> south, torch-harmonics' row order
    lon = np.arange(nlon) * 360.0 / nlon
    return StateSpec.create(channel_names(levels=levels), lat, lon, "legendre-gauss")


def random_fields(transforms: Transforms, shape, generator, l0=3.0) -> torch.Tensor:
    """Isotropic random fields (*shape, H, W) with spectrum σ_l² ∝ (1 + l/l0)^-4, l ≥ 1, and
    unit point variance (approximately)."""
    lmax, mmax = transforms.lmax, transforms.mmax
    ll = torch.arange(lmax, dtype=torch.float64)[:, None]
    mm = torch.arange(mmax, dtype=torch.float64)[None, :]
    var = (1 + ll / l0) ** -4.0 * (mm <= ll) * (ll >= 1)
    var = var / ((var[:, 0] * (2 * ll[:, 0] + 1)).sum() / (4 * np.pi))
    re = torch.randn(*shape, lmax, mmax, generator=generator, dtype=torch.float64)
    im = torch.randn(*shape, lmax, mmax, generator=generator, dtype=torch.float64)
    im[..., 0] = 0
    scale = torch.where(mm == 0, 1.0, 1 / np.sqrt(2.0)) * var.sqrt()
    return transforms.isht(torch.complex(re * scale, im * scale))


def synthetic_samples(spec: StateSpec, n=200, seed=0) -> tuple[StateSpec, torch.Tensor]:
    """(spec with std = the samples' std, samples (n, C, H, W) float64 normalised)."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = spec.shape
    tr = Transforms(spec.grid, h, w)
    nl = len(spec.levels) + 1  # + surface, the lowest
    idx = torch.arange(nl, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.exp(-(idx[:, None] - idx[None, :]).abs() / 2))
    psi = torch.einsum("ij,njhw->nihw", chol, random_fields(tr, (n, nl), g))
    chi = 0.3 * random_fields(tr, (n, nl), g)
    u, v = tr.winds(psi, chi)
    lat = torch.tensor(np.array(spec.lat), dtype=torch.float64)
    fa = (2 * OMEGA * torch.sin(torch.deg2rad(lat)) * EARTH_RADIUS_M)[:, None]  # (H, 1), m/s
    z = fa * psi * 1e-3  # f a ψ̃ with ψ̃ in mm/s-sized units: keeps z ~ 1e3 m²/s²
    phys = torch.zeros(n, c, h, w, dtype=torch.float64)
    names = spec.names
    for k, lev in enumerate(spec.levels):
        noise = random_fields(tr, (n, 3), g)
        phys[:, names.index(f"u{lev}")] = u[:, k]
        phys[:, names.index(f"v{lev}")] = v[:, k]
        zk = z[:, k] + 0.1 * z[:, k].std() * noise[:, 0]
        phys[:, names.index(f"z{lev}")] = zk
        phys[:, names.index(f"t{lev}")] = 2e-4 * z[:, k] + 0.1 * noise[:, 1]
        phys[:, names.index(f"q{lev}")] = 1e-3 * noise[:, 2]
    noise = random_fields(tr, (n, 2), g)
    phys[:, names.index("u10")], phys[:, names.index("v10")] = u[:, -1], v[:, -1]
    phys[:, names.index("msl")] = 1.2 * z[:, -1] + 0.1 * (1.2 * z[:, -1]).std() * noise[:, 0]
    phys[:, names.index("t2m")] = 1e-4 * z[:, -1] + 0.1 * noise[:, 1]
    std = phys.std(dim=(0, 2, 3)).numpy()
    spec = spec.with_statistics(np.zeros(c), std)
    return spec, phys / torch.tensor(std)[:, None, None]
