"""`python -m bench prepare` and the period flags on tiny WeatherBench2-schema stores: every
refusal is one line on stderr, exit code 2, before anything is built or written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import wb2_store
from wb2_store import tiny_era5_cards, write_store

from bench.cli import main

#: The tiny card's periods (tests/wb2_store.tiny_era5_cards) on a 44-frame store from 2018-01-01.
TRAIN = "2018-01-01T00:00..2018-01-05T00:00"


@pytest.fixture
def cards(tmp_path, monkeypatch, isolated_cache):
    """A cards folder with the era5-wb2 card on the tiny periods; ASSIMBENCH_DATASETS at it."""
    folder = tiny_era5_cards(tmp_path, tmp_path / "unused.zarr")
    monkeypatch.setenv("ASSIMBENCH_DATASETS", str(folder))
    return folder


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "era5.zarr"
    write_store(path, n_times=44)
    return path


def refuse(capsys, *argv) -> str:
    """main(argv) refuses: exit code 2, one line on stderr, no traceback; returns the line."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("error: ") and err.count("\n") == 0, err
    assert "Traceback" not in err
    return err


def prepare(*extra) -> list[str]:
    return ["prepare", "--world", "era5-wb2", "-q", *extra]


def test_prepare_valid_store_reports_periods_and_normalisation(cards, store, capsys):
    assert main(prepare("--era5-path", str(store))) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and f"train {TRAIN}" in out
    assert "read back" in out and "store statistics over the train period" in out


def test_metadata_only_store_is_invalid(cards, tmp_path, capsys):
    path = tmp_path / "meta.zarr"
    ds = wb2_store.make_dataset(n_times=44)
    # what an interrupted or metadata-only copy looks like: every array declared, no chunk
    ds.chunk({"time": 1}).to_zarr(path, zarr_format=2, consolidated=True, compute=False)
    err = refuse(capsys, *prepare("--era5-path", str(path)))
    assert "all NaN" in err and "holds no data" in err and str(path) in err


def test_all_nan_variable_is_named(cards, tmp_path, capsys):
    path = tmp_path / "nan.zarr"
    ds = wb2_store.make_dataset(n_times=44)
    ds["2m_temperature"][:] = np.nan
    ds.chunk({"time": 1}).to_zarr(path, zarr_format=2, consolidated=True)
    err = refuse(capsys, *prepare("--era5-path", str(path)))
    assert "2m_temperature" in err and "t2m" in err and "all NaN" in err


def test_missing_chunk_is_found(cards, store, capsys):
    (store / "geopotential" / "43.0.0.0").unlink()  # the last frame of the test period
    err = refuse(capsys, *prepare("--era5-path", str(store)))
    assert "geopotential" in err and "2018-01-11T18:00" in err


def test_unreadable_chunk_is_one_line(cards, store, capsys):
    (store / "temperature" / "0.0.0.0").write_bytes(b"not a compressed chunk")
    err = refuse(capsys, *prepare("--era5-path", str(store)))
    assert "cannot read temperature" in err and "2018-01-01T00:00" in err


def test_missing_store_variable_level_and_grid(cards, store, tmp_path, capsys):
    err = refuse(capsys, *prepare("--era5-path", str(tmp_path / "nowhere.zarr")))
    assert "no ERA5 store at" in err and "--era5-path" in err
    (tmp_path / "empty").mkdir()
    assert "neither a zarr store" in refuse(capsys, *prepare("--era5-path",
                                                              str(tmp_path / "empty")))
    path = tmp_path / "no-q.zarr"
    write_store(path, n_times=44, drop=("specific_humidity",))
    assert "specific_humidity" in refuse(capsys, *prepare("--era5-path", str(path)))
    path = tmp_path / "no-850.zarr"
    write_store(path, n_times=44, levels=tuple(x for x in wb2_store.LEVELS if x != 850))
    assert "[850] hPa" in refuse(capsys, *prepare("--era5-path", str(path)))
    path = tmp_path / "no-poles.zarr"
    wb2_store.make_dataset(n_times=44).isel(latitude=slice(1, -1)).to_zarr(path, zarr_format=2)
    assert "with_poles" in refuse(capsys, *prepare("--era5-path", str(path)))
    path = tmp_path / "bad.zarr"
    path.mkdir()
    (path / ".zgroup").write_text("{not json")
    assert "cannot open the ERA5 store" in refuse(capsys, *prepare("--era5-path", str(path)))


