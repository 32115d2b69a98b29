"""Distance localisation for ensemble methods: the Gaspari–Cohn taper and the weighted
(grid column, observation) pairs of R-localisation.

Gaspari & Cohn (1999, eq. 4.10): the compactly supported fifth-order piecewise rational
function of z = r / c (r the great-circle distance, c the half-width),

    GC(z) = −¼ z⁵ + ½ z⁴ + ⅝ z³ − (5/3) z² + 1                        0 ≤ z ≤ 1
    GC(z) = (1/12) z⁵ − ½ z⁴ + ⅝ z³ + (5/3) z² − 5 z + 4 − 2/(3 z)    1 < z ≤ 2
    GC(z) = 0                                                          z > 2

GC(0) = 1, GC(1) = 5/24, GC(2) = 0; it decreases monotonically, is twice continuously
differentiable, and as a correlation function on the sphere it is positive definite. Its
support is 2c; near 0 it matches a Gaussian exp(−r²/(2σ²)) with σ = c √(3/10), so a Gaussian
localisation "σ" (Miyoshi's LETKF codes) corresponds to the cut-off 2c = 2 √(10/3) σ ≈ 3.65 σ.

R-localisation (Hunt et al. 2007 §2.3; Greybush et al. 2011): the local analysis at a grid
column uses the observations within 2c of it, each observation's inverse error variance
multiplied by GC(r / c). ``localised_pairs`` finds those pairs with the shared great-circle
neighbour search (methods/common/neighbours.py), the columns as sources and a SphereTree of the
observation locations as destinations, in batches of bounded memory.

Channel localisation (``channel_weights``): which observations a state channel is analysed
from, as a (C, C) matrix V of weights in [0, 1] that multiplies each observation's inverse error
variance on top of the horizontal GC weight (the vertical/variable localisation of SPEEDY-LETKF,
Miyoshi 2005, in log-pressure; "variable localization", Kang et al. 2011):

    "all"       V = 1: every observation updates every channel (multivariate)
    "own"       V = I: channel a only from observations of channel a
    "variable"  V[a, b] = GC(|ln p_a − ln p_b| / c_v) for two levels of the same upper-air
                variable (c_v = half the vertical cut-off), 0 across variables; a surface channel
                (no level) only from itself
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from methods.common.neighbours import Pairs, SphereTree, pairs_within


def gaspari_cohn(z) -> np.ndarray:
    """GC(z) of Gaspari & Cohn (1999, eq. 4.10), z = r / c ≥ 0 (module docstring); float64.

    The outer branch is evaluated in its factored form (2 − z)⁴ (2z² + 4z − 1) / (24 z), equal
    to eq. 4.10's, without its cancellation near z = 2: monotone to round-off and exactly 0
    from z = 2 on."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    inner = ((((-0.25 * z + 0.5) * z + 0.625) * z - 5.0 / 3.0) * z) * z + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        outer = (2.0 - z) ** 4 * ((2.0 * z + 4.0) * z - 1.0) / (24.0 * z)
    w = np.where(z <= 1.0, inner, np.where(z < 2.0, outer, 0.0))
    return np.clip(w, 0.0, 1.0)


#: The choices of ``channel_weights``' ``mode``.
CHANNEL_LOCALISATIONS = ("all", "variable", "own")


def channel_weights(variables: Sequence[str], levels: Sequence[float | None], mode: str,
                    cutoff_lnp: float = math.inf) -> np.ndarray:
    """(C, C) float64 V: V[a, b] the weight of an observation of channel b in the analysis of
    channel a (module docstring).

    Args:
        variables: (C,) each channel's variable ("z", "t", … or a surface field's name).
        levels: (C,) each channel's pressure level in hPa, None for a surface field.
        mode: one of ``CHANNEL_LOCALISATIONS``.
        cutoff_lnp: "variable": the vertical cut-off 2c_v in ln p where the GC weight reaches 0
            (``math.inf``: every level of the variable at weight 1).
    """
    c = len(variables)
    if len(levels) != c or mode not in CHANNEL_LOCALISATIONS or not cutoff_lnp > 0:
        raise ValueError(f"need one level per channel ({c} variables, {len(levels)} levels), "
                         f"mode in {CHANNEL_LOCALISATIONS} (got {mode!r}) and cutoff_lnp > 0 "
                         f"(got {cutoff_lnp})")
    if mode == "all":
        return np.ones((c, c))
    out = np.eye(c)
    if mode == "variable":
        upper = np.array([lev is not None for lev in levels])
        lnp = np.log(np.array([lev if lev is not None else 1.0 for lev in levels], np.float64))
        same = (np.asarray(variables, dtype=object)[:, None] ==
                np.asarray(variables, dtype=object)[None, :]) & upper[:, None] & upper[None, :]
        distance = np.abs(lnp[:, None] - lnp[None, :])
        z = distance / (cutoff_lnp / 2) if math.isfinite(cutoff_lnp) else np.zeros_like(distance)
        out = np.where(same, gaspari_cohn(z), out)
    return out


def grid_columns(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """(G,) latitude and longitude (degrees, float64) of every column of the grid ``lat`` (H,)
    × ``lon`` (W,), flattened lat-major as ``Observations.flat_index`` (lat_index · W + lon)."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    return np.repeat(lat, lon.size), np.tile(lon, lat.size)


def localised_pairs(lat, lon, tree: SphereTree, half_width_km: float, *, max_sources: int,
                    max_pairs: int | None = None) -> Iterator[tuple[Pairs, np.ndarray]]:
    """The (source, destination) pairs with a positive Gaspari–Cohn weight, in batches.

    Args:
        lat, lon: (G,) sources in degrees (a method's grid columns).
        tree: SphereTree of the destinations (the observation locations).
        half_width_km: c; pairs closer than the cut-off 2c (``math.inf``: every pair, weight 1,
            no localisation).
        max_sources: at most this many sources per batch (bounds the per-source work).
        max_pairs: upper bound on the candidate pairs of a batch (``neighbours.MAX_PAIRS`` when
            None).
    Yields:
        (pairs, weights): ``pairs.src`` indexes ``lat``/``lon``, ``pairs.dst`` the tree's
        points; ``weights`` (P,) = GC(r / c) > 0. Every pair of a source is in one batch;
        sources without a pair appear in none. Sources are taken in blocks of ``max_sources``
        in their given order (a lat-major grid: latitude bands), each block chunked further by
        the neighbour search's pair bound.
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if half_width_km <= 0 or max_sources < 1:
        raise ValueError(f"need half_width_km > 0 and max_sources ≥ 1, got {half_width_km} and "
                         f"{max_sources}")
    cutoff = 2.0 * half_width_km
    for start in range(0, lat.size, max_sources):
        block = np.arange(start, min(start + max_sources, lat.size))
        for pairs in pairs_within(lat[block], lon[block], None, None, cutoff, dst_tree=tree,
                                  max_pairs=max_pairs):
            z = pairs.distance_km / half_width_km if math.isfinite(half_width_km) else \
                np.zeros_like(pairs.distance_km)
            weights = gaspari_cohn(z)
            keep = weights > 0
            if keep.any():
                yield Pairs(block[pairs.src[keep]], pairs.dst[keep],
                            pairs.distance_km[keep]), weights[keep]


__all__ = ["CHANNEL_LOCALISATIONS", "channel_weights", "gaspari_cohn", "grid_columns",
           "localised_pairs"]
