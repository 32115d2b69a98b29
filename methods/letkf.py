"""LETKF: the local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007).

At every grid column j and channel group a (the channels of the column analysed together:
all C channels, or one channel; below) a local ETKF in the N-dimensional ensemble space, with
the observations within the localisation cut-off of the column, each observation's inverse
error variance multiplied by its Gaspari–Cohn weight and by its channel weight
(R-localisation, Hunt et al. 2007 §2.3; Greybush et al. 2011; methods/common/localisation.py).
In the normalised state, with x̄_b, X_b (c_a × N) the background mean and perturbations of
the group's channels at the column and, for the local observations i (p_j of them),
ȳ_b = mean_n H(x_b⁽ⁿ⁾), Y_b = H(x_b⁽ⁿ⁾) − ȳ_b (p_j × N), R_j⁻¹ = diag(GC(r_ij / c) V[a, ch_i]
/ σ_i²) (Hunt's step numbers):

    (4) C_j  = Y_bᵀ R_j⁻¹                                         N × p_j
    (5) P̃_a = [(N − 1) I / ρ + C_j Y_b]⁻¹                         N × N, float64
    (6) W_a  = [(N − 1) P̃_a]^{1/2}                                 symmetric square root
    (7) w̄_a = P̃_a C_j (y − ȳ_b)
    (8) x_a⁽ⁿ⁾ = x̄_b + X_b (w̄_a + W_a)⁽ⁿ⁾                         the group's channels

P̃_a and W_a come from one eigendecomposition A = Q Λ Qᵀ of A = (N − 1) I / ρ + C_j Y_b:
P̃_a = Q Λ⁻¹ Qᵀ, W_a = Q ((N − 1) Λ⁻¹)^{1/2} Qᵀ (torch.linalg.eigh, batched over columns) —
or, for a local analysis with fewer than N observations (p_j < LOW_RANK · N), the same
analysis from the p_j × p_j eigendecomposition of R_j^{-1/2} Y_b Y_bᵀ R_j^{-1/2}
(``_local_analysis``; ~N³ → ~p_j³ + N² p_j per analysis). ρ is
multiplicative covariance inflation: identical to multiplying X_b (and Y_b) by √ρ before an
un-inflated analysis (Hunt et al. 2007 §2.3). Then the analysis perturbations X_a = X_b W_a are
relaxed towards the prior ones X_b (un-inflated, as the method received them):

    RTPP (Zhang et al. 2004):          X_a ← (1 − α) X_a + α X_b
    RTPS (Whitaker & Hamill 2012):     X_a ← X_a (1 + α (σ_b − σ_a) / σ_a)   per grid value,
                                       σ the members' standard deviation (σ_a = 0: unchanged)

Channel localisation (``channel_localisation``; V of localisation.channel_weights):
    "own"       channel a only from observations of channel a (V = I): one local analysis per
                (column, channel) — the default
    "variable"  from observations of the same variable at every level, weighted by
                GC(|ln p_a − ln p_b| / c_v), 2c_v = ``vertical_localisation`` (SPEEDY-LETKF's
                vertical localisation in log-pressure, Miyoshi 2005; "variable localization",
                Kang et al. 2011); surface fields only from themselves
    "all"       multivariate: every observation updates every channel of the column (V = 1,
                Hunt et al. 2007 as written; one local analysis per column)
A (column, channel group) with no observation of weight > 0 within the cut-off keeps its
background members (no analysis, no inflation).

Why "own": with σ_o ≪ the spread, w̄_a is nearly the least-squares fit of the local innovations
in the 19-dimensional ensemble space; with "all", a column at 5 % "columns" density has ~250
observations (69 channels of ~3.6 columns) against 19 coefficients, and the sampled
cross-channel covariances (q from z, u from t, …) of 20 members are mostly noise: increments
larger than the background error. The one-analysis check (python -m bench check, validation
period, 8 starts, members = the case's background + the run's 20 centred NMC perturbations —
see the note below), analysis / background RMSE averaged over the 69 channels, density 1 % / 5 %
"columns", σ_o = 0.01 std (3DVar: 0.971 / 0.848):

    localisation_km           500            1000           1500           2000
    "all"                 0.996 / 0.974  1.016 / 1.038       —          1.125 / 1.187
    "own"                 0.992 / 0.958  0.987 / 0.923  0.986 / 0.920  0.989 / 0.933
    "variable" 2c_v = 1.5 0.993 / 0.958  0.993 / 0.950       —          1.027 / 1.094
    "variable" 2c_v = 1.0      —         0.990 / 0.939       —          1.012 / 1.042
    "variable" 2c_v = 0.5      —         0.988 / 0.928       —          0.998 / 0.976

(500 km is below the grid spacing: only the observed columns move.) "own" is best at every
cut-off and density; "variable" approaches it as 2c_v shrinks (to "own" at 2c_v → 0); "all"
adds error beyond 500 km. A σ_o floor of 0.1 (``min_obs_error``) rescues "all" (1000 km:
0.992 / 0.951) but costs "own" (0.991 / 0.946). Observations of whole columns are the case
least favourable to vertical localisation (every level is observed where any is); with
observations at a few levels (stations, "elements") "variable" may do better. Note: the check
as committed (bench/experiments/check.py) centres the members on the case's history, which
ends in the truth 48 h before x_b, not on x_b: its LETKF ratios (~2; "own" at 2000 km:
1.988 / 1.856) measure that offset (the members' mean is 1.92× as far from the truth as x_b)
— the numbers above centre them on x_b.

R-localisation tapers the increment of an observation as a regression on an observation of
error σ_o² / GC: with σ_o ≪ the ensemble spread it stays near full size until GC is small, then
drops towards the cut-off (B-localisation would taper it by GC itself).

Vectorisation: C_j Y_b = Σ_i GC_ij v_i z_i z_iᵀ and C_j (y − ȳ_b) = Σ_i GC_ij v_i z_i e_i
(z_i = Y_b,i / σ_i, N-vectors; e_i = (y_i − ȳ_b,i) / σ_i; v_i = V[a, ch_i]) are grouped by
observation location: co-located observations share a weight, so each location's Σ v z zᵀ and
Σ v z e are summed once and each column's are a sparse (columns × locations) GC product with
them (neighbours.add_weighted) — with "all" and "columns" sampling C times fewer products than
pairs of (column, observation). A local analysis with fewer than LOW_RANK · N observations
gathers its rows √(GC_ij v_i) z_i instead (zero-padded to the largest count of its batch,
batches binned by ⌈log₂ count⌉). The channel groups (the distinct rows of V: 1 for "all", C
for "own" and "variable") are a Python loop inside each column batch; every other step is
batched over the (column, group) analyses. The locations' SphereTree is built per analysis (the
observations change every cycle; ``load`` keeps only the grid columns' coordinates). Columns go
in batches of at most BATCH_BYTES // column_bytes columns, cut further so a batch's candidate
pairs stay within neighbours.MAX_PAIRS. Cost: one eigendecomposition per (column, group) with
observations — with "own" up to C times as many as with "all", but of p_j × p_j matrices
(p_j ≈ 1–8 at 1–5 % density) instead of N × N.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import (
    Analyser,
    Analysis,
    Assimilator,
    Background,
    Kernel,
    MemoryEstimate,
    Observations,
)
from methods.common import neighbours
from methods.common.localisation import (
    CHANNEL_LOCALISATIONS,
    channel_weights,
    grid_columns,
    localised_pairs,
)
from methods.common.neighbours import Pairs, SphereTree, add_weighted

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


@dataclasses.dataclass(frozen=True)
class LETKF(Assimilator):
    """The local ensemble transform Kalman filter (module docstring), deterministic.

    Attributes:
        members: N, the ensemble size (the harness hands over ``Background.members`` of N
            members). 20: ensemble DA with ML forecast models (ClimaX-LETKF: Kotsuki et al.
            2025; Takeshima et al. 2025) and global LETKFs on grids like the built-in 32 × 64
            (SPEEDY-LETKF) run tens of members with localisation; 20 is the low end of that,
            chosen for cost: the forecasts cost N model steps per cycle (FengWu's graph runs
            one member at a time), the analysis ~N³ per column (the eigendecomposition) plus
            N² per local observation, and the initial ensemble needs N training-period NMC
            samples. Validate by cycling.
        localisation_km: the localisation cut-off 2c in km: the distance where the Gaspari–Cohn
            weight reaches 0 (half-width c = localisation_km / 2, weight 5/24 at c; a Gaussian
            σ ≈ 0.27 · localisation_km). ``math.inf`` turns localisation off (every observation
            weight 1: the global ETKF). 2000 km ≈ SPEEDY-LETKF's Gaussian σ = 500 km
            (cut-off 2√(10/3)·500 ≈ 1826 km) on a grid of similar spacing (T30 vs our T31).
            With "own", the one-analysis check hardly separates 1000, 1500 and 2000 km (0.923,
            0.920, 0.933 at 5 %; module docstring): kept at the literature value until cycling
            decides.
        inflation: ρ ≥ 1 multiplies the background covariance in each local analysis (the
            background perturbations by √ρ); 1 = none.
        rtpp: α of relaxation to prior perturbations, in [0, 1]. ClimaX-LETKF cycled more
            stably with RTPP than with RTPS (Takeshima et al. 2025: ML models restore the
            ensemble's spread less than NWP models do); 0.5, the value Zhang et al. (2004)
            introduced it with, as a starting point.
        rtps: α of relaxation to prior spread, in [0, 1]; only one of rtpp and rtps may be > 0.
        min_obs_error: floor on σ_o (normalised units): σ_o = 0 (the noise-free protocol) would
            make R⁻¹ infinite; 1e-3 of a climatological std is far below any ensemble spread.
        channel_localisation: which observations analyse a channel (module docstring): "own"
            (the default: best in the one-analysis check at every cut-off and density, the
            table in the module docstring), "variable" or "all" (multivariate).
        vertical_localisation: "variable" only: the vertical cut-off 2c_v in ln p where the
            GC weight between two levels of a variable reaches 0 (like ``localisation_km``, a
            cut-off; ``math.inf``: every level at weight 1). 1.5 ≈ the Gaussian σ_v = 0.4 ln p
            of Miyoshi's SPEEDY- and GFS-LETKF (cut-off 2√(10/3)·0.4 ≈ 1.46): 700 hPa then takes
            observations of 850 hPa at weight 0.90, of 500 hPa at 0.74, none above 156 hPa. On the
            check, smaller was better (0.5 best of 0.5, 1.0, 1.5, all worse than "own"), for
            whole-column observations only; kept at the literature value for the sparser
            vertical sampling "variable" is meant for.
    """

    members: int = 20
    localisation_km: float = 2000.0
    inflation: float = 1.0
    rtpp: float = 0.5
    rtps: float = 0.0
    min_obs_error: float = 1e-3
    channel_localisation: str = "own"
    vertical_localisation: float = 1.5

    def __post_init__(self):
        self.check_fields((
            ("members", isinstance(self.members, int) and self.members >= 2, "an integer ≥ 2"),
            ("localisation_km", self.localisation_km > 0, "a distance > 0 in km (inf: none)"),
            ("inflation", math.isfinite(self.inflation) and self.inflation >= 1, "≥ 1"),
            ("rtpp", 0 <= self.rtpp <= 1, "in [0, 1]"),
            ("rtps", 0 <= self.rtps <= 1, "in [0, 1]"),
            ("min_obs_error", self.min_obs_error > 0, "> 0"),
            ("channel_localisation", self.channel_localisation in CHANNEL_LOCALISATIONS,
             f"one of {CHANNEL_LOCALISATIONS}"),
            ("vertical_localisation", self.vertical_localisation > 0,
             "a cut-off > 0 in ln p (inf: none)"),
        ))
        if self.rtpp > 0 and self.rtps > 0:
            raise ValueError(f"LETKF.rtpp = {self.rtpp} and LETKF.rtps = {self.rtps}: relax to "
                             "the prior perturbations (rtpp) or to the prior spread (rtps), not "
                             "both; set one of them to 0")

    @classmethod
    def for_tests(cls) -> LETKF:
        """A small ensemble for the method contract."""
        return cls(members=8)

    def load(self, state: dict, spec: StateSpec, device: torch.device | str) -> LETKFAnalyser:
        """The analyser on ``spec``'s grid (nothing is learnt: ``state`` is empty)."""
        return LETKFAnalyser(self, spec, device)

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the grid's coordinates (16 B per column). Analysis: the analysed members
        (N float32 states) + the observation-space ensemble (~(3N + 4) float64 per
        observation) + one batch of columns (min(G, BATCH_BYTES // column_bytes) columns ×
        column_bytes; a batch of factors u, f of one channel group is at most as large as its
        sums) + one batch of location sums (≤ BATCH_BYTES) + one chunk of neighbour pairs (G ×
        the expected observations within the cut-off, at most MAX_PAIRS, × PAIR_BYTES), the
        observations' SphereTree, and one channel group's order, weights and gather indices
        of the observations (~32 B per observation)."""
        c, h, w = spec.shape
        n, g = members or self.members, h * w
        per_column = column_bytes(n, c)
        batch = min(g, max(1, BATCH_BYTES // per_column)) * per_column
        cap = 1.0 if math.isinf(self.localisation_km) else \
            0.5 * (1 - math.cos(min(math.pi, self.localisation_km / neighbours.EARTH_RADIUS_KM)))
        pairs = min(neighbours.MAX_PAIRS, g * (1 + n_obs * cap)) * neighbours.PAIR_BYTES
        obs_bytes = n_obs * (8.0 * (3 * n + 8) + neighbours.TREE_BYTES_PER_POINT)
        sums = min(BATCH_BYTES, 16.0 * n_obs * (n * n + n + 1))
        return MemoryEstimate(16.0 * g, 4.0 * n * c * g + obs_bytes + batch + sums + pairs)


class LETKFAnalyser(Analyser):
    """LETKF on one grid: the method's settings and the grid columns' coordinates.

    Attributes:
        method: the LETKF (hyper-parameters).
        shape: (H, W) of the grid.
        lat, lon: (G,) degrees of the grid columns, flattened lat-major (as ``flat_index``).
        device: where the analysis runs.
    """

    def __init__(self, method: LETKF, spec: StateSpec, device: torch.device | str):
        self.method, self.device = method, torch.device(device)
        self.shape = (len(spec.lat), len(spec.lon))
        self.lat, self.lon = grid_columns(spec.lat, spec.lon)
        self.channel_weights = channel_weights(
            [ch.variable for ch in spec.channels], [ch.level for ch in spec.channels],
            method.channel_localisation, method.vertical_localisation)

    # ----------------------------------------------------------------------------- analysis
    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """The analysed members and their mean.

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
            normalised), ``inflation`` (ρ of the local analyses) and ``relaxation`` (analysis
            spread after / before RTPP or RTPS, √ of the ratio of summed variances over the
            analysed grid values; 1 without relaxation).
        """
        m, out_device = self.method, background.x_b.device
        xs = self._members(background)
        n, c, h, w = xs.shape
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
            "spread_analysis": _rms_spread(out), "inflation": float(m.inflation),
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
