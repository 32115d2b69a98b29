"""How sure is a mean over cycles? 95 % intervals for the mean of an autocorrelated score.

Consecutive cycles share their background, so a per-cycle score (or the per-cycle difference
of two methods' scores) is autocorrelated: an interval that treats its n cycles as independent
is too narrow. Three intervals that allow for it, each for a series of shape (seeds, cycles),
where each seed's run is an independent realisation (seeds pooled: one mean over every value, the
dependence counted within each seed's series only, never across seeds):

- ``ar1``: the t interval with an AR(1) effective sample size,

      n_eff = n (1 − φ) / (1 + φ),   mean ± t_{0.975, n_eff − 1} · s / √n_eff,

  φ the lag-1 autocorrelation of the series (pooled over seeds, corrected for its known
  small-sample bias E φ̂ ≈ φ − (1 + 3φ)/m, clipped to [0, 0.99]) and s its sample standard
  deviation. This is the correction DAPPER applies to its time-averaged RMSE
  (``dapper/tools/series.py``, ``series_mean_with_conf``: an AR(1) fit to the ACF inflates the
  variance of the mean by (1 + φ)/(1 − φ) for long series), the AR(1) case of the AR(2)
  inflation of Geer (2016, Tellus A 68, 30229) that WeatherBench-X's ``GeerAR2Corrected`` t
  test applies (``weatherbenchX/statistical_inference/t_test.py``), and the effective sample
  size of Zwiers & von Storch (1995, J. Climate 8, 336) and Wilks (2011, §5.2.4). Unlike
  WeatherBench-X we also shrink the degrees of freedom to n_eff − 1 (its docstring warns that
  the AR(2) test is over-optimistic for short, strongly correlated series).
- ``bootstrap``: a moving-block bootstrap (Künsch 1989): each seed's series is cut into
  overlapping blocks of length b, ⌈n_s / b⌉ blocks are drawn with replacement within that seed
  and concatenated (cut to n_s), the resampled values of all seeds averaged; the 2.5 % and
  97.5 % percentiles of ``BOOTSTRAP_RESAMPLES`` such means are the interval. b is Politis &
  White's (2004, Econometric Rev. 23, 53; corrected by Patton, Politis & White 2009) optimal
  block length for the moving/circular block bootstrap evaluated for an AR(1) with the same φ,
  b = (6 φ² / (1 − φ²)²)^{1/3} n_s^{1/3}, at least 1. The generator is seeded
  (``BOOTSTRAP_SEED``), so the interval is a deterministic function of the series.
- ``seeds``: the between-seed interval, for runs of S ≥ 2 seeds: each seed's run (its own
  observation draws and stochastic-method seed) is one replicate; with m_s the mean of seed s's
  series, mean ± t_{0.975, S − 1} · s_S / √S, s_S the sample standard deviation of the S seed
  means (for a paired difference: the paired t test across seeds). It makes no assumption about
  the dependence between cycles inside a run, so it holds when the per-cycle difference drifts
  over the run (where the AR(1) model of a stationary series does not fit). Caveat: the seeds
  of a run share the truth trajectory and the first background (the protocol's identical
  cycles, README "Running benchmarks"), so it covers the observation-sampling (and
  stochastic-method) variability of the comparison on this weather, not its variability over
  different weather; longer runs or more test windows would address that. A method that uses
  no observations (``none``) has the same run for every seed and a zero-width interval.

Default (``DEFAULT_INTERVAL`` = "auto", ``default_kind``): ``seeds`` for runs of ≥ 3 seeds
(``SEEDS_FOR_DEFAULT``; with 2, t_{0.975, 1} = 12.7 makes it useless), else ``ar1``. The tables
always show the AR(1) interval too, and name the one that decided. On synthetic runs of 5 seeds
× 52 cycles whose per-cycle difference is 0.3 + a linear drift shared by the seeds (0 → 0.2) +
a per-seed random slope + an AR(1) with φ = 0.95 (tests/test_statistics.py, which checks two
generator seeds; measured with five, 400 runs each) the between-seed interval covers the true
mean in 94–96 % of runs and excludes 0 in 99.75–100 %; the AR(1) interval, about 13× wider
(φ̂ ≈ 1, n_eff ≈ 1), covers it in 99.5–100 % but excludes 0 in only 7–8 %; the block bootstrap
covers 41–49 %, the iid 25–33 %.

For the ``ar1`` interval of a stationary series: on synthetic paired runs whose difference is
AR(1) with φ = 0.8 over 2 seeds × 52 cycles (tests/test_statistics.py; 200 runs, four generator
seeds) its 95 % interval covers the true difference in 96–97.5 % of runs (93–95 % for one seed
of 52–200 cycles, 3000 runs), the block bootstrap in only 65–71 % and the naive iid interval in
43–53 %. The block bootstrap's variance of the mean is biased low when b is not small against
the series (the known weakness of block resampling of short series; Lahiri 2003, ch. 3). The
AR(1) interval is also a closed form (no resampling) and what the DA literature reports
(DAPPER). The bootstrap stays as a check that assumes no AR(1) model.

When φ approaches 1 (a difference that drifts over the run instead of fluctuating about a
mean, e.g. a free run whose error still grows after the spin-up) n_eff falls below 2 and the
AR(1) interval becomes very wide: correctly so for what one run's cycles can show, since such a
run holds about one independent sample; bench/report/paired.py then says so in the table notes,
and with ≥ 3 seeds the between-seed interval decides instead.

A constant series (e.g. the difference of a method with itself) has φ := 0 and a zero-width
interval at its value. Values must be finite: callers drop diverged cells before.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

#: The interval that decides in every table: "auto" is ``default_kind`` of the run's seeds.
DEFAULT_INTERVAL = "auto"
#: From this many seeds on the between-seed interval is the default (2: t_{0.975, 1} = 12.7).
SEEDS_FOR_DEFAULT = 3
#: Coverage of the intervals.
LEVEL = 0.95
#: The largest φ used for n_eff (φ → 1 would give n_eff → 0).
PHI_MAX = 0.99
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its interval: ``low <= mean <= high`` (usually), over ``n`` values of which
    ``n_eff`` are effectively independent (the bootstrap's: s² over the variance of its resampled
    means; the between-seed interval's: the number of seeds); ``phi`` the lag-1 autocorrelation
    (bias-corrected, as ``ar1_phi``); ``kind`` "ar1", "seeds", "bootstrap" or "iid"; ``block``
    the bootstrap's block length (0 otherwise)."""

    mean: float
    low: float
    high: float
    phi: float
    n: int
    n_eff: float
    kind: str
    block: int = 0

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def as_series(values) -> np.ndarray:
    """``values`` as a float array (seeds, cycles): a 1-D series is one seed."""
    # a C-contiguous copy: sums then do not depend on how the caller's array lies in memory
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"expected a series of shape (cycles,) or (seeds, cycles), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the series has NaN or infinite values; drop diverged cells first")
    return x


