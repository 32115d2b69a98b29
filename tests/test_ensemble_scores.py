"""Rank histograms, spread/skill and the ensemble table: known answers for reliable and
over-confident synthetic ensembles scored through the real scorer (bench/scorer.py)."""

import numpy as np
import pytest
import torch
from forecast_fixtures import small_spec

from bench.metrics import rank_histogram
from bench.report import ensemble, plots, tables
from bench.scorer import CellScores, merge

SPEC = small_spec(nlat=16, nlon=32)
CYCLES, SPINUP, MEMBERS = 24, 4, 9


def test_rank_histogram_counts_ranks_with_latitude_weights():
    g = torch.Generator().manual_seed(0)
    members = torch.randn(5, 2, 4, 6, generator=g, dtype=torch.float64)
    truth = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    weights = np.array([0.5, 1.5, 1.25, 0.75])
    got = rank_histogram(members, truth, weights).numpy()
    rank = (members.numpy() < truth.numpy()[None]).sum(0)  # (C, H, W)
    expected = np.zeros((2, 6))
    for c in range(2):
        for h in range(4):
            for w in range(6):
                expected[c, rank[c, h, w]] += weights[h] / (4 * 6)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(1), weights.mean())
    # truth above every member: all the area in rank N
    above = rank_histogram(members, members.max(0).values + 1.0, np.ones(4)).numpy()
    np.testing.assert_allclose(above[:, -1], 1.0)


def _cell(members: int, scale: float, seed: int) -> CellScores:
    """Members and truth around a common centre: x_i = c + scale·e_i, truth = c + e_0, e ~
    N(0, 1) independent; reliable when scale = 1."""
    g = torch.Generator().manual_seed(seed)
    scores = CellScores(CYCLES, SPEC, members=members, spinup_cycles=SPINUP)
    weights = SPEC.latitude_weights()
    for k in range(CYCLES):
        centre = torch.randn(SPEC.shape, generator=g, dtype=torch.float64)
        truth = centre + torch.randn(SPEC.shape, generator=g, dtype=torch.float64)
        if members:
            x = centre + scale * torch.randn(members, *SPEC.shape, generator=g,
                                             dtype=torch.float64)
            mean = x.mean(0)
        else:
            x, mean = None, centre
        for phase in ("background", "analysis"):
            scores.score(k, phase, mean, truth, torch.zeros(SPEC.shape), weights, x)
        scores.record(k, n_obs=0, n_points=0)  # no observations: scores of states only
    return scores


@pytest.fixture(scope="module")
def ds():
    times = np.datetime64("2001-01-01", "ns") + np.arange(CYCLES) * np.timedelta64(6, "h")
    spec = {"reliable": (MEMBERS, 1.0), "narrow": (MEMBERS, 0.5), "small": (4, 1.0),
            "deterministic": (0, 1.0)}
    cells = {(name, 0.01, 0): _cell(n, scale, seed).dataset(times)
             for seed, (name, (n, scale)) in enumerate(spec.items())}
    out = merge(cells, list(spec), [0.01], [0], {"spinup_cycles": SPINUP})
    out.attrs["spinup_cycles"] = SPINUP
    return out


def test_reliable_ensemble_has_spread_skill_one_and_expected_outliers(ds):
    numbers = ensemble.ensemble_numbers(ds, SPINUP, channels=("t850", "z500"))
    reliable = numbers[numbers["method"] == "reliable"]
    # 20 cycles × 512 points: the ratio's sampling error is ~1 %
    np.testing.assert_allclose(reliable["background_spread_skill"], 1.0, atol=0.05)
    np.testing.assert_allclose(reliable["background_outliers"], 2 / (MEMBERS + 1), atol=0.03)
    narrow = numbers[numbers["method"] == "narrow"]
    # spread halved: spread/skill = 0.5 √(1 + 1/N) / √(1 + 0.25/N)
    expected = 0.5 * np.sqrt((1 + 1 / MEMBERS) / (1 + 0.25 / MEMBERS))
    np.testing.assert_allclose(narrow["background_spread_skill"], expected, atol=0.05)
    # outside the range of 9 members of half the spread: 0.48 by Monte Carlo (10⁶ draws)
    np.testing.assert_allclose(narrow["background_outliers"], 0.48, atol=0.03)
    assert "deterministic" not in set(numbers["method"])
    small = numbers[numbers["method"] == "small"]
    assert (small["members"] == 4).all() and (small["outliers_expected"] == 2 / 5).all()


def test_rank_histograms_of_different_ensembles_share_the_file(ds):
    assert ds.sizes["rank"] == MEMBERS + 1
    small = ensemble.rank_fractions(ds, "small", 0.01, "background", "t850")
    assert small.shape == (5,) and np.isclose(small.sum(), 1.0)
    np.testing.assert_allclose(small, 0.2, atol=0.03)  # reliable: flat
    assert np.isnan(ds["rank_histogram"].sel({"method": "small"}).values[..., 5:]).all()
    assert np.isnan(ds["rank_histogram"].sel({"method": "deterministic"}).values).all()


def test_ensemble_table_and_figures_are_written(ds, tmp_path):
    written = {p.name for p in tables.write_tables(ds, tmp_path, "cmd", SPINUP)}
    assert {"ensemble.md", "ensemble.tex", "ensemble.csv"} <= written
    text = (tmp_path / "tables" / "ensemble.md").read_text()
    assert "narrow" in text and "deterministic" not in text
    names = plots.figure_names(ds)
    assert "rank_histogram_t850_density0.01.png" in names
    plot, args = names["rank_histogram_t850_density0.01.png"]
    ax = plot(ds, *args)
    assert len(ax.figure.axes) == 2
    # a file written before rank histograms: the table says "—", no figure
    old = ds.drop_vars("rank_histogram")
    assert "rank_histogram_t850_density0.01.png" not in plots.figure_names(old)
    assert np.isnan(ensemble.ensemble_numbers(old, SPINUP)["background_outliers"]).all()
