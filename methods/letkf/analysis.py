"""LETKF's analysis: the analyser and the batched local ETKF (notation and method in
method.py's docstring): the local problems of each column batch and channel group, as summed
local matrices [C_j Y_b | C_j (y − ȳ_b)] or as factors, and their batched eigendecompositions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import Analyser, Analysis, Background, Kernel, Observations
from methods.common.localisation import channel_weights, grid_columns, localised_pairs
from methods.common.neighbours import Pairs, SphereTree, add_weighted
from methods.letkf import additive

if TYPE_CHECKING:
    from methods.letkf.method import LETKF

#: Memory one batch of columns may take (its N × N matrices and its members, float64), and
#: one batch of location sums; tests shrink it to check that batching changes no result.
BATCH_BYTES = 2**28

#: A local analysis with fewer than LOW_RANK · N observations is solved through its r × r
#: observation-space Gram matrix instead of the N × N ensemble-space one (the same analysis:
#: cheaper while r < N); tests set 0 or inf to check that the two agree.
LOW_RANK = 1.0


def column_bytes(n: int, channels: int) -> int:
    """float64 bytes one column of a batch holds: ~8 N × N matrices (the sums, A, Q, W_a, the
    transform, eigh's workspace) and ~5 members' (C × N) blocks (X_b, X_a, the output)."""
    return 8 * (8 * n * n + 5 * n * channels + n + 2)


class LETKFAnalyser(Analyser):
    """LETKF on one grid: the method's settings, the grid columns' coordinates and the pool.

    Attributes:
        method: the LETKF (hyper-parameters).
        shape: (H, W) of the grid.
        lat, lon: (G,) degrees of the grid columns, flattened lat-major (as ``flat_index``).
        device: where the analysis runs.
        pool: (P, C, H, W) the additive inflation's 6 h forecast errors on the device (None
            at α = 0).
    """

    def __init__(self, method: LETKF, spec: StateSpec, device: torch.device | str,
                 state: dict | None = None):
        self.method, self.device = method, torch.device(device)
        self.pool = None if method.additive_inflation == 0 else additive.load_pool(
            state or {}, spec, method.members, self.device)
        self.shape = (len(spec.lat), len(spec.lon))
        self.lat, self.lon = grid_columns(spec.lat, spec.lon)
        self.channel_weights = channel_weights(
            [ch.variable for ch in spec.channels], [ch.level for ch in spec.channels],
            method.channel_localisation, method.vertical_localisation)

    # ----------------------------------------------------------------------------- analysis
    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """The analysed members and their mean (after the additive draw, if α > 0).

        Notation (code → Hunt et al. 2007):
            xs (N, C, G)       background members x_b⁽ⁿ⁾ (G grid columns); xb, Xb: x̄_b, X_b
            z (P, N), e (P,)   Y_bᵀ and y − ȳ_b, each row divided by σ_i (R^{-1/2})
            v (P,)             the channel weight V[a, channel_i] of a channel group a
            sums               per column Σ_i GC_ij v_i [z_i z_iᵀ | z_i e_i] = [C_j Y_b |
                               C_j (y − ȳ_b)]
            u (r, N), f (r,)   the same as factors: rows √(GC_ij v_i) z_i and √(GC_ij v_i) e_i
                               of the r local observations (C_j Y_b = uᵀu, C_j (y − ȳ_b) = uᵀf)
            A, lam, q          (N − 1) I / ρ + C_j Y_b = Q Λ Qᵀ
            w_mean, w_a        w̄_a = P̃_a C_j (y − ȳ_b),  W_a = [(N − 1) P̃_a]^{1/2}

        Returns:
            Analysis: x_a (C, H, W), the analysed members' mean; members (N, C, H, W), both
            in the background's dtype and device. Diagnostics: ``evaluations`` (local
            analyses: (grid column, channel group) pairs with observations — grid columns with
            "all"), ``iterations`` (1, or 0 without any), ``local_obs`` (mean observations with
            a weight > 0 per grid value, all grid values), ``spread_prior`` and
            ``spread_analysis`` (√ of the mean member variance over all grid values,
            normalised; the prior's of the members the local analyses start from: the
            forecasts plus the additive draw), ``spread_additive`` (the same of the additive
            draw alone; 0 without), ``inflation`` (ρ of the local analyses) and
            ``relaxation`` (analysis spread after / before RTPP or RTPS, √ of the ratio of
            summed variances over the analysed grid values; 1 without relaxation).
        """
        m, out_device = self.method, background.x_b.device
        xs = self._members(background)
        n, c, h, w = xs.shape
        spread_additive = 0.0
        if self.pool is not None:
            added = additive.draw(self.pool, n, m.additive_inflation, m.seed, background.cycle,
                                  xs.dtype)
            xs = xs + added
            spread_additive = _rms_spread(added.reshape(n, c, h * w))
        xs = xs.reshape(n, c, h * w)
        out = xs.clone()
        spread_prior = _rms_spread(xs)
        local_obs = evaluations = var_etkf = var_final = 0.0
        for problem in self._local_problems(xs, obs):
            channels, cols = problem.index(self.device)
            members, var = self._local_analysis(xs[:, channels, cols], problem)
            out[:, channels, cols] = members.to(out.dtype)
            local_obs += float(problem.count.sum()) * problem.channels.size
            evaluations += problem.cols.size
            var_etkf, var_final = var_etkf + var[0], var_final + var[1]
        members = out.reshape(n, c, h, w).to(out_device)
        return Analysis(members.mean(0), members=members, diagnostics={
            "evaluations": float(evaluations), "iterations": float(evaluations > 0),
            "local_obs": local_obs / (c * h * w), "spread_prior": spread_prior,
            "spread_analysis": _rms_spread(out), "spread_additive": spread_additive,
            "inflation": float(m.inflation),
            "relaxation": math.sqrt(var_final / var_etkf) if var_etkf > 0 else 1.0})

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """The local analyses of the first column batch (every channel group, as many local
        problems as fit in BATCH_BYTES) from their summed local matrices or factors: the
        batched eigendecompositions and the ensemble-space products (FLOP, float64; torch's
        FLOP counter counts the products, not the eigendecompositions)."""
        xs = self._members(background)
        xs = xs.reshape(*xs.shape[:2], -1)
        problems, held, first = [], 0, None
        for problem in self._local_problems(xs, obs):
            first = problem.batch if first is None else first
            if problem.batch != first or (problems and held + problem.nbytes > BATCH_BYTES):
                break
            problems.append(problem)
            held += problem.nbytes
        local = [(xs[:, ch, cols], p) for p in problems for ch, cols in [p.index(self.device)]]
        return Kernel("batched eigh + ensemble products (first column batch)",
                      lambda: [self._local_analysis(x, p) for x, p in local], "FLOP", "float64")

    # ----------------------------------------------------------------------------- steps
    def _members(self, background: Background) -> torch.Tensor:
        """(N, C, H, W) the background members on the analysis device."""
        xs = background.member_backgrounds
        if xs.shape[0] != self.method.members or tuple(xs.shape[-2:]) != self.shape or \
                xs.shape[-3] != self.channel_weights.shape[0]:
            raise ValueError(f"LETKF of {self.method.members} members on a "
                             f"{self.channel_weights.shape[0]}-channel {self.shape} grid got "
                             f"members {tuple(xs.shape)} (N, C, H, W)")
        return xs.to(self.device)

    def _groups(self, channel: np.ndarray, at: np.ndarray, places: int):
        """Per channel group (the state channels sharing one row of V): (channels, v, order,
        start): v (P,) float64 the row's weight of each observation (torch, on the device),
        order the observations with v > 0 by location (stable), start (places + 1,) where
        each location's begin in ``order``."""
        rows, group = np.unique(self.channel_weights, axis=0, return_inverse=True)
        group = group.reshape(-1)
        by_place = np.argsort(at, kind="stable")
        for g in range(rows.shape[0]):
            v = rows[g][channel]
            order = by_place[v[by_place] > 0]
            start = np.searchsorted(at[order], np.arange(places + 1))
            yield (np.flatnonzero(group == g), torch.as_tensor(v, device=self.device), order,
                   start)

    def _local_problems(self, xs: torch.Tensor, obs: Observations):
        """Yields the local problems (``_Problem``) of each batch of columns and each channel
        group: the group's grid columns with observations (weight > 0) in batches of summed
        local matrices (count ≥ LOW_RANK · N local observations) or of factors (fewer)."""
        m, n = self.method, xs.shape[0]
        if len(obs) == 0:
            return
        obs = obs.to(self.device)
        ys = obs.operator(xs.reshape(n, *obs.grid_shape)).to(torch.float64)  # H(x_b⁽ⁿ⁾)
        y_mean = ys.mean(0)
        sigma = obs.error_std.to(torch.float64).clamp_min(m.min_obs_error)
        z = ((ys - y_mean) / sigma).T.contiguous()  # (P, N): R^{-1/2} Y_b
        e = (obs.values.to(torch.float64) - y_mean) / sigma  # R^{-1/2} (y − ȳ_b)
        where = np.stack([np.asarray(obs.lat, np.float64), np.asarray(obs.lon, np.float64)], 1)
        places, at = np.unique(where, axis=0, return_inverse=True)
        channel, at = obs.channel.cpu().numpy(), at.reshape(-1)
        tree = SphereTree(places[:, 0], places[:, 1])
        max_columns = max(1, BATCH_BYTES // column_bytes(n, xs.shape[1]))
        for batch, (pairs, weights) in enumerate(localised_pairs(
                self.lat, self.lon, tree, m.localisation_km / 2, max_sources=max_columns)):
            cols, row = np.unique(pairs.src, return_inverse=True)
            for channels, v, order, start in self._groups(channel, at, places.shape[0]):
                per_pair = (start[1:] - start[:-1])[pairs.dst]  # the group's obs per pair
                count = np.bincount(row, weights=per_pair, minlength=cols.size)
                full = (count > 0) & (count >= LOW_RANK * n)
                for rows in [np.flatnonzero(full)] + _bins(count, ~full & (count > 0)):
                    if rows.size == 0:
                        continue
                    mine = np.zeros(cols.size, bool)
                    mine[rows] = True
                    keep = np.flatnonzero(mine[row] & (per_pair > 0))
                    local = np.searchsorted(rows, row[keep])  # the pair's column in ``rows``
                    sub = Pairs(pairs.dst[keep], local, pairs.distance_km[keep])
                    problem = _Problem(batch, cols[rows], channels, count[rows])
                    if full[rows[0]]:
                        problem.sums = _column_sums(z, e, v, order, start, sub, weights[keep],
                                                    rows.size)
                    else:
                        problem.u, problem.f = _column_factors(
                            z, e, v, order, start, sub, weights[keep], rows.size,
                            int(count[rows].max()))
                    yield problem

    def _local_analysis(self, xs: torch.Tensor, problem: _Problem
                        ) -> tuple[torch.Tensor, tuple[float, float]]:
        """Members (N, c, B) after the local ETKF of B (column, group) analyses of c channels,
        from their local sums or factors; and the summed variances (before, after relaxation)
        of the analysed grid values."""
        m = self.method
        n = xs.shape[0]
        x = xs.to(torch.float64).permute(2, 1, 0)  # (B, c, N)
        xb = x.mean(-1, keepdim=True)
        xp = x - xb  # X_b, a (c, N) block per analysis
        if problem.sums is not None:
            sums = problem.sums
            eye = torch.eye(n, dtype=torch.float64, device=x.device)
            a = sums[:, :n * n].reshape(-1, n, n) + (n - 1) / m.inflation * eye
            lam, q = torch.linalg.eigh(0.5 * (a + a.mT))  # A = Q Λ Qᵀ, Λ ≥ (N − 1)/ρ > 0
            w_mean = q @ ((q.mT @ sums[:, n * n:n * n + n, None]) / lam[..., None])  # w̄_a
            w_a = (q * ((n - 1) / lam).sqrt()[:, None, :]) @ q.mT  # W_a
            pert = xp @ w_a  # X_a = X_b W_a
        else:
            # A = α I + uᵀu (α = (N − 1)/ρ) through the r × r Gram matrix u uᵀ = V S² Vᵀ:
            # w̄_a = A⁻¹ uᵀ f = uᵀ V (α + S²)⁻¹ Vᵀ f, and with Q = uᵀ V S⁻¹ (orthonormal)
            # W_a = √ρ (I + Q ((α / (α + S²))^{1/2} − 1) Qᵀ)
            #     = √ρ (I − uᵀ V diag(1 / (√(α + S²) (√α + √(α + S²)))) Vᵀ u)   (no S⁻¹),
            # applied as X_b W_a = √ρ (X_b − ((X_b uᵀ V) diag(·)) Vᵀ u) without forming it
            u, f = problem.u, problem.f
            alpha = (n - 1) / m.inflation
            gram = u @ u.mT
            s2, v = torch.linalg.eigh(0.5 * (gram + gram.mT))
            s2 = s2.clamp_min(0.0)
            vu = v.mT @ u  # (B, r, N)
            w_mean = vu.mT @ ((v.mT @ f[..., None]) / (alpha + s2)[..., None])
            root = (alpha + s2).sqrt()
            shrink = 1.0 / (root * (math.sqrt(alpha) + root))
            pert = math.sqrt(m.inflation) * (xp - ((xp @ vu.mT) * shrink[:, None, :]) @ vu)
        mean = xb + xp @ w_mean  # x̄_b + X_b w̄_a, (B, c, 1)
        var_etkf = float(torch.linalg.vector_norm(pert)) ** 2 / (n - 1)
        if m.rtpp > 0:
            pert = (1 - m.rtpp) * pert + m.rtpp * xp
        elif m.rtps > 0:
            sigma_b, sigma_a = xp.std(-1, keepdim=True), pert.std(-1, keepdim=True)
            ok = sigma_a > 0
            pert = pert * torch.where(ok, 1 + m.rtps * (sigma_b - sigma_a) / torch.where(
                ok, sigma_a, 1.0), 1.0)
        return ((mean + pert).permute(2, 1, 0),
                (var_etkf, float(torch.linalg.vector_norm(pert)) ** 2 / (n - 1)))


@dataclasses.dataclass(eq=False)
class _Problem:
    """B local analyses of one channel group: grid columns ``cols`` (B,), state ``channels``
    (c,), ``count`` (B,) local observations; either ``sums`` (B, N² + N) = [C_j Y_b |
    C_j (y − ȳ_b)] or the factors ``u`` (B, r, N), ``f`` (B, r) (zero rows pad to r)."""

    batch: int
    cols: np.ndarray
    channels: np.ndarray
    count: np.ndarray
    sums: torch.Tensor | None = None
    u: torch.Tensor | None = None
    f: torch.Tensor | None = None

    def index(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(c, 1) channels and (1, B) columns: ``x[:, channels, cols]`` is (N, c, B)."""
        return (torch.as_tensor(self.channels, device=device)[:, None],
                torch.as_tensor(self.cols, device=device)[None, :])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.sums, self.u, self.f)
                   if t is not None)


def _bins(count: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The rows of ``mask`` grouped by ⌈log₂ count⌉ (factors pad to within 2× of the rank)."""
    rows = np.flatnonzero(mask)
    key = np.ceil(np.log2(count[rows])).astype(np.int64)
    return [rows[key == k] for k in np.unique(key)]


def _column_sums(z: torch.Tensor, e: torch.Tensor, v: torch.Tensor, order: np.ndarray,
                 start: np.ndarray, pairs: Pairs, weights: np.ndarray, b: int) -> torch.Tensor:
    """(B, N² + N): per column Σ_pairs GC Σ_{i at the location} v_i [z_i z_iᵀ | z_i e_i];
    ``pairs.src`` locations, ``pairs.dst`` the B columns (all present). The used locations'
    sums in chunks of at most BATCH_BYTES."""
    n = z.shape[1]
    used, place = np.unique(pairs.src, return_inverse=True)
    per_place = start[used + 1] - start[used]  # observations at each used location
    sums = torch.zeros(b, n * n + n, dtype=torch.float64, device=z.device)
    w = torch.as_tensor(weights, dtype=torch.float64, device=z.device)
    max_rows = max(1, BATCH_BYTES // (16 * (n * n + n)))  # observations per chunk of sums
    total = np.cumsum(per_place)
    first = 0
    while first < used.size:  # the used locations in chunks of ≤ max_rows observations
        last = max(first + 1, int(np.searchsorted(
            total, total[first] - per_place[first] + max_rows, side="right")))
        keep = np.flatnonzero((place >= first) & (place < last))
        add_weighted(sums, Pairs(place[keep] - first, pairs.dst[keep], pairs.distance_km[keep]),
                     w[torch.as_tensor(keep, device=z.device)],
                     _location_sums(z, e, v, order, start, used[first:last]))
        first = last
    return sums


def _column_factors(z: torch.Tensor, e: torch.Tensor, v: torch.Tensor, order: np.ndarray,
                    start: np.ndarray, pairs: Pairs, weights: np.ndarray, b: int, rank: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, rank, N) and (B, rank): per column the rows √(GC v_i) z_i and √(GC v_i) e_i of its
    local observations (pairs as ``_column_sums``'), zero-padded to ``rank``."""
    n = z.shape[1]
    by_column = np.argsort(pairs.dst, kind="stable")
    loc, col = pairs.src[by_column], pairs.dst[by_column]
    reps = start[loc + 1] - start[loc]
    pair = np.repeat(np.arange(loc.size), reps)
    offset = np.arange(pair.size) - np.repeat(np.cumsum(reps) - reps, reps)
    ob = torch.as_tensor(order[start[loc[pair]] + offset], device=z.device)
    column = col[pair]
    first = np.searchsorted(column, column)  # entries sorted by column: slot within it
    slot = np.arange(column.size) - first
    scale = (torch.as_tensor(weights[by_column][pair], dtype=torch.float64, device=z.device)
             * v[ob]).sqrt()
    u = torch.zeros(b, rank, n, dtype=torch.float64, device=z.device)
    f = torch.zeros(b, rank, dtype=torch.float64, device=z.device)
    index = (torch.as_tensor(column, device=z.device), torch.as_tensor(slot, device=z.device))
    u[index] = scale[:, None] * z[ob]
    f[index] = scale * e[ob]
    return u, f


def _location_sums(z: torch.Tensor, e: torch.Tensor, v: torch.Tensor, order: np.ndarray,
                   start: np.ndarray, places: np.ndarray) -> torch.Tensor:
    """(L, N² + N): for each location, Σ_i v_i [z_i z_iᵀ | z_i e_i] over its observations
    (``order[start[l]:start[l + 1]]``)."""
    counts = start[places + 1] - start[places]
    local = np.repeat(np.arange(places.size), counts)
    offsets = np.arange(local.size) - np.repeat(np.cumsum(counts) - counts, counts)
    index = torch.as_tensor(order[start[places][local] + offsets], device=z.device)
    zi = z[index]
    rows = torch.cat([(zi[:, :, None] * zi[:, None, :]).flatten(1), zi * e[index, None]], 1)
    out = torch.zeros(places.size, rows.shape[1], dtype=torch.float64, device=z.device)
    # a sparse sum over each location's rows: no atomics, the same bits on every run and GPU
    add_weighted(out, Pairs(np.arange(local.size), local, np.zeros(local.size)), v[index], rows)
    return out


def _rms_spread(xs: torch.Tensor) -> float:
    """√(mean over grid values of the members' variance), (N, C, G) members."""
    n = xs.shape[0]
    norm = float(torch.linalg.vector_norm(xs - xs.mean(0), dtype=torch.float64))
    return norm / math.sqrt((n - 1) * xs[0].numel())
