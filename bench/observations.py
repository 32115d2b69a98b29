"""The observation protocol: seeded sampling, the operator H and R (DESIGN.md §3–§4).

Notation (all in the *normalised* units of methods/base.py, x_norm = (x − mean_c) / std_c):
    x       the truth, a state (C, H, W) on the spec's grid (lat north → south, lon 0 → 360)
    H       the linear observation operator; H(x)_n = Σ_k w[n, k] · x[c_n, i[n, k]]
    y       observations, y = H(x) + ε with ε ~ N(0, R), R = diag(σ_o²)
    σ_o     observation error std per observation, (N,)

Two kinds of observation are built here:

* **grid-point observations** (``observe``): y_n = x[c_n, p_n] + ε_n at grid points p_n, K = 1,
  weight 1. This is the benchmark's protocol. Which elements are observed is given by
  ``ObservationSettings``: ``columns`` (all observed channels at each chosen grid point, the
  VAE-Var / DiffDA protocol) or ``elements`` (each (channel, point) element independently, the
  FengWu-Adas protocol).
* **station observations** (``station_observations``): off-grid points with a bilinear H, K = 4,
  the operator a real station network would use.

Reproducibility ("identical cycles"): the observations of cycle k are drawn from a numpy
Generator seeded by ``np.random.SeedSequence([seed, round(density * 1e9), k])``. The draw depends
only on (seed, density, cycle) — and the fixed settings and grid — never on the method, on the
order of calls or on any other random state. That sequence is split in two independent children
(``.spawn(2)``): child 0 draws the locations, child 1 the noise. With ``redraw=False`` the
locations come from cycle 0's child 0 at every cycle while the noise still comes from cycle k's
child 1, so "fixed network, fresh errors" shares its cycle-0 draw exactly with ``redraw=True``.
Noise is drawn for every chosen element *before* missing truth values (NaN) are dropped, so a
missing value never shifts the noise of the other observations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bench.config import ObservationSettings
from bench.obs_regime import columns_for_density
from bench.state import StateSpec
from methods.base import Observations


def observation_rng(seed: int, density: float, cycle: int) -> tuple[
        np.random.Generator, np.random.Generator]:
    """(locations, noise) generators of one cycle, from SeedSequence([seed, ⌊density·1e9⌉, k])."""
    if isinstance(cycle, bool) or not isinstance(cycle, (int, np.integer)) or cycle < 0:
        raise ValueError(f"cycle must be a non-negative integer, got {cycle!r}")
    root = np.random.SeedSequence([int(seed), round(density * 1e9), int(cycle)])
    loc, noise = root.spawn(2)
    return np.random.default_rng(loc), np.random.default_rng(noise)


# --------------------------------------------------------------------------------- grid points
def observe(
    truth: torch.Tensor,
    spec: StateSpec,
    settings: ObservationSettings,
    cycle: int,
    clim_std: np.ndarray | None = None,
) -> Observations:
    """Grid-point observations of ``truth`` for one cycle: y = x[c, p] + ε, ε ~ N(0, σ_o²).

    Args:
        truth: x, (C, H, W) normalised, on any device; NaN marks missing data.
        spec: the world's StateSpec (grid, channels, normalisation std).
        settings: the protocol (density, sampling, noise, redraw, seed, channels).
        cycle: k, the 0-based cycle index; seeds the draw (see the module docstring).
        clim_std: (C,) climatological std per channel, physical units; None = spec.std.
    Returns:
        Observations with K = 1 and weight 1, ordered by channel, then flat grid index
        (lat_index · W + lon_index); tensors on truth's device, values / error_std / weights in
        truth's dtype. Elements whose truth value is not finite are dropped and counted in
        ``dropped``.
    """
    c, h, w = _check_truth(truth, spec)
    sigma_c = settings.error_std(spec, clim_std)  # (C,)
    chans = settings.channel_indices(spec)  # (C',)
    npts = h * w

    loc_rng, _ = observation_rng(settings.seed, settings.density,
                                 cycle if settings.redraw else 0)
    _, noise_rng = observation_rng(settings.seed, settings.density, cycle)
    if settings.sampling == "columns":
        n = columns_for_density(settings.density, npts)  # the tables' count too
        # sorted: the order of a draw without replacement carries no information
        points = np.sort(loc_rng.choice(npts, size=n, replace=False, shuffle=False))
        channel = np.repeat(chans, n)
        flat = np.tile(points, chans.size)
    else:
        n = max(1, round(settings.density * chans.size * npts))
        elems = np.sort(loc_rng.choice(chans.size * npts, size=n, replace=False, shuffle=False))
        channel = chans[elems // npts]
        flat = elems % npts
    sigma = sigma_c[channel]
    # Noise for every chosen element, before dropping NaNs (see the module docstring).
    eps = noise_rng.standard_normal(channel.size) if settings.noise_fraction > 0 else None

    device = truth.device
    index = torch.as_tensor(channel * npts + flat, device=device)
    x = truth.detach().reshape(-1)[index]
    keep = torch.isfinite(x).cpu().numpy()
    dropped = int(keep.size - keep.sum())
    channel, flat, sigma, x = channel[keep], flat[keep], sigma[keep], x[torch.as_tensor(
        keep, device=device)]
    if eps is None:
        values = x.clone()  # noise-free: y equals the truth exactly
    else:
        values = x + torch.as_tensor(sigma * eps[keep], dtype=truth.dtype, device=device)
    return Observations(
        values=values,
        error_std=torch.as_tensor(sigma, dtype=truth.dtype, device=device),
        channel=torch.as_tensor(channel, dtype=torch.long, device=device),
        flat_index=torch.as_tensor(flat, dtype=torch.long, device=device)[:, None],
        weights=torch.ones(channel.size, 1, dtype=truth.dtype, device=device),
        lat=spec.lat[flat // w].astype(np.float64),
        lon=spec.lon[flat % w].astype(np.float64),
        grid_shape=(c, h, w),
        dropped=dropped,
    )


# --------------------------------------------------------------------------------- stations
def bilinear_weights(
    spec: StateSpec, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear interpolation in (lat, lon) degrees from the spec's grid to points.

    Longitude is periodic: a point east of the last column interpolates between the last and
    the first column (lon 359° on a 0 … 337.5° grid). Latitudes north of the first grid row or
    south of the last one (towards the poles, where a grid without polar rows has no neighbour
    across the pole) clamp to that row, i.e. are interpolated in longitude only — a
    constant-in-latitude extrapolation, simple and never outside the grid's range of values.
    Interpolation is linear in degrees, not in distance on the sphere; cells are small enough
    that the difference is below any observation error.

    Args:
        lat, lon: (M,) degrees north / east; lat in [−90, 90], lon any finite value.
    Returns:
        flat_index (M, 4) int64 (lat_index · W + lon_index) and weights (M, 4) float64, rows
        summing to 1, in the order (north-west, north-east, south-west, south-east) with
        "east" the next column eastwards, cyclically. A clamped row repeats indices with
        weight 0 on the unused pair.
    """
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    if lat.shape != lon.shape or lat.ndim != 1:
        raise ValueError(f"lat and lon must be 1-D of one length, got {lat.shape}, {lon.shape}")
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError("station lat/lon must be finite")
    if np.any(np.abs(lat) > 90):
        raise ValueError("station latitudes must lie in [-90, 90] degrees")
    glat, glon = spec.lat, spec.lon
    h, w = glat.size, glon.size

    # rows: the grid runs north -> south, so work with a = −lat, increasing
    a = -glat
    if h == 1:
        i0 = np.zeros(lat.size, dtype=np.int64)
        t = np.zeros(lat.size)
    else:
        i0 = np.clip(np.searchsorted(a, -lat, side="right") - 1, 0, h - 2)
        t = np.clip((-lat - a[i0]) / (a[i0 + 1] - a[i0]), 0.0, 1.0)  # clamps beyond the ends
    i1 = np.minimum(i0 + 1, h - 1)

    # columns: periodic; move lon into [glon[0], glon[0] + 360) and close the circle
    ext = np.append(glon, glon[0] + 360.0)
    lam = glon[0] + np.mod(lon - glon[0], 360.0)
    j0 = np.clip(np.searchsorted(ext, lam, side="right") - 1, 0, w - 1)
    u = np.clip((lam - ext[j0]) / (ext[j0 + 1] - ext[j0]), 0.0, 1.0)
    j1 = (j0 + 1) % w

    flat = np.stack([i0 * w + j0, i0 * w + j1, i1 * w + j0, i1 * w + j1], axis=1)
    weights = np.stack([(1 - t) * (1 - u), (1 - t) * u, t * (1 - u), t * u], axis=1)
    return flat.astype(np.int64), weights


