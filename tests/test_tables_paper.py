"""Paper tables and paired comparisons against numbers computed here with numpy from the
synthetic metrics (tests/metrics_fixture.py), on the current schema and on old files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from metrics_fixture import (
    CHANNELS,
    DIVERGED,
    METHODS,
    SPINUP_CYCLES,
    before_diagnostics,
    make_metrics,
)
from test_tables import is_diverged, pooled

from bench.report import paired, paper, pooling, skill, statistics, tables
from bench.scorer import select_cell

OLD_RUN = (Path(__file__).resolve().parents[1] / "results" / "heldsuarez-paper-1seed-2026-11-28"
           / "metrics.nc")


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_metrics(diagnostics=True)


@pytest.fixture(scope="module")
def four_seeds(ds) -> xr.Dataset:
    """The fixture's two seeds and two more (another generator seed): a run of 4 seeds."""
    more = make_metrics(1, diagnostics=True).assign_coords(seed=[2, 3])
    return xr.concat([ds, more], dim="seed", data_vars="minimal", coords="minimal",
                     compat="override")


def channel_mean(ds, method, density, phase="analysis", scale=None) -> np.ndarray:
    """(seeds, cycles after spin-up) of the mean over channels of rmse / scale, with numpy."""
    i, j = METHODS.index(method), list(ds["density"].values).index(density)
    p = list(ds["phase"].values).index(phase)
    keep = ds["cycle"].values >= SPINUP_CYCLES
    scale = ds["norm_std"].values if scale is None else scale
    return (ds["rmse"].values[i, j][:, keep][:, :, p] / scale).mean(axis=-1)


def test_paper_means_are_the_skill_tables_and_both_conventions_are_there(ds):
    numbers = paper.paper_numbers(ds)
    table = skill.skill_numbers(ds)
    assert list(numbers["column"].unique()) == ["channel_mean", "z500", "t850", "q700"]
    for row in numbers[numbers["column"] != "channel_mean"].itertuples():
        values = pooled(ds, row.method, row.density, row.column, "analysis", SPINUP_CYCLES)
        same = table[(table["method"] == row.method) & (table["density"] == row.density)]
        if is_diverged(row.method, row.density):
            assert row.status == "diverged" and np.isnan(row.mean_rmse)
            assert row.diverged_cycle == DIVERGED["cycle"]
            continue
        # the default convention: the skill table's number, unchanged
        assert row.mean_rmse == same[f"{row.column}_analysis_mean"].item()
        assert row.root_mean_mse == pytest.approx(np.sqrt((values**2).mean()), rel=1e-12)
        assert row.root_mean_mse > row.mean_rmse
        interval = statistics.ar1_interval(values.reshape(2, -1))
        assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))


def test_the_channel_mean_is_normalised_by_norm_std(ds):
    numbers = paper.paper_numbers(ds)
    row = numbers[(numbers["method"] == "3dvar") & (numbers["density"] == 0.05)
                  & (numbers["column"] == "channel_mean")].iloc[0]
    assert row.mean_rmse == pytest.approx(channel_mean(ds, "3dvar", 0.05).mean(), rel=1e-12)
    assert row.units == "1"
    assert "norm_std" in pooling.channel_mean_note(ds)


def test_old_files_normalise_by_the_first_background(ds):
    old = before_diagnostics(ds)
    first = old["rmse"].sel(phase="background").isel(cycle=0).mean(["method", "density", "seed"])
    numbers = paper.paper_numbers(old)
    row = numbers[(numbers["method"] == "letkf") & (numbers["density"] == 0.01)
                  & (numbers["column"] == "channel_mean")].iloc[0]
    expected = channel_mean(old, "letkf", 0.01, scale=first.values).mean()
    assert row.mean_rmse == pytest.approx(expected, rel=1e-12)
    assert "first background" in paper.paper_notes(old)
    # the per-channel columns do not depend on the normalisation
    pd.testing.assert_frame_equal(numbers[numbers["column"] == "z500"].reset_index(drop=True),
                                  paper.paper_numbers(ds).query("column == 'z500'")
                                  .reset_index(drop=True))


def test_best_is_bold_and_the_dagger_follows_the_paired_interval(ds):
    numbers = paper.paper_numbers(ds)
    table, bold = paper.paper_display(ds)
    for (column, density), group in numbers.groupby(["column", "density"], sort=False):
        ok = group[group["status"] == "ok"]
        best = ok.loc[ok["mean_rmse"].idxmin(), "method"]
        assert list(ok.loc[ok["best"].astype(bool), "method"]) == [best]
        for row in ok.itertuples():
            key = next(k for k in table.columns if k[0].split(" (")[0] == f"density {density:g}"
                       and k[1].startswith("channel mean" if column == "channel_mean" else column))
            cell = table.loc[row.method, key]
            assert bold.loc[row.method, key] == (row.method == best)
            others = channel_mean(ds, row.method, density) - channel_mean(ds, best, density) \
                if column == "channel_mean" else None
            if others is not None:
                interval = statistics.ar1_interval(others)
                assert (row.diff_low, row.diff_high) == pytest.approx((interval.low,
                                                                       interval.high))
            assert cell.endswith("†") == (row.method != best and row.diff_low <= 0), cell


