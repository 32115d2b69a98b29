"""Intervals of a mean over autocorrelated cycles (bench/report/statistics.py) and the RMSE
conventions (bench/report/pooling.py), on synthetic series with known answers."""

import math

import numpy as np
import pytest

from bench.report import pooling, statistics

PHI = 0.8
SEEDS, CYCLES = 2, 52  # like the paper run: 52 cycles after spin-up, here two seeds
TRUE_DIFFERENCE = 0.3
#: Runs whose per-cycle difference drifts: 5 seeds × 52 cycles, AR(1) noise with φ = 0.95.
DRIFT_SEEDS, DRIFT_PHI = 5, 0.95
DRIFT = 0.2 * np.linspace(0.0, 1.0, CYCLES)  # shared by the seeds: the weather's
#: The paper run's (/tmp/hp3, 3 seeds × 52 cycles after spin-up) seed means of the per-cycle
#: channel-mean analysis RMSE difference none − 3dvar, per density: no assimilation is worse
#: in every cycle of every seed, but φ̂ = 0.97–0.99 and the AR(1) interval includes 0.
PAPER_NONE_MINUS_3DVAR = {0.005: (0.1346, 0.1368, 0.1400), 0.01: (0.1975, 0.2436, 0.2386),
                          0.05: (0.4637, 0.4633, 0.4620)}


def ar1(rng: np.random.Generator, phi: float, shape: tuple[int, int]) -> np.ndarray:
    """Stationary AR(1) series with unit innovations, one per row (seed)."""
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=shape[0]) / np.sqrt(1 - phi**2)
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + rng.normal(size=shape[0])
    return x


def paired_runs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two methods' per-cycle RMSE on the same weather: a large shared AR(1) signal (which
    pairing removes), each method's own AR(1) error, method a worse by ``TRUE_DIFFERENCE``."""
    weather = 5.0 + 2.0 * ar1(rng, 0.95, (SEEDS, CYCLES))
    a = weather + TRUE_DIFFERENCE + 0.2 * ar1(rng, PHI, (SEEDS, CYCLES))
    b = weather + 0.2 * ar1(rng, PHI, (SEEDS, CYCLES))
    return a, b


def drifting_difference(rng: np.random.Generator) -> np.ndarray:
    """(seeds, cycles) per-cycle differences that drift over the run: ``TRUE_DIFFERENCE`` +
    ``DRIFT`` (shared) + a per-seed random slope (mean 0) + AR(1) noise with φ = 0.95. The true
    mean of the comparison (its expectation over seeds) is ``TRUE_DIFFERENCE + DRIFT.mean()``."""
    slope = 0.05 * rng.normal(size=(DRIFT_SEEDS, 1))
    return (TRUE_DIFFERENCE + DRIFT + slope * np.linspace(0.0, 1.0, CYCLES)
            + 0.05 * ar1(rng, DRIFT_PHI, (DRIFT_SEEDS, CYCLES)))


def test_the_default_interval_covers_the_known_difference_and_the_iid_one_does_not():
    rng = np.random.default_rng(2024)
    covered = {kind: 0 for kind in statistics.INTERVALS}
    for _ in range(200):
        a, b = paired_runs(rng)
        for kind in covered:
            covered[kind] += statistics.mean_interval(a - b, kind).contains(TRUE_DIFFERENCE)
    coverage = {kind: n / 200 for kind, n in covered.items()}
    # with two seeds the default is the AR(1) interval
    assert statistics.mean_interval(a - b).kind == "ar1"
    assert coverage["ar1"] >= 0.90, coverage
    # the contrast: treating 104 autocorrelated cycles as independent is far too sure
    assert coverage["iid"] <= 0.70, coverage
    # the block bootstrap allows for some of the dependence but under-covers at this length
    # (why it is not the default; measured coverage in the module docstring)
    assert coverage["iid"] < coverage["bootstrap"] < coverage["ar1"], coverage


@pytest.mark.parametrize("generator", [0, 1])
def test_the_between_seed_interval_covers_a_drifting_difference(generator):
    rng = np.random.default_rng(generator)
    truth = TRUE_DIFFERENCE + DRIFT.mean()
    runs = [drifting_difference(rng) for _ in range(400)]
    seeds = [statistics.mean_interval(x) for x in runs]
    ar1 = [statistics.mean_interval(x, "ar1") for x in runs]
    assert {i.kind for i in seeds} == {"seeds"}  # the default from 3 seeds on
    coverage = np.mean([i.contains(truth) for i in seeds])
    assert 0.90 <= coverage <= 0.99, coverage  # measured 94–96 % (module docstring)
    # the AR(1) model of a stationary series does not fit the drift: φ̂ ≈ 1, n_eff ≈ 1, so its
    # interval is about 13× wider and rarely shows the difference the seeds agree on
    assert np.median([i.phi for i in ar1]) > 0.95
    assert np.mean([i.low > 0 for i in seeds]) >= 0.95
    assert np.mean([i.low > 0 for i in ar1]) <= 0.2
    assert np.median([i.half_width for i in ar1]) > 5 * np.median([i.half_width for i in seeds])


def test_the_between_seed_interval_is_the_paired_t_test_over_seed_means():
    rng = np.random.default_rng(5)
    x = drifting_difference(rng)
    means = x.mean(axis=1)
    half = 2.7764451051977987 * means.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    interval = statistics.seed_interval(x)
    assert interval.mean == pytest.approx(means.mean(), rel=1e-12)
    assert interval.half_width == pytest.approx(half, rel=1e-9)
    assert (interval.n, interval.n_eff, interval.kind) == (5 * CYCLES, 5.0, "seeds")
    # two seeds: t_{0.975, 1} = 12.7; one seed: no interval
    two = statistics.seed_interval(x[:2])
    assert two.half_width == pytest.approx(12.706 * x[:2].mean(axis=1).std(ddof=1) / math.sqrt(2),
                                           rel=1e-4)
    one = statistics.seed_interval(x[:1])
    assert (one.low, one.high) == (-math.inf, math.inf)