def station_observations(
    truth: torch.Tensor,
    spec: StateSpec,
    lat: np.ndarray,
    lon: np.ndarray,
    channels: Sequence[str],
    error_std_normalised: float | np.ndarray,
    rng_or_seed: np.random.Generator | np.random.SeedSequence | int,
) -> Observations:
    """Off-grid point observations with a bilinear H: y = H(x) + ε, ε ~ N(0, σ_o²).

    Every station observes each of ``channels``. See ``bilinear_weights`` for the
    interpolation (periodic longitude, latitudes clamped to the first/last grid row).

    Args:
        truth: x, (C, H, W) normalised; NaN marks missing data.
        spec: the world's StateSpec.
        lat, lon: (M,) station positions, degrees.
        channels: names of the observed channels.
        error_std_normalised: σ_o in normalised units, a scalar or one value per name in
            ``channels``; >= 0, and 0 adds no noise.
        rng_or_seed: a numpy Generator (consumed), or a seed for a new one.
    Returns:
        Observations with K = 4, N = len(channels) · M, ordered by channel (spec order), then
        station (the order given). An observation whose interpolated value is not finite (a
        missing truth value with non-zero weight) is dropped and counted in ``dropped``; noise
        is drawn for all N before dropping.
    """
    c, h, w = _check_truth(truth, spec)
    if isinstance(channels, str):
        channels = (channels,)
    if not len(channels) or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be non-empty and distinct, got {tuple(channels)}")
    idx = np.asarray(spec.indices(channels), dtype=np.int64)
    sigma_given = np.asarray(error_std_normalised, dtype=np.float64)
    if sigma_given.ndim == 0:
        sigma_given = np.full(idx.size, float(sigma_given))
    if sigma_given.shape != (idx.size,) or \
            not np.all(np.isfinite(sigma_given) & (sigma_given >= 0)):
        raise ValueError(
            "error_std_normalised must be a scalar or one value per channel "
            f"({idx.size}), finite and >= 0; got {error_std_normalised!r}")
    order = np.argsort(idx, kind="stable")
    idx, sigma_c = idx[order], sigma_given[order]

    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) \
        else np.random.default_rng(rng_or_seed)
    flat_m, weights_m = bilinear_weights(spec, lat, lon)  # (M, 4)
    m = flat_m.shape[0]
    channel = np.repeat(idx, m)  # (N,)
    sigma = np.repeat(sigma_c, m)
    flat = np.tile(flat_m, (idx.size, 1))  # (N, 4)
    weights = np.tile(weights_m, (idx.size, 1))
    slat = np.tile(np.atleast_1d(np.asarray(lat, dtype=np.float64)), idx.size)
    slon = np.tile(np.atleast_1d(np.asarray(lon, dtype=np.float64)), idx.size)
    eps = rng.standard_normal(channel.size)

    device = truth.device
    gidx = torch.as_tensor(channel[:, None] * (h * w) + flat, device=device)
    wt = torch.as_tensor(weights, dtype=truth.dtype, device=device)
    picked = truth.detach().reshape(-1)[gidx]  # (N, 4)
    # a missing value with weight 0 must not poison the sum (NaN · 0 = NaN)
    hx = torch.where(wt != 0, picked * wt, torch.zeros((), dtype=truth.dtype,
                                                       device=device)).sum(dim=1)
    keep_t = torch.isfinite(hx)
    keep = keep_t.cpu().numpy()
    values = hx[keep_t] + torch.as_tensor(sigma[keep] * eps[keep], dtype=truth.dtype,
                                          device=device)
    return Observations(
        values=values,
        error_std=torch.as_tensor(sigma[keep], dtype=truth.dtype, device=device),
        channel=torch.as_tensor(channel[keep], dtype=torch.long, device=device),
        flat_index=torch.as_tensor(flat[keep], dtype=torch.long, device=device),
        weights=wt[keep_t],
        lat=slat[keep],
        lon=slon[keep],
        grid_shape=(c, h, w),
        dropped=int(keep.size - keep.sum()),
    )


# --------------------------------------------------------------------------------- queries
def observed_points(obs: Observations) -> int:
    """Number of distinct observed locations: grid points for grid-point observations
    (whatever their channels), stations for off-grid ones (distinct (lat, lon) pairs)."""
    if len(obs) == 0:
        return 0
    if obs.flat_index.shape[1] == 1:
        return int(torch.unique(obs.flat_index[:, 0]).numel())
    return int(np.unique(np.stack([obs.lat, obs.lon], axis=1), axis=0).shape[0])


def _check_truth(truth: torch.Tensor, spec: StateSpec) -> tuple[int, int, int]:
    if not isinstance(truth, torch.Tensor) or not truth.is_floating_point():
        raise TypeError(f"truth must be a floating-point torch.Tensor, got {type(truth)}")
    if tuple(truth.shape) != spec.shape:
        raise ValueError(f"truth must have the spec's shape (C, H, W) = {spec.shape}, "
                         f"got {tuple(truth.shape)}")
    return spec.shape
