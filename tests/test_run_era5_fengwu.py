"""The real-data path end to end: `python -m bench run --world era5-wb2 --model fengwu …` on a
tiny WeatherBench2-schema store and a tiny ONNX graph with FengWu's contract, both written here."""

import json
import tomllib

import numpy as np
import pytest
import xarray as xr
from tiny_onnx import export_tiny
from wb2_store import LATS, LONS, tiny_era5_cards, write_store

from bench.cli import main
from bench.worlds import load_world


@pytest.fixture
def era5_fengwu(tmp_path, monkeypatch, isolated_cache):
    store = tmp_path / "era5.zarr"
    write_store(store, n_times=44, start="2018-01-01T00:00")
    # the shipped card with periods that fit the tiny store: train 16 frames, valid 8, test 20
    cards = tiny_era5_cards(tmp_path, store)
    card = tomllib.loads((cards / "era5-wb2.toml").read_text())
    assert card["periods"]["test"]["end"] == "2018-01-12T00:00"
    monkeypatch.setenv("ASSIMBENCH_DATASETS", str(cards))
    release = tmp_path / "fengwu"
    release.mkdir()
    onnx = export_tiny(release / "fengwu.onnx", grid=(len(LATS), len(LONS)))
    # release statistics near the store's own (as FengWu's are near ERA5's), not equal to them,
    # so the two normalisations really differ
    spec = load_world("era5-wb2", path=store).spec
    np.save(release / "data_mean.npy", spec.mean + 0.1 * spec.std)
    np.save(release / "data_std.npy", spec.std * 1.2)
    return store, onnx, release, tmp_path


def test_run_era5_with_fengwu_end_to_end(era5_fengwu, capsys):
    store, onnx, release, tmp = era5_fengwu
    out = tmp / "run"
    code = main([
        "run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "fengwu",
        "--fengwu-onnx", str(onnx), "--fengwu-mean", str(release / "data_mean.npy"),
        "--fengwu-std", str(release / "data_std.npy"), "--methods", "none,interp",
        "--density", "0.2", "--days", "2", "--first-lead", "12", "--spinup-cycles", "2",
        "--divergence-factor", "1000", "--device", "cpu", "--out", str(out), "-q",
        "--test-period", "2018-01-07..2018-01-11", "--threads", "1",
    ])
    assert code == 0, capsys.readouterr()
    # config.json records the periods (the card's and the flag's) and the normalisation: with
    # FengWu, the release's own files
    config = json.loads((out / "config.json").read_text())
    assert config["periods"] == {"train": "2018-01-01T00:00..2018-01-05T00:00",
                                 "valid": "2018-01-05T00:00..2018-01-07T00:00",
                                 "test": "2018-01-07..2018-01-11"}
    assert config["normalisation"] == (f"files {release / 'data_mean.npy'} and "
                                       f"{release / 'data_std.npy'}")
    skill = (out / "tables" / "skill.md").read_text()
    assert "periods: train 2018-01-01T00:00..2018-01-05T00:00" in skill
    assert "test 2018-01-07..2018-01-11" in skill and "normalisation: files" in skill
    ds = xr.load_dataset(out / "metrics.nc")
    assert ds.sizes["cycle"] == 8 and ds.sizes["channel"] == 69
    assert set(ds["method"].values) == {"none", "interp"}
    assert np.isfinite(ds["rmse"].values).all()
    assert "fengwu" in ds.attrs["model"]
    # interp uses the observations: its analysis error is below its background error
    interp = ds["rmse"].sel({"method": "interp", "density": 0.2, "seed": 0})
    assert (interp.sel(phase="analysis") < interp.sel(phase="background")).mean() > 0.9
    for name in ("skill.md", "skill.tex", "skill.csv", "timing.md"):
        assert (out / "tables" / name).exists(), name


def test_missing_onnx_file_is_one_line_exit_2_nothing_written(era5_fengwu, capsys):
    store, onnx, release, tmp = era5_fengwu
    code = main(["run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "fengwu",
                 "--fengwu-onnx", str(tmp / "missing.onnx"),
                 "--fengwu-mean", str(release / "data_mean.npy"),
                 "--fengwu-std", str(release / "data_std.npy"), "--out", str(tmp / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.onnx" in err and err.count("\n") == 0
    assert not (tmp / "run").exists()