def lag1_autocorrelation(values) -> float:
    """φ: the lag-1 autocorrelation of a (seeds, cycles) series about its pooled mean, from the
    lagged pairs within each seed (mean lagged product over the variance, as WeatherBench-X
    estimates it); 0 for a constant series or one of a single cycle per seed."""
    x = as_series(values)
    d = x - x.mean()
    variance = float((d**2).mean())
    pairs = x.shape[0] * (x.shape[1] - 1)
    if variance == 0.0 or pairs == 0:
        return 0.0
    return float((d[:, 1:] * d[:, :-1]).sum() / pairs / variance)


def ar1_phi(values) -> float:
    """φ for the AR(1) correction: ``lag1_autocorrelation`` with the first-order correction of its
    bias, E φ̂ ≈ φ − (1 + 3φ)/m for series of m cycles with an estimated mean (Marriott & Pope
    1954; Kendall 1954), in [−1, 1]; 0 for a constant series."""
    x = as_series(values)
    phi = lag1_autocorrelation(x)
    if float(x.std()) == 0.0 or x.shape[1] < 2:
        return 0.0
    return float(min(max(phi + (1.0 + 3.0 * phi) / x.shape[1], -1.0), 1.0))


def effective_sample_size(n: int, phi: float) -> float:
    """n (1 − φ)/(1 + φ) with φ clipped to [0, ``PHI_MAX``] (anti-correlation is not credited)."""
    p = min(max(phi, 0.0), PHI_MAX)
    return n * (1.0 - p) / (1.0 + p)


def _t_interval(x: np.ndarray, n_eff: float, phi: float, kind: str, level: float) -> Interval:
    mean, n = float(x.mean()), x.size
    s = float(x.std(ddof=1)) if n > 1 else 0.0
    if s == 0.0:
        return Interval(mean, mean, mean, phi, n, n_eff, kind)
    if n < 2:
        return Interval(mean, -math.inf, math.inf, phi, n, n_eff, kind)
    half = float(stats.t.ppf(0.5 + level / 2, max(n_eff - 1.0, 1.0))) * s / math.sqrt(n_eff)
    return Interval(mean, mean - half, mean + half, phi, n, n_eff, kind)


