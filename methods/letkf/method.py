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

Additive inflation (``additive_inflation`` α > 0; methods/letkf/additive.py): the emulator was
trained on another model's nature run, so most of its 6-hour background error is model error
that an ensemble of the same deterministic emulator cannot represent (background spread / RMSE
0.14–0.47 without). As Mitchell & Houtekamer (2000), Whitaker et al. (2008) and Houtekamer et
al. (2009), each member gets α (ε_{j_n} − mean_m ε_{j_m}) before the local analyses, ε_j N
distinct training-period truth − 6 h forecast samples drawn per (seed, cycle): the mean is
unchanged, the prior covariance gains α² × the draw's; the local analyses, ρ, RTPP and RTPS
then take the inflated members as the prior. Cycling, validation period, 15 days, density 1 % |
5 % "columns", σ_o = 0.01 std, channel-mean normalised RMSE after the 8 spin-up cycles of the
analysis and the background, and the background members' spread / RMSE (the forecasts', before
the draw); no assimilation 0.785 (last 3 days 0.853), 3DVar 0.542 | 0.302:

    α    also                   1 %: analysis  background  ratio  5 %: analysis  background  ratio
    0    (as before)                     0.772      0.776      0.47       0.684      0.692      0.14
    0.5                                  0.712      0.717      0.60       0.697      0.705      0.24
    1.0                                  0.696      0.702      0.80       0.744      0.748      0.36
    1.5                                  0.695      0.700      1.00       0.794      0.794      0.47
    0.5  rtpp = 0                        0.753      0.758      0.52       0.679      0.693      0.18
    1.0  rtpp = 0                        0.741      0.747      0.69       0.763      0.769      0.27
    1.0  localisation_km = 1000          0.610      0.620      0.97       0.464      0.481      0.75
    0    min_obs_error = 0.1             0.608      0.618      0.67       0.420      0.444      0.47
    0.5  min_obs_error = 0.1             0.609      0.620      0.76       0.423      0.447      0.58
    1.0  min_obs_error = 0.1             0.609      0.619      0.96       0.430      0.452      0.79
    1.5  min_obs_error = 0.1             0.609      0.619      1.19       0.442      0.462      0.99
    1.0  min_obs_error = 0.3             0.579      0.589      1.07       0.401      0.426      1.05
    1.0  0.1 and 1000 km                 0.588      0.597      1.06       0.421      0.443      0.99
    1.0  min_obs_error = 0.5             0.577      0.585      1.11       0.413      0.436      1.15
    1.0  min_obs_error = 1.0             0.587      0.593      1.14       0.458      0.477      1.22

With the σ_o floor at 1e-3 no α works at both densities: the analysis error grows through the 15
days in every row (5 %, last 3 days: 0.91 at α = 0, 1.04 at α = 1, above no assimilation), the
near-perfect observations being fitted through 20-member sampled covariances; the spread α adds
helps 1 % and adds sampled-noise increments at 5 %. With a floor of 0.1 (or 1000 km) the filter
holds and α sets the spread at little cost in RMSE. Default α = 1.0: spread / RMSE 0.96 / 0.79
with the 0.1 floor, 1.07 / 1.05 with 0.3, where α = 0 stays under-dispersed and 1.5 starts to
cost at 5 %; with the default floor it trades 1 % (0.772 → 0.696) for 5 % (0.684 → 0.744) —
the floor, not α, decides whether the LETKF beats no assimilation. RTPP stays 0.5 (0 was worse
at 1 % for α = 0.5 and 1, and at 5 % for α = 1).

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

import torch

