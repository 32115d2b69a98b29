"""FengWu inside a run: the run's normalisation is FengWu's own statistics files, onnxruntime's
CPU threads follow --threads, and the GPU warning says how to install the CUDA provider."""

from __future__ import annotations

import json
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_fengwu import world_spec
from wb2_store import tiny_era5_cards, write_store

from bench.cli import main
from bench.config import ForecastSettings, RunConfig
from bench.forecast.fengwu import GPU_INSTALL, FengWu
from bench.setup import load_model, open_world, resolved_config
from bench.worlds.era5 import ERA5World


def fengwu(release, **changes) -> ForecastSettings:
    return ForecastSettings(kind="fengwu", fengwu_onnx=str(release / "fengwu.onnx"),
                            fengwu_mean=str(release / "data_mean.npy"),
                            fengwu_std=str(release / "data_std.npy"), **changes)


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("threads", [1, 3])
def test_onnxruntime_threads_follow_the_run(release, threads):
    cfg = RunConfig(forecast=fengwu(release), threads=threads)
    world = types.SimpleNamespace(spec=world_spec())
    model, key = load_model(cfg, world, torch.device("cpu"), progress=False)
    assert isinstance(model, FengWu) and key.startswith("fengwu-")
    options = model._session.get_session_options()
    assert options.intra_op_num_threads == threads and options.inter_op_num_threads == 1


def test_cuda_without_its_provider_says_how_to_install_it(release, monkeypatch):
    """The fallback warning of `--device cuda` with the CPU build of onnxruntime (checked
    without a GPU: only the session is opened, with the device object set by hand)."""
    model = object.__new__(FengWu)
    model.device, model.onnx_path = torch.device("cuda", 0), release / "fengwu.onnx"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(RuntimeWarning, match=r"pip install -e '\.\[gpu\]'") as caught:
        session = model._open_session(2)
    assert GPU_INSTALL in str(caught[0].message)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 2


def test_gpu_extra_names_onnxruntime_gpu():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert any(r.startswith("onnxruntime-gpu>=") for r in extras["gpu"])
    assert not any("onnxruntime" in r for r in extras["dev"])  # CI installs .[dev] only


# ----------------------------------------------------------------------------- normalisation
@pytest.fixture
def era5(tmp_path, monkeypatch, isolated_cache):
    store = tmp_path / "era5.zarr"
    write_store(store, n_times=44)
    monkeypatch.setenv("ASSIMBENCH_DATASETS", str(tiny_era5_cards(tmp_path, store)))
    stats = tmp_path / "stats"
    stats.mkdir()
    np.save(stats / "data_mean.npy", np.arange(69.0))
    np.save(stats / "data_std.npy", np.arange(69.0) + 1.0)
    return store, stats


def test_fengwu_run_normalises_with_fengwu_files(era5, monkeypatch):
    store, stats = era5

    def no_store_statistics(self):
        raise AssertionError("statistics computed from the store")

    monkeypatch.setattr(ERA5World, "compute_statistics", no_store_statistics)
    forecast = ForecastSettings(kind="fengwu", fengwu_onnx="f.onnx",
                                fengwu_mean=str(stats / "data_mean.npy"),
                                fengwu_std=str(stats / "data_std.npy"))
    cfg = RunConfig(world="era5-wb2", era5_path=str(store), forecast=forecast)
    world = open_world(cfg)
    np.testing.assert_array_equal(world.spec.mean, np.arange(69.0))
    np.testing.assert_array_equal(world.spec.std, np.arange(69.0) + 1.0)
    resolved = resolved_config(cfg)
    assert resolved.normalisation == (f"files {stats / 'data_mean.npy'} and "
                                      f"{stats / 'data_std.npy'}")
    assert json.loads(resolved.to_json())["normalisation"] == resolved.normalisation


def test_card_fengwu_dir_is_still_an_option(era5):
    store, stats = era5
    world = open_world(RunConfig(world="era5-wb2", era5_path=str(store)))
    assert world.normalisation.startswith("store statistics over the train period")
    world = ERA5World("era5-wb2", {**world.card, "stats": {"fengwu_dir": str(stats)}},
                      path=str(store))
    assert world.normalisation == f"FengWu's data_mean.npy and data_std.npy in {stats}"
    np.testing.assert_array_equal(world.spec.mean, np.arange(69.0))
    # a FengWu run's files win over the card's folder
    np.save(stats / "other_mean.npy", np.arange(69.0) * 2)
    world.normalise_with(stats / "other_mean.npy", stats / "data_std.npy")
    np.testing.assert_array_equal(world.spec.mean, np.arange(69.0) * 2)


def test_bad_fengwu_statistics_are_refused_before_any_work(era5, release, tmp_path, capsys,
                                                           isolated_cache):
    store, stats = era5
    np.save(stats / "short.npy", np.ones(10))
    out = tmp_path / "run"
    code = main(["run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "fengwu",
                 "--fengwu-onnx", str(release / "fengwu.onnx"),
                 "--fengwu-mean", str(stats / "short.npy"),
                 "--fengwu-std", str(stats / "data_std.npy"), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "short.npy holds 10 values; expected 69" in err and "--fengwu-mean" in err
    assert not out.exists() and not isolated_cache.exists()