def test_period_of_the_card_outside_the_store(cards, tmp_path, capsys):
    path = tmp_path / "short.zarr"
    write_store(path, n_times=30)  # ends 2018-01-08T12:00; the card's test period 01-07..01-12
    err = refuse(capsys, *prepare("--era5-path", str(path)))
    assert "the test period 2018-01-07T00:00..2018-01-12T00:00" in err
    assert "covers only 2018-01-01T00:00..2018-01-08T12:00" in err
    assert "--test-period" in err and "[periods.test]" in err


def test_gap_in_the_store_is_found(cards, tmp_path, capsys):
    path = tmp_path / "gap.zarr"
    ds = wb2_store.make_dataset(n_times=44)
    ds.isel(time=[i for i in range(44) if i != 5]).to_zarr(path, zarr_format=2)
    err = refuse(capsys, *prepare("--era5-path", str(path)))
    assert "lacks 1 of its 16 6-hourly frames" in err and "2018-01-02T06:00" in err


def test_period_flags_replace_the_card(cards, store, capsys):
    assert main(prepare("--era5-path", str(store), "--test-period",
                        "2018-01-08..2018-01-10T12:00")) == 0
    assert "test 2018-01-08..2018-01-10T12:00" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, expected", [
    ("--test-period", "2018-02-01..2018-03-01",
     "--test-period 2018-02-01..2018-03-01: expected a test period that the ERA5 store"),
    ("--train-period", "2018-01-01:2018-01-05", "expected START..END"),
    ("--valid-period", "2018-01-06..2018-01-05", "START before END"),
    ("--valid-period", "2018-01-0x..2018-01-06", "START..END"),
    ("--test-period", "2018-01-03..2018-01-06",
     "expected a test period that does not overlap the training period"),
])
def test_bad_period_flags_name_the_flag(cards, store, capsys, flag, value, expected):
    err = refuse(capsys, *prepare("--era5-path", str(store), flag, value))
    assert expected in err and f"{flag} {value}" in err
    if "ERA5 store" in expected:  # what the store has, to choose from
        assert "2018-01-01T00:00..2018-01-12T00:00" in err


def test_generated_world_takes_periods_only_inside_its_frames(capsys, isolated_cache):
    """A nature run generates its card's frames: a period past them is refused before
    anything is generated (tests/test_nature_periods.py: periods inside them)."""
    err = refuse(capsys, "prepare", "--world", "heldsuarez-5.625", "--test-period",
                 "2002-03-01..2002-05-01")
    assert "--test-period 2002-03-01..2002-05-01" in err and "inside the frames" in err
    assert not isolated_cache.exists()


def test_run_refuses_a_period_outside_the_store_before_any_work(cards, store, tmp_path,
                                                                 capsys, isolated_cache):
    out = tmp_path / "run"
    err = refuse(capsys, "run", "--world", "era5-wb2", "--era5-path", str(store),
                 "--test-period", "2019-01-01..2019-02-01", "--out", str(out), "-q")
    assert "--test-period 2019-01-01..2019-02-01" in err
    assert not out.exists() and not isolated_cache.exists()


def test_config_records_periods_and_normalisation(cards, store):
    from bench.cli.flags import config_from_args
    from bench.cli.parser import parse_command_line
    from bench.setup import resolved_config

    args = parse_command_line(["run", "--world", "era5-wb2", "--era5-path", str(store),
                               "--test-period", "2018-01-08..2018-01-10"])
    cfg = resolved_config(config_from_args(args))
    assert cfg.periods.train == TRAIN and cfg.periods.test == "2018-01-08..2018-01-10"
    assert cfg.normalisation.startswith(f"store statistics over the train period {TRAIN}")
    assert resolved_config(cfg) == cfg  # idempotent: a resumed run compares equal
    saved = json.loads(cfg.to_json())
    assert saved["periods"]["valid"] == "2018-01-05T00:00..2018-01-07T00:00"


def test_resume_compares_the_recorded_periods(cards, store, tmp_path):
    import dataclasses

    from bench import runner
    from bench.config import RunConfig
    from bench.setup import resolved_config

    cfg = resolved_config(RunConfig(world="era5-wb2", era5_path=str(store)))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(cfg.to_json())
    runner.check_output(out, cfg, resume=True)
    other = dataclasses.replace(cfg, periods=dataclasses.replace(
        cfg.periods, test="2018-01-08..2018-01-10"))
    with pytest.raises(runner.RunError, match="periods.test"):
        runner.check_output(out, other, resume=True)
    # a config.json of an earlier version recorded neither: such a run still resumes
    old = json.loads(cfg.to_json())
    del old["periods"], old["normalisation"]
    (out / "config.json").write_text(json.dumps(old))
    runner.check_output(out, cfg, resume=True)