def test_the_default_is_between_seeds_from_three_seeds_on():
    assert statistics.DEFAULT_INTERVAL == "auto" and statistics.SEEDS_FOR_DEFAULT == 3
    assert [statistics.default_kind(s) for s in (1, 2, 3, 5)] == ["ar1", "ar1", "seeds", "seeds"]
    rng = np.random.default_rng(6)
    for seeds, kind in [(1, "ar1"), (2, "ar1"), (3, "seeds")]:
        assert statistics.mean_interval(rng.normal(size=(seeds, 20))).kind == kind


def test_a_consistent_difference_across_seeds_is_significant():
    # the paper run's none − 3dvar: the seed means (one value per seed) decide
    for density, means in PAPER_NONE_MINUS_3DVAR.items():
        interval = statistics.seed_interval(np.array(means)[:, None])
        assert interval.low > 0, (density, interval)
    # a drifting difference, positive in every cycle of every seed: AR(1) cannot show it
    rng = np.random.default_rng(7)
    x = 0.3 + np.linspace(0.0, 0.4, CYCLES) + 0.01 * ar1(rng, 0.99, (3, CYCLES))
    assert (x > 0).all()
    assert statistics.mean_interval(x).low > 0
    assert statistics.mean_interval(x, "ar1").low < 0


@pytest.mark.parametrize("seeds", [1, 2, 5])
def test_an_identical_pair_has_a_zero_width_interval_at_zero(seeds):
    rng = np.random.default_rng(0)
    a = ar1(rng, 0.9, (seeds, CYCLES))
    for kind in (*statistics.INTERVALS, "auto"):
        interval = statistics.mean_interval(a - a, kind)
        assert (interval.mean, interval.low, interval.high) == (0.0, 0.0, 0.0), kind
        assert interval.phi == 0.0 and interval.contains(0.0)
    # a run that does not depend on the seed (``none``): zero width between seeds
    same = np.repeat(a[:1], 3, axis=0)
    interval = statistics.seed_interval(same)
    assert interval.low == interval.high == interval.mean == pytest.approx(a[0].mean())


def test_effective_sample_size_and_phi():
    assert statistics.effective_sample_size(100, 0.8) == pytest.approx(100 * 0.2 / 1.8)
    assert statistics.effective_sample_size(100, -0.3) == 100  # anti-correlation not credited
    assert statistics.effective_sample_size(100, 1.0) == pytest.approx(100 * 0.01 / 1.99)
    rng = np.random.default_rng(1)
    long = ar1(rng, PHI, (4, 5000))
    assert statistics.lag1_autocorrelation(long) == pytest.approx(PHI, abs=0.02)
    # the small-sample correction moves a short series' estimate up, towards the truth
    short = [ar1(rng, PHI, (1, 40)) for _ in range(400)]
    raw = np.mean([statistics.lag1_autocorrelation(x) for x in short])
    corrected = np.mean([statistics.ar1_phi(x) for x in short])
    assert raw < PHI - 0.05 and abs(corrected - PHI) < abs(raw - PHI)


def test_lagged_pairs_stay_within_each_seed():
    x = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    # d = ±0.5; within seeds: (.25 − .25 + .25) × 2 / 6 pairs / variance .25 = 1/3 (a pair
    # across the seeds' boundary would add +.25 and give 3/7)
    assert statistics.lag1_autocorrelation(x) == pytest.approx(1 / 3)
    one = statistics.ar1_interval(x)
    assert one.n == 8 and one.mean == 0.5


def test_block_length_follows_politis_white_for_an_ar1():
    assert statistics.block_length(100, 0.0) == 1
    assert statistics.block_length(100, -0.5) == 1
    expected = (6 * 0.8**2 / (1 - 0.8**2) ** 2) ** (1 / 3) * 100 ** (1 / 3)  # 14.3
    assert statistics.block_length(100, 0.8) == round(expected)
    assert statistics.block_length(10, 0.99) == 5  # at most half the series


def test_the_bootstrap_is_deterministic_and_seeded():
    rng = np.random.default_rng(3)
    a, b = paired_runs(rng)
    one = statistics.block_bootstrap_interval(a - b)
    assert one == statistics.block_bootstrap_interval(a - b)
    assert one != statistics.block_bootstrap_interval(a - b, seed=1)
    assert one.kind == "bootstrap" and one.block >= 1 and one.low < one.mean < one.high


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="drop diverged cells first"):
        statistics.mean_interval([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="unknown interval 'normal'; valid: auto, ar1, seeds"):
        statistics.mean_interval([1.0, 2.0], "normal")
    with pytest.raises(ValueError, match="unknown RMSE convention"):
        pooling.pool([1.0], "mse")


def test_the_two_rmse_conventions():
    rmse = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    assert pooling.pool(rmse, "mean_rmse") == pytest.approx(2.0)
    assert pooling.pool(rmse, "root_mean_mse") == pytest.approx(np.sqrt((1 + 4 + 9 + 12) / 6))
    assert pooling.pool(rmse, "root_mean_mse") >= pooling.pool(rmse, "mean_rmse")
    constant = np.full((2, 5), 1.5)  # equal when RMSE does not vary between cycles
    assert pooling.pool(constant, "root_mean_mse") == pytest.approx(pooling.pool(constant))
    assert pooling.DEFAULT_CONVENTION == "mean_rmse"