def test_paired_table_mean_is_the_difference_of_the_paper_entries(ds):
    numbers = paired.paired_numbers(ds)
    means = paper.paper_numbers(ds).query("column == 'channel_mean'")
    for row in numbers.itertuples():
        if row.status != "ok":
            assert is_diverged(row.method, row.density) and np.isnan(row.mean_difference)
            continue
        mine, best = (means[(means["method"] == m) & (means["density"] == row.density)]
                      ["mean_rmse"].item() for m in (row.method, row.best))
        assert row.mean_difference == pytest.approx(mine - best, rel=1e-9, abs=1e-12)
        assert row.significant == (row.ci_low > 0)
        assert row.phi <= 1 and 0 < row.n_eff <= row.n == 16
        assert row.block_length >= 1 and row.bootstrap_low <= row.bootstrap_high
        assert 0 <= row.worse_fraction <= 1
    assert set(numbers["best"]) == {"letkf"}  # the fixture's best analysis
    assert "letkf" not in set(numbers["method"])


def test_a_method_against_itself_is_zero_with_zero_width(ds):
    for method in ("3dvar", "letkf"):
        interval = paired.pair_interval(ds, method, method, 0.05)
        assert (interval.mean, interval.low, interval.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="diverged"):
        paired.pair_interval(ds, DIVERGED["method"], "3dvar", DIVERGED["density"])


def test_paper_latex_is_a_booktabs_table_star_from_styler(ds):
    tex = paper.paper_latex(ds)
    assert tex.startswith("\\begin{table*}") and tex.rstrip().endswith("\\end{table*}")
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\multicolumn{4}{c}{density 0.01 (20 col., 4861 km)}" in tex and r"\small" in tex
    assert r"\bfseries" in tex and r"$\pm$" in tex and r"$^\dagger$" in tex
    assert r"z500 [m$^{2}$ s$^{-2}$]" in tex and r"\caption{Analysis RMSE" in tex
    assert "time-mean of per-cycle RMSE" in tex  # the convention is named in the caption
    assert tex.isascii()
    body = tex.split(r"\midrule")[1]
    assert body.count("\\\\") == len(METHODS)  # one row per method
    md = paper.paper_markdown_table(ds)
    assert list(md["method"]) == list(METHODS)
    assert md.shape[1] == 1 + 2 * 4 and md.iloc[3, 1].startswith("**")  # letkf bold


@pytest.mark.parametrize("name", ["paper_rmse_analysis", "paper_rmse_background", "paired"])
def test_notes_name_both_rmse_conventions(ds, tmp_path, name):
    tables.write_tables(ds, tmp_path, "cmd")
    md = (tmp_path / "tables" / f"{name}.md").read_text()
    assert "time-mean of per-cycle RMSE" in md and "√(time-mean MSE)" in md
    csv = pd.read_csv(tmp_path / "tables" / f"{name}.csv", comment="#")
    assert len(csv) == (2 * len(METHODS) * 4 if name != "paired" else 2 * (len(METHODS) - 1))


def test_with_two_seeds_or_one_the_ar1_interval_decides_and_the_notes_say_so(ds):
    for run, seeds in [(ds, 2), (ds.isel(seed=[0]), 1)]:
        numbers = paired.paired_numbers(run).dropna(subset=["mean_difference"])
        assert set(numbers["interval"]) == {"ar1"}
        assert (numbers["ci_low"] == numbers["ar1_low"]).all()
        assert numbers["seeds_low"].isna().all() == (seeds == 1)
        notes = paired.paired_notes(run)
        assert "decides “significant”: the 95 % AR(1)-corrected t interval" in notes
        assert ("with 2 seeds the between-seed interval" in notes) == (seeds == 2)
        assert ("one seed gives no between-seed interval" in notes) == (seeds == 1)
        columns = list(paired.paired_table(run).columns)
        assert "significant (AR(1)-corrected t)" in columns
        assert ("95 % interval (between seeds)" in columns) == (seeds == 2)
        assert "(AR(1)-corrected t)" in paper.paper_caption(run)
        assert "The ± and †: the 95 % AR(1)-corrected t interval" in paper.paper_notes(run)
        assert set(paper.paper_numbers(run)["interval"].dropna()) == {"ar1"}


