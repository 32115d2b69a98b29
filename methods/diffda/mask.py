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
"""

from __future__ import annotations

import numpy as np
import torch

from methods.base import Observations

#: Most (observation × grid point) kernel entries evaluated at once (bounded memory).
_KERNEL_BUDGET = 2**22


def kernel_distance2(obs_lat: torch.Tensor, obs_lon: torch.Tensor, grid_lat: torch.Tensor,
                     grid_lon: torch.Tensor, dlat: float, dlon: float) -> torch.Tensor:
    """d² in squared grid spacings, (N, G), from (N,) observation and (G,) grid degrees."""
    dphi = (grid_lat[None, :] - obs_lat[:, None]) / dlat
    dlam = torch.remainder(grid_lon[None, :] - obs_lon[:, None] + 180.0, 360.0) - 180.0
    cos_mid = torch.cos(torch.deg2rad(0.5 * (grid_lat[None, :] + obs_lat[:, None])))
    return dphi.square() + (cos_mid * dlam / dlon).square()


def grid_spacing(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float]:
    """(Δφ, Δλ) in degrees: the mean latitude spacing and 360° / W."""
    lat = np.asarray(lat, dtype=np.float64)
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 180.0
    return dlat, 360.0 / len(lon)


def soft_mask_and_values(obs: Observations, increments: torch.Tensor, lat: np.ndarray,
                         lon: np.ndarray, sigma: float, cutoff: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft mask m and the spread increments v, each (C, H, W), float32.

    Args:
        obs: the observations (their lat/lon in degrees, channel, grid_shape (C, H, W)).
        increments: (N,) the observed increments d_n (any units; the caller scales them).
        lat, lon: (H,), (W,) grid coordinates in degrees (north → south, 0 → 360).
        sigma: σ of the kernel in grid spacings (1.5 in DiffDA's code).
        cutoff: the kernel is 0 beyond cutoff · σ grid spacings.
    """
    c, h, w = obs.grid_shape
    device = increments.device
    mask = torch.zeros(c, h * w, dtype=torch.float64, device=device)
    weighted = torch.zeros_like(mask)
    total = torch.zeros_like(mask)
    if len(obs) == 0:
        return mask.reshape(c, h, w).float(), weighted.reshape(c, h, w).float()
    dlat, dlon = grid_spacing(lat, lon)
    grid_lat = torch.as_tensor(np.repeat(lat, w), dtype=torch.float64, device=device)
    grid_lon = torch.as_tensor(np.tile(lon, h), dtype=torch.float64, device=device)
    obs_lat = np.asarray(obs.lat, dtype=np.float64)
    obs_lon = np.asarray(obs.lon, dtype=np.float64)
    d = increments.to(torch.float64)
    limit2 = (cutoff * sigma) ** 2
    step = max(1, _KERNEL_BUDGET // (h * w))
    # one kernel per group of channels observed at the same points ("columns" sampling: one)
    for channels, index in obs.channels_by_location():
        points = index[:, 0]
        d_k = d[torch.as_tensor(index, device=device)]  # (n, len(channels))
        for start in range(0, len(points), step):
            part = slice(start, start + step)
            src_lat = torch.as_tensor(obs_lat[points[part]], device=device)
            src_lon = torch.as_tensor(obs_lon[points[part]], device=device)
            dist2 = kernel_distance2(src_lat, src_lon, grid_lat, grid_lon, dlat, dlon)
            kernel = torch.where(dist2 < limit2, torch.exp(-0.5 * dist2 / sigma**2), 0.0)
            # m_c = max over the channel's observations; sums for the weighted mean
            mask[channels] = torch.maximum(mask[channels], kernel.max(dim=0).values)
            total[channels] += kernel.sum(dim=0)
            weighted[channels] += (kernel.T @ d_k[part]).T
    values = torch.where(total > 0, weighted / torch.where(total > 0, total, 1.0), 0.0)
    # observed grid points keep their own increment (exact interpolation)
    on_grid = _dense_view(obs, d)
    observed = on_grid[0] > 0
    values = torch.where(observed, on_grid[1], values)
    mask = torch.where(observed, 1.0, mask)
    return mask.reshape(c, h, w).float(), values.reshape(c, h, w).float()


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


