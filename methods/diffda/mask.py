"""DiffDA's soft observation mask and the spreading of observed increments to the grid.

Distances are in grid spacings on a local equirectangular projection (Huang et al. 2024, their
code: a Gaussian kernel of σ = 1.5 grid points around each observation): between a grid point
(φ_g, λ_g) and an observation (φ_o, λ_o), in degrees,

    d² = ((φ_g − φ_o) / Δφ)² + (cos φ̄ · wrap(λ_g − λ_o) / Δλ)²,    φ̄ = (φ_g + φ_o) / 2,

with Δφ the mean latitude spacing of the grid, Δλ = 360° / W, and wrap() the periodic
longitude difference in (−180°, 180°]. The kernel is w = exp(−d² / (2σ²)) for d < cutoff·σ and
0 beyond.

- Soft mask, per channel c:  m_c(g) = max over observations n of channel c of w(d_gn).
  It is 1 at an observed grid point and decays with distance; 0 where no observation of the
  channel lies within the cutoff.
- Spread increments, per channel c: the observed (scaled) increments d_n are put on the grid by
  the kernel-weighted mean of the channel's observations within the cutoff,
      v_c(g) = Σ_n w(d_gn) d_n / Σ_n w(d_gn),
  except at observed grid points, which keep their own increment (the mean of the
  observations on that point, ``Observations.dense``), so the spread field interpolates the
  data exactly, as kriging does in their code. v_c = 0 where m_c = 0.

Observations off the grid (station observations) enter the mask at their own position and the
exact-value rule at their largest-weight grid point (``Observations.dense``).

Which pairs to evaluate: the shared great-circle neighbour search (methods/common/neighbours.py)
finds the candidate (observation, grid point) pairs within a great-circle radius that provably
contains every pair with d < cutoff · σ (``search_radius_km``), and the kernel is evaluated
with d² above on those pairs only, so the numbers are those of the kernel on all pairs (up to
float64 summation order). Memory stays bounded at 0.25°.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from methods.base import Observations
from methods.common.neighbours import EARTH_RADIUS_KM, SphereTree, add_weighted, pairs_within

#: Relative margin of the candidate radius over its bound (rounding never drops a pair).
_RADIUS_MARGIN = 1e-6


def kernel_distance2(obs_lat: torch.Tensor, obs_lon: torch.Tensor, grid_lat: torch.Tensor,
                     grid_lon: torch.Tensor, dlat: float, dlon: float) -> torch.Tensor:
    """d² in squared grid spacings between observations and grid points (degrees), elementwise
    (broadcasting: (P,) pairs, or (N, 1) against (1, G) for all pairs)."""
    dphi = (grid_lat - obs_lat) / dlat
    dlam = torch.remainder(grid_lon - obs_lon + 180.0, 360.0) - 180.0
    cos_mid = torch.cos(torch.deg2rad(0.5 * (grid_lat + obs_lat)))
    return dphi.square() + (cos_mid * dlam / dlon).square()


def grid_spacing(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float]:
    """(Δφ, Δλ) in degrees: the mean latitude spacing and 360° / W."""
    lat = np.asarray(lat, dtype=np.float64)
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 180.0
    return dlat, 360.0 / len(lon)


def search_radius_km(limit: float, dlat: float, dlon: float) -> float:
    """A great-circle radius (km) containing every pair with d < ``limit`` grid spacings.

    The great circle is no longer than the path along the meridian and then the parallel of the
    point with the smaller cos φ: r ≤ R (|Δφ| + min(cos φ₁, cos φ₂) |Δλ|) ≤ R (|Δφ| + cos φ̄ |Δλ|)
    (cos is concave on [−90°, 90°]), with |Δλ| ≤ 180° the wrapped difference; and
    |Δφ| + cos φ̄ |Δλ| ≤ √2 √(Δφ² + (cos φ̄ Δλ)²) ≤ √2 · d · max(Δφ, Δλ) (Δφ, Δλ the grid's
    spacings). Hence r < √2 · limit · max(Δφ, Δλ) (in radians) · R.
    """
    return math.sqrt(2.0) * limit * math.radians(max(dlat, dlon)) * EARTH_RADIUS_KM * (
        1 + _RADIUS_MARGIN)


def soft_mask_and_values(obs: Observations, increments: torch.Tensor, lat: np.ndarray,
                         lon: np.ndarray, sigma: float, cutoff: float,
                         grid_tree: SphereTree | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft mask m and the spread increments v, each (C, H, W), float32.

    Args:
        obs: the observations (their lat/lon in degrees, channel, grid_shape (C, H, W)).
        increments: (N,) the observed increments d_n (any units; the caller scales them).
        lat, lon: (H,), (W,) grid coordinates in degrees (north → south, 0 → 360).
        sigma: σ of the kernel in grid spacings (1.5 in DiffDA's code).
        cutoff: the kernel is 0 beyond cutoff · σ grid spacings.
        grid_tree: a SphereTree of the grid points (flattened lat-major), to reuse.
    """
    mask, values = soft_mask_and_values64(obs, increments, lat, lon, sigma, cutoff, grid_tree)
    return mask.float(), values.float()