def test_from_three_seeds_the_between_seed_interval_decides(four_seeds):
    numbers = paired.paired_numbers(four_seeds)
    assert int(numbers["seeds"].dropna().iloc[0]) == 4
    for row in numbers.dropna(subset=["mean_difference"]).itertuples():
        best, mine = (channel_mean(four_seeds, m, row.density) for m in (row.best, row.method))
        means = (mine - best).mean(axis=1)
        half = 3.182446305284263 * means.std(ddof=1) / 2  # t_{0.975, 3} s / √4
        assert row.interval == "seeds" and row.significant == (row.ci_low > 0)
        assert (row.ci_low, row.ci_high) == pytest.approx((means.mean() - half,
                                                           means.mean() + half))
        assert (row.seeds_low, row.seeds_high) == (row.ci_low, row.ci_high)
        ar1 = statistics.ar1_interval(mine - best)
        assert (row.ar1_low, row.ar1_high, row.n_eff) == pytest.approx((ar1.low, ar1.high,
                                                                        ar1.n_eff))
    # none is worse than letkf in every seed: significant
    assert numbers.query("method == 'none'")["significant"].all()
    notes = paired.paired_notes(four_seeds)
    assert "decides “significant”: the between-seed 95 % interval" in notes
    assert "S = 4 seed means" in notes and "not its variability over different weather" in notes
    assert "significant (between seeds)" in paired.paired_table(four_seeds).columns


def test_from_three_seeds_the_paper_tables_use_the_between_seed_interval(four_seeds):
    numbers = paper.paper_numbers(four_seeds)
    table, bold = paper.paper_display(four_seeds)
    row = numbers.query("method == '3dvar' and density == 0.05 and column == 'channel_mean'")
    row = row.iloc[0]
    means = channel_mean(four_seeds, "3dvar", 0.05).mean(axis=1)
    half = 3.182446305284263 * means.std(ddof=1) / 2
    assert row.interval == "seeds"
    assert 0.5 * (row.ci_high - row.ci_low) == pytest.approx(half)
    ar1 = statistics.ar1_interval(channel_mean(four_seeds, "3dvar", 0.05))
    assert (row.ar1_low, row.ar1_high) == pytest.approx((ar1.low, ar1.high))
    for row in numbers[numbers["status"] == "ok"].itertuples():
        key = next(k for k in table.columns if k[0].split(" (")[0] == f"density {row.density:g}"
                   and k[1].startswith("channel mean" if row.column == "channel_mean"
                                       else row.column))
        cell = table.loc[row.method, key]
        assert cell.endswith("†") == (not row.best and row.diff_low <= 0), cell
        assert bold.loc[row.method, key] == bool(row.best)
    assert "between seeds: t over the 4 seed means" in paper.paper_caption(four_seeds)
    notes = paper.paper_notes(four_seeds)
    assert "The ± and †: the between-seed 95 % interval" in notes and "diff_ar1_low" in notes
    # a method whose run the seed does not change has ± 0, and the notes say why
    same = four_seeds.copy(deep=True)
    none = METHODS.index("none")
    same["rmse"].values[none] = same["rmse"].values[none, :, :1]
    assert "± 0 (none): the run is the same for every seed" in paper.paper_notes(same)
    cell = paper.paper_markdown_table(same).set_index("method").loc["none", "0.05: channel mean"]
    assert cell.endswith("± 0.000"), cell


@pytest.mark.skipif(not OLD_RUN.exists(), reason=f"{OLD_RUN} is not checked out")
def test_the_old_paper_run_still_gives_its_tables(tmp_path):
    """results/heldsuarez-paper-1seed-2026-11-28/metrics.nc (an earlier machine, one seed)
    predates norm_std, the diagnostics and forecasts."""
    with xr.open_dataset(OLD_RUN) as old:
        paths = tables.write_tables(old.load(), tmp_path, old.attrs["command"])
        expected_skill = skill.skill_numbers(old)
    stems = sorted({p.stem for p in paths})
    assert stems == ["paired", "paper_rmse_analysis", "paper_rmse_background", "skill",
                     "timing"]
    # the skill table's numbers are those committed with the run
    committed = pd.read_csv(OLD_RUN.parent / "tables" / "skill.csv", comment="#")
    pd.testing.assert_frame_equal(committed, expected_skill, check_exact=False, rtol=1e-12)
    notes = (tmp_path / "tables" / "paired.md").read_text()
    assert "first background" in notes and "φ ≥ 0.9" in notes  # the run's differences drift
    numbers = paired.paired_numbers(xr.open_dataset(OLD_RUN).load())
    assert set(numbers["best"]) == {"3dvar"}
    assert (numbers.dropna()["worse_fraction"] == 1.0).all()


def test_select_cell_and_the_series_agree(ds):
    series = pooling.cycle_series(ds, "z500", "analysis", SPINUP_CYCLES)
    assert series.dims == ("method", "density", "seed", "cycle")
    np.testing.assert_array_equal(
        select_cell(series, "3dvar", 0.01).values.ravel(),
        pooled(ds, "3dvar", 0.01, "z500", "analysis", SPINUP_CYCLES))
    assert len(CHANNELS) == ds.sizes["channel"]