def ar1_interval(values, level: float = LEVEL) -> Interval:
    """The AR(1)-corrected t interval of the mean (module docstring)."""
    x = as_series(values)
    phi = ar1_phi(x)
    return _t_interval(x, effective_sample_size(x.size, phi), phi, "ar1", level)


def iid_interval(values, level: float = LEVEL) -> Interval:
    """The naive t interval that treats every value as independent (for contrast only)."""
    x = as_series(values)
    return _t_interval(x, float(x.size), ar1_phi(x), "iid", level)


def block_length(n: int, phi: float) -> int:
    """Politis–White's optimal moving-block length for an AR(1) with lag-1 correlation φ:
    (6 φ² / (1 − φ²)²)^{1/3} n^{1/3}, rounded, in [1, n // 2] (1 for φ <= 0) so that a series
    always has more than one block to draw."""
    p = min(max(phi, 0.0), PHI_MAX)
    if p == 0.0:
        return 1
    b = (6.0 * p**2 / (1.0 - p**2) ** 2) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return int(min(max(round(b), 1), max(n // 2, 1)))


def block_bootstrap_interval(values, level: float = LEVEL,
                             resamples: int = BOOTSTRAP_RESAMPLES,
                             seed: int = BOOTSTRAP_SEED) -> Interval:
    """The moving-block bootstrap percentile interval of the mean (module docstring)."""
    x = as_series(values)
    phi = ar1_phi(x)
    seeds, n = x.shape
    b = block_length(n, phi)
    mean = float(x.mean())
    if float(x.std()) == 0.0:
        return Interval(mean, mean, mean, phi, x.size, float(x.size), "bootstrap", b)
    rng = np.random.default_rng(seed)
    blocks = -(-n // b)
    starts = rng.integers(0, n - b + 1, size=(resamples, seeds, blocks))
    index = (starts[..., None] + np.arange(b)).reshape(resamples, seeds, blocks * b)[..., :n]
    means = np.take_along_axis(np.broadcast_to(x, (resamples, seeds, n)), index,
                               axis=2).mean(axis=(1, 2))
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    # the sample size the bootstrap's variance of the mean implies: s² / var(mean)
    spread = float(means.var(ddof=1))
    n_eff = float(x.var(ddof=1)) / spread if spread > 0 else math.nan
    return Interval(mean, float(low), float(high), phi, x.size, n_eff, "bootstrap", b)


def seed_interval(values, level: float = LEVEL) -> Interval:
    """The between-seed t interval of the mean (module docstring): mean ± t_{0.975, S−1} s_S/√S
    over the S seed means; zero width when the seed means agree, infinite for one seed."""
    x = as_series(values)
    seeds, mean, phi, means = x.shape[0], float(x.mean()), ar1_phi(x), x.mean(axis=1)
    # equal seed means (a constant series, a run the seed does not change) give zero width:
    # tested as such, since the std of equal values can round to 1e-17
    if means.min() == means.max() and (seeds > 1 or float(x.std()) == 0.0):
        return Interval(mean, mean, mean, phi, x.size, float(seeds), "seeds")
    if seeds < 2:
        return Interval(mean, -math.inf, math.inf, phi, x.size, 1.0, "seeds")
    s = float(means.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, seeds - 1)) * s / math.sqrt(seeds)
    return Interval(mean, mean - half, mean + half, phi, x.size, float(seeds), "seeds")


INTERVALS = {"ar1": ar1_interval, "seeds": seed_interval, "bootstrap": block_bootstrap_interval,
             "iid": iid_interval}


def default_kind(seeds: int) -> str:
    """The interval that decides for a run of ``seeds`` seeds: "seeds" from
    ``SEEDS_FOR_DEFAULT`` seeds on, else "ar1"."""
    return "seeds" if seeds >= SEEDS_FOR_DEFAULT else "ar1"


def mean_interval(values, kind: str = DEFAULT_INTERVAL, level: float = LEVEL) -> Interval:
    """The ``kind`` interval ("ar1", "seeds", "bootstrap", "iid", or "auto": ``default_kind`` of
    the number of seeds, the rows of ``values``) of the mean of ``values``."""
    if kind == "auto":
        kind = default_kind(as_series(values).shape[0])
    if kind not in INTERVALS:
        raise ValueError(f"unknown interval {kind!r}; valid: auto, {', '.join(INTERVALS)}")
    return INTERVALS[kind](values, level=level)
