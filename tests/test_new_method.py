"""Adding a method is one file plus one registry line: the toy methods of tests/toy_methods.py
(a deterministic method that learns, an ensemble method, a 4D method that differentiates the
emulator), registered for the test only, go through `run`, `tables`, `timing` and the asv
benchmarks' discovery with no other file touched; and the harness names no method.
"""

import ast
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from toy_methods import register
from wb2_store import tiny_era5_cards, write_store

from bench.cli import main
from bench.scorer import select_cell
from methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_era5(tmp_path, monkeypatch, isolated_cache):
    store = tmp_path / "era5.zarr"
    write_store(store, n_times=44, start="2018-01-01T00:00")
    monkeypatch.setenv("ASSIMBENCH_DATASETS", str(tiny_era5_cards(tmp_path, store)))
    return store, tmp_path


@pytest.mark.slow
def test_toy_methods_run_through_the_cli_with_the_emulator(tiny_era5, capsys):
    store, tmp = tiny_era5
    out = tmp / "run"
    with register():
        code = main([
            "run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "emulator",
            "--emulator-steps", "3", "--methods", "none,toy-nudge,toy-ensemble,toy-window",
            "--density", "0.3", "--days", "2", "--first-lead", "12", "--spinup-cycles", "2",
            "--divergence-factor", "1000", "--device", "cpu", "--out", str(out), "-q",
            # the tiny world's training period holds 2 NMC samples to perturb members with
            "--set", "toy-ensemble.members=2"])
        assert code == 0, capsys.readouterr()
        assert main(["tables", str(out)]) == 0
        timing = tmp / "timing"
        assert main(["timing", "--methods", "toy-nudge,toy-ensemble,toy-window", "--grid",
                     "9x16", "--channels", "9", "--repeats", "1", "--device", "cpu",
                     "--out", str(timing), "-q"]) == 0
    ds = xr.load_dataset(out / "metrics.nc")
    assert (ds["status"] == "ok").all(), ds["diverged_reason"].values
    for name, members, window in (("none", 0, 0), ("toy-nudge", 0, 0), ("toy-ensemble", 2, 0),
                                  ("toy-window", 0, 6)):
        cell = select_cell(ds, name, 0.3, 0)
        assert int(cell["members"]) == members and int(cell["window_hours"]) == window, name
        spread = cell["spread"].values
        assert np.isfinite(spread).all() if members else np.isnan(spread).all(), name
        # every cycle but the last is followed by a timed forecast of every member
        assert np.isfinite(cell["forecast_seconds"].values[:-1]).all(), name
        assert name == "none" or int(cell["diag_evaluations"].isel(cycle=0)) >= 1
    # the 4D method saw twice the observations (its window holds two times)
    n3d = select_cell(ds, "toy-nudge", 0.3, 0)["n_obs"].values
    np.testing.assert_array_equal(select_cell(ds, "toy-window", 0.3, 0)["n_obs"].values,
                                  2 * n3d)
    # the deterministic toy uses its observations: its analysis beats its background
    nudged = select_cell(ds, "toy-nudge", 0.3, 0)["rmse"]
    assert (nudged.sel(phase="analysis") <= nudged.sel(phase="background") + 1e-9).all()
    assert (tmp / "run" / "tables" / "skill.md").exists()
    table = (timing / "timing.csv").read_text()
    for name in ("toy-nudge", "toy-ensemble", "toy-window"):
        assert name in table


def test_asv_discovers_a_registered_method_and_runs_it():
    sys.path.insert(0, str(ROOT))
    try:
        with register("toy-nudge", "toy-ensemble", "toy-window"):
            benchmarks = importlib.reload(importlib.import_module("benchmarks.benchmarks"))
            assert {"toy-nudge", "toy-ensemble", "toy-window"} <= set(benchmarks.Analysis.params)
            for name in ("toy-nudge", "toy-ensemble", "toy-window"):
                bench = benchmarks.Analysis()
                bench.setup(name)
                bench.time_analyse(name)
                bench.teardown(name)
        importlib.reload(benchmarks)
    finally:
        sys.path.remove(str(ROOT))


def _code_strings(path: Path) -> set[str]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


def test_the_harness_names_no_method():
    """No switch, default or table keyed by a method's name in bench/ (docs may name them;
    "none" is exempt: it is also an ordinary word, e.g. for options)."""
    names = set(METHODS) - {"none"}
    offenders = {str(p.relative_to(ROOT)): sorted(_code_strings(p) & names)
                 for p in (ROOT / "bench").rglob("*.py")}
    assert not {p: n for p, n in offenders.items() if n}
    classes = {cls.__name__ for cls in METHODS.values()} | {"threedvar", "vaevar", "diffda"}
    imported = {}
    for p in (ROOT / "bench").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                used = {a.name for a in node.names} & classes
                used |= set(node.module.split(".")) & classes
                if used:
                    imported[str(p.relative_to(ROOT))] = sorted(used)
    assert not imported, f"the harness imports methods by name: {imported}"


def test_period_valid_cycles_the_validation_period_only(tiny_era5, capsys):
    """Settings are chosen on `--period valid` cycles; their valid times lie in the card's
    validation period, and the training period cannot be cycled."""
    from bench.config import CycleSettings
    from bench.validation import ConfigError

    store, tmp = tiny_era5
    out = tmp / "valid-run"
    code = main(["run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "emulator",
                 "--emulator-steps", "1", "--methods", "none", "--density", "0.3",
                 "--period", "valid", "--days", "0.75", "--first-lead", "6",
                 "--spinup-cycles", "1", "--device", "cpu", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr()
    times = xr.load_dataset(out / "metrics.nc")["valid_time"].values
    valid = (np.datetime64("2018-01-05"), np.datetime64("2018-01-07"))
    assert ((times >= valid[0]) & (times < valid[1])).all()
    with pytest.raises(ConfigError, match="period"):
        CycleSettings(period="train")