def soft_mask_and_values64(obs: Observations, increments: torch.Tensor, lat: np.ndarray,
                           lon: np.ndarray, sigma: float, cutoff: float,
                           grid_tree: SphereTree | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``soft_mask_and_values`` before the cast to float32 (float64; for tests)."""
    c, h, w = obs.grid_shape
    device = increments.device
    mask = torch.zeros(c, h * w, dtype=torch.float64, device=device)
    weighted = torch.zeros_like(mask)
    total = torch.zeros_like(mask)
    if len(obs) == 0:
        return mask.reshape(c, h, w), weighted.reshape(c, h, w)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    dlat, dlon = grid_spacing(lat, lon)
    if grid_tree is None:
        grid_tree = SphereTree(np.repeat(lat, w), np.tile(lon, h))
    obs_lat = np.asarray(obs.lat, dtype=np.float64)
    obs_lon = np.asarray(obs.lon, dtype=np.float64)
    d = increments.to(torch.float64)
    limit2 = (cutoff * sigma) ** 2
    radius = search_radius_km(cutoff * sigma, dlat, dlon)

    def as_t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device)

    # one kernel per group of channels observed at the same points ("columns" sampling: one)
    for channels, index in obs.channels_by_location():
        points = index[:, 0]
        src_lat, src_lon = obs_lat[points], obs_lon[points]
        d_k = d[as_t(index)]  # (n, len(channels))
        coeff = torch.cat([d_k, torch.ones_like(d_k[:, :1])], dim=1)
        group_max = torch.zeros(h * w, dtype=torch.float64, device=device)
        sums = torch.zeros(h * w, coeff.shape[1], dtype=torch.float64, device=device)
        for pairs in pairs_within(src_lat, src_lon, None, None, radius, dst_tree=grid_tree):
            dist2 = kernel_distance2(as_t(src_lat[pairs.src]), as_t(src_lon[pairs.src]),
                                     as_t(grid_tree.lat[pairs.dst]),
                                     as_t(grid_tree.lon[pairs.dst]), dlat, dlon)
            inside = dist2 < limit2
            pairs = pairs.where(inside.cpu().numpy())
            kernel = torch.exp(-0.5 * dist2[inside] / sigma**2)
            # m_c = max over the channel's observations; sums for the weighted mean
            group_max.scatter_reduce_(0, as_t(pairs.dst), kernel, reduce="amax")
            add_weighted(sums, pairs, kernel, coeff)
        mask[channels] = torch.maximum(mask[channels], group_max)
        total[channels] += sums[:, -1]
        weighted[channels] += sums[:, :-1].T
    values = torch.where(total > 0, weighted / torch.where(total > 0, total, 1.0), 0.0)
    # observed grid points keep their own increment (exact interpolation)
    on_grid = _dense_view(obs, d)
    observed = on_grid[0] > 0
    values = torch.where(observed, on_grid[1], values)
    mask = torch.where(observed, 1.0, mask)
    return mask.reshape(c, h, w), values.reshape(c, h, w)


def _dense_view(obs: Observations, increments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count > 0, mean increment) on the flattened grid (C, H·W), as Observations.dense."""
    c, h, w = obs.grid_shape
    dense_obs = Observations(
        values=increments, error_std=torch.zeros_like(increments),
        channel=obs.channel.to(increments.device), flat_index=obs.flat_index.to(increments.device),
        weights=obs.weights.to(increments.device), lat=obs.lat, lon=obs.lon,
        grid_shape=obs.grid_shape)
    observed, values = dense_obs.dense()
    return observed.reshape(c, h * w), values.reshape(c, h * w)
