"""Periods inside a nature run's frames (the data-volume learning curve, issue 17): a run may
learn from the first years of a long world, with the forecast model held fixed by
``--emulator-train-period``, while the world's generation, cache and normalisation stay its
card's."""

import numpy as np
import pytest
from test_cli import run_main
from test_nature import short_card

from bench import cache
from bench.cli.flags import config_from_args
from bench.cli.parser import build_parser
from bench.config import ForecastSettings
from bench.forecast.emulator import EmulatorConfig
from bench.forecast.emulator_train import emulator_entry, load_period
from bench.setup import emulator_world, open_world
from bench.validation import ConfigError
from bench.worlds import load_world
from bench.worlds.nature import NatureWorld

NAME = "heldsuarez-5.625"
CARD = short_card(1, (4, 1, 1))  # train 2001-01-01..05, valid ..06, test ..07


def test_a_training_sub_period_shares_the_cache_and_normalisation_but_not_the_key():
    full = NatureWorld(NAME, CARD)
    part = NatureWorld(NAME, CARD, periods={"train": "2001-01-01..2001-01-03"})
    assert part.entry == full.entry, "the generated world (its cache entry) is the card's"
    assert part.normalisation == full.normalisation
    assert full.generated_train in part.normalisation
    assert part.periods["train"].end == np.datetime64("2001-01-03", "ns")
    assert part.periods["valid"] == full.periods["valid"]
    # what methods and the emulator fitted on the sub-period key on it: never reused
    assert cache.config_hash(part.card) != cache.config_hash(full.card)
    same = NatureWorld(NAME, CARD, periods={"train": full.period_text("train")})
    assert same.period_overrides == {} and cache.config_hash(same.card) == cache.config_hash(
        full.card), "the card's own period is not an override"


@pytest.mark.parametrize("periods,field", [
    ({"train": "2000-12-01..2001-01-03"}, "periods.train"),   # before the first frame
    ({"test": "2001-01-06..2001-02-01"}, "periods.test"),     # past the last frame
    ({"valid": "2001-01-02..2001-01-03"}, "periods.valid"),   # overlaps training
])
def test_periods_outside_the_frames_or_overlapping_training_are_refused(periods, field):
    with pytest.raises(ConfigError) as err:
        NatureWorld(NAME, CARD, periods=periods)
    assert err.value.field == field


@pytest.mark.slow
def test_methods_learn_only_from_the_sub_period(isolated_cache):
    world = NatureWorld(NAME, CARD)
    world.prepare(progress=False)
    part = NatureWorld(NAME, CARD, periods={"train": "2001-01-02..2001-01-04"})
    assert part.status()[0] == "valid", "the sub-period reads the card's generated world"
    truth = load_period(part, "train")
    assert truth.shape[0] == 2 * 4
    whole = load_period(world, "train")
    np.testing.assert_array_equal(truth.numpy(), whole[4:12].numpy())


def _cfg(*argv):
    return config_from_args(build_parser("run").parse_args(["run", *argv]))


def test_emulator_train_period_holds_the_forecast_model_fixed():
    """Two runs learning from 1 and 2 years share one emulator entry when both name its period."""
    long_ = ["--world", "heldsuarez-5.625-long", "--emulator-train-period",
             "2001-01-01T00:00..2006-01-01T00:00"]
    one = _cfg(*long_, "--train-period", "2001-01-01..2002-01-01")
    two = _cfg(*long_, "--train-period", "2001-01-01..2003-01-01")
    worlds = [open_world(c) for c in (one, two)]
    assert worlds[0].period_text("train") != worlds[1].period_text("train")
    models = [emulator_world(c, w) for c, w in zip((one, two), worlds, strict=True)]
    entries = {emulator_entry(m, EmulatorConfig()) for m in models}
    assert len(entries) == 1
    assert models[0].periods["train"].end == np.datetime64("2006-01-01", "ns")
    # without the flag the emulator learns from the run's own training period
    alone = _cfg("--world", "heldsuarez-5.625-long", "--train-period", "2001-01-01..2002-01-01")
    assert emulator_world(alone, open_world(alone)) is not None
    assert emulator_entry(emulator_world(alone, open_world(alone)), EmulatorConfig()) \
        not in entries
    card = load_world("heldsuarez-5.625-long")
    assert emulator_world(_cfg(*long_), card).card == card.card


def test_bad_emulator_train_periods_are_one_line_before_anything_is_built(tmp_path, capsys,
                                                                         isolated_cache):
    out = tmp_path / "run"
    overlapping = ["--emulator-train-period", "2001-01-01..2002-02-01"]  # into the valid period
    err = run_main(capsys, "run", "--out", str(out), "-q", *overlapping)
    assert err.startswith("error: --emulator-train-period 2001-01-01..2002-02-01:")
    assert "overlap" in err
    err = run_main(capsys, "run", "--out", str(out), "-q", "--emulator-train-period", "2001")
    assert "--emulator-train-period 2001: expected START..END" in err
    err = run_main(capsys, "run", "--out", str(out), "-q", "--train-period",
                   "1990-01-01..1991-01-01")
    assert "--train-period 1990-01-01..1991-01-01: expected a period inside the frames" in err
    assert not out.exists() and not isolated_cache.exists()
    with pytest.raises(ConfigError, match="the built-in emulator"):
        ForecastSettings(kind="fengwu", fengwu_onnx="a", fengwu_mean="b", fengwu_std="c",
                         emulator_train_period="2001-01-01..2002-01-01")