from bench.state import StateSpec
from methods.base import Assimilator, MemoryEstimate, TrainingContext
from methods.common import neighbours
from methods.common.localisation import CHANNEL_LOCALISATIONS
from methods.letkf import additive, analysis
from methods.letkf.analysis import LETKFAnalyser


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
            introduced it with, as a starting point; kept with additive inflation (0 was worse:
            the validation table in the module docstring).
        rtps: α of relaxation to prior spread, in [0, 1]; only one of rtpp and rtps may be > 0.
        min_obs_error: floor on σ_o (normalised units; σ_o = 0, the noise-free protocol, would
            make R⁻¹ infinite). 0.3 (a third of a channel's std), chosen on the validation
            period (the additive inflation table, module docstring: 1e-3 / 0.1 / 0.3 / 0.5 / 1.0
            give 0.696 / 0.609 / 0.579 / 0.577 / 0.587 at 1 % and 0.744 / 0.430 / 0.401 / 0.413
            / 0.458 at 5 %, α = 1). The observations' own error is 0.01 std: the floor inflates
            R for the ensemble's sake — with 20 members the sampled covariances cannot carry
            near-perfect observations (the same remedy as VAE-Var's λ; observations are still
            weighted by the larger of the floor and their own σ_o).
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
        additive_inflation: α ≥ 0 of additive inflation from the model's own 6-hour errors
            (module docstring; methods/letkf/additive.py): each analysis adds α (ε_j − mean ε_j)
            of N distinct training-period truth − 6 h forecast samples to the members before
            the local analyses; 0 = none (fit learns nothing). 1.0: the spread / RMSE of the
            cycled background near 1 where the filter holds (a σ_o floor ≥ 0.1: 0.96 / 0.79 at
            1 % / 5 %); with the default floor it helps 1 % and hurts 5 % (the validation table
            in the module docstring).
        additive_pool: the most truth − 6 h forecast samples fit keeps (evenly spaced over the
            training period, float16: 36.2 MB at 128 × 69 × 32 × 64); ≥ members (drawn without
            replacement). 128 of the 365 daily samples: enough distinct draws of 20 that two
            cycles rarely share many (mean overlap 20²/128 ≈ 3 members).
        additive_stride: frames between the samples' starts (4: one a day, 365 in the training
            year).
    """

    members: int = 20
    localisation_km: float = 2000.0
    inflation: float = 1.0
    rtpp: float = 0.5
    rtps: float = 0.0
    min_obs_error: float = 0.3
    channel_localisation: str = "own"
    vertical_localisation: float = 1.5
    additive_inflation: float = 1.0
    additive_pool: int = 128
    additive_stride: int = 4

    #: fit() learns only the additive pool: none of these change it (cache_config)
    analysis_fields = ("seed", "members", "localisation_km", "inflation", "rtpp", "rtps",
                       "min_obs_error", "channel_localisation", "vertical_localisation")
    #: ``python -m bench tune``'s grid: the localisation cut-off (denser networks afford a
    #: shorter one) and the relaxation to prior perturbations.
    tuning_grid = {"localisation_km": (1000.0, 1500.0, 2000.0, 3000.0), "rtpp": (0.5, 0.8)}

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
            ("additive_inflation", math.isfinite(self.additive_inflation) and
             self.additive_inflation >= 0, "≥ 0 (0: none)"),
            ("additive_pool", isinstance(self.additive_pool, int) and (
                self.additive_pool >= self.members or self.additive_inflation == 0),
             "an integer ≥ members (drawn without replacement)"),
            ("additive_stride", isinstance(self.additive_stride, int) and
             self.additive_stride >= 1, "an integer ≥ 1 (frames between sample starts)"),
        ))
        if self.rtpp > 0 and self.rtps > 0:
            raise ValueError(f"LETKF.rtpp = {self.rtpp} and LETKF.rtps = {self.rtps}: relax to "
                             "the prior perturbations (rtpp) or to the prior spread (rtps), not "
                             "both; set one of them to 0")

    @classmethod
    def for_tests(cls) -> LETKF:
        """A small ensemble for the method contract (additive inflation on, a small pool)."""
        return cls(members=8, additive_inflation=1.0, additive_pool=12)

    def cache_config(self) -> dict:
        """What fit() depends on: the pool's size and stride, and whether α > 0 (the pool is
        the same for every α > 0; none is fitted at α = 0)."""
        return {**super().cache_config(), "additive_inflation": self.additive_inflation > 0}

    def fit(self, ctx: TrainingContext) -> dict:
        """The pool of at most ``additive_pool`` truth − 6 h forecast samples of the training
        period (additive.fit_pool); {} when ``additive_inflation`` = 0."""
        if self.additive_inflation == 0:
            return {}
        return additive.fit_pool(ctx, self.additive_pool, self.additive_stride)

    def untrained(self, spec: StateSpec, seed: int = 0) -> dict:
        """A random pool of ``additive_pool`` samples (additive.random_pool); {} at α = 0."""
        if self.additive_inflation == 0:
            return {}
        return additive.random_pool(spec, self.additive_pool, seed)

    def load(self, state: dict, spec: StateSpec, device: torch.device | str) -> LETKFAnalyser:
        """The analyser on ``spec``'s grid with ``state``'s additive pool (unused at α = 0)."""
        return LETKFAnalyser(self, spec, device, state)

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the grid's coordinates (16 B per column). Analysis: the analysed members
        (N float32 states) + the observation-space ensemble (~(3N + 4) float64 per
        observation) + one batch of columns (min(G, BATCH_BYTES // column_bytes) columns ×
        column_bytes; a batch of factors u, f of one channel group is at most as large as its
        sums) + one batch of location sums (≤ BATCH_BYTES) + one chunk of neighbour pairs (G ×
        the expected observations within the cut-off, at most MAX_PAIRS, × PAIR_BYTES), the
        observations' SphereTree, and one channel group's order, weights and gather indices
        of the observations (~32 B per observation). With additive inflation, the pool in the
        model (2 B per value) and a draw and the inflated members (N float32 states each) in the
        analysis."""
        c, h, w = spec.shape
        n, g = members or self.members, h * w
        per_column = analysis.column_bytes(n, c)
        batch = min(g, max(1, analysis.BATCH_BYTES // per_column)) * per_column
        cap = 1.0 if math.isinf(self.localisation_km) else \
            0.5 * (1 - math.cos(min(math.pi, self.localisation_km / neighbours.EARTH_RADIUS_KM)))
        pairs = min(neighbours.MAX_PAIRS, g * (1 + n_obs * cap)) * neighbours.PAIR_BYTES
        obs_bytes = n_obs * (8.0 * (3 * n + 8) + neighbours.TREE_BYTES_PER_POINT)
        sums = min(analysis.BATCH_BYTES, 16.0 * n_obs * (n * n + n + 1))
        on = self.additive_inflation > 0  # the pool (float16), a draw and the inflated members
        pool, draw = (2.0 * self.additive_pool * c * g, 8.0 * n * c * g) if on else (0.0, 0.0)
        return MemoryEstimate(16.0 * g + pool, 4.0 * n * c * g + draw + obs_bytes + batch + sums
                              + pairs)
