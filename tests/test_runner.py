"""The grid runner: results layout, identical observations, resume, config checks."""

import dataclasses
import json
import re
import time

import numpy as np
import pytest
import torch
import xarray as xr
from forecast_fixtures import persistence_setup

from bench import runner
from bench.config import CycleSettings, RunConfig
from bench.peak_memory import Stage

CFG = RunConfig(world="tiny", methods=("none",), densities=(0.05, 0.2), seeds=(0, 1),
                cycle=CycleSettings(days=2, first_lead_hours=12, spinup_cycles=2))


def prepared(cfg=CFG):
    return persistence_setup(cfg)


def test_run_writes_the_layout_and_metrics_schema(tmp_path):
    out = tmp_path / "run"
    ds = runner.run(CFG, out, progress=False, prepared=prepared(), command="test")
    assert (out / "config.json").exists() and (out / "metrics.nc").exists()
    assert (out / "timing.csv").exists() and (out / "log.txt").exists()
    assert len(list((out / "cells").glob("*.nc"))) == 4
    assert ds["rmse"].dims == ("method", "density", "seed", "cycle", "phase", "channel")
    assert list(ds["phase"].values) == ["background", "analysis"]
    assert ds.sizes["cycle"] == 8 and (ds["status"] == "ok").all()
    # no assimilation: analysis error equals background error
    np.testing.assert_array_equal(ds["rmse"].sel(phase="analysis"),
                                  ds["rmse"].sel(phase="background"))
    # the time-lagged start is identical for every cell
    first = ds["rmse"].isel(cycle=0).sel(phase="background")
    assert float(np.ptp(first.values, axis=(0, 1, 2)).max()) == 0.0
    # more observations at higher density
    assert (ds["n_points"].sel(density=0.2) > ds["n_points"].sel(density=0.05)).all()
    on_disk = xr.load_dataset(out / "metrics.nc")
    xr.testing.assert_identical(on_disk.drop_attrs(), ds.drop_attrs())
    assert json.loads((out / "config.json").read_text())["densities"] == [0.05, 0.2]


def test_resume_reuses_finished_cells_and_matches_an_uninterrupted_run(tmp_path):
    whole = runner.run(CFG, tmp_path / "a", progress=False, prepared=prepared())
    out = tmp_path / "b"
    runner.run(CFG, out, progress=False, prepared=prepared())
    # simulate a run killed after three cells
    (out / "cells" / "none__0.2__1.nc").unlink()
    (out / "metrics.nc").unlink()
    kept = (out / "cells" / "none__0.05__0.nc").stat().st_mtime_ns
    resumed = runner.run(CFG, out, resume=True, progress=False, prepared=prepared())
    assert (out / "cells" / "none__0.05__0.nc").stat().st_mtime_ns == kept
    for name in ("rmse", "bias", "acc", "n_obs", "n_points"):
        xr.testing.assert_identical(resumed[name], whole[name])


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    out = tmp_path / "run"
    runner.run(CFG, out, progress=False, prepared=prepared())
    with pytest.raises(runner.RunError, match="--resume"):
        runner.run(CFG, out, progress=False, prepared=prepared())
    other = dataclasses.replace(
        CFG, observations=dataclasses.replace(CFG.observations, noise_fraction=0.0))
    with pytest.raises(runner.RunError, match=r"observations.noise_fraction \(0.01 -> 0.0\)"):
        runner.run(other, out, resume=True, progress=False, prepared=prepared(other))


def test_unwritable_output_is_refused_before_anything_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(runner.RunError, match="not a writable folder"):
        runner.check_output(blocker / "run", CFG, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_every_method_sees_identical_observations_and_tables_regenerate_identically(
        tmp_path, monkeypatch):
    import methods
    from bench.report.tables import write_tables
    from methods.base import Analyser, Analysis, Assimilator

    seen = {}

    @dataclasses.dataclass(frozen=True)
    class SpyA(Assimilator, Analyser):
        def load(self, state, spec, device):
            return self

        def analyse(self, background, obs):
            seen.setdefault(type(self).__name__, []).append(
                (background.cycle, obs.values.clone(), obs.flat_index.clone(), obs.channel.clone()))
            return Analysis(background.x_b + 0.0 * background.x_b)

    @dataclasses.dataclass(frozen=True)
    class SpyB(SpyA):
        pass

    monkeypatch.setitem(methods.METHODS, "spy_a", SpyA)
    monkeypatch.setitem(methods.METHODS, "spy_b", SpyB)
    cfg = dataclasses.replace(CFG, methods=("spy_a", "spy_b"), densities=(0.1,), seeds=(3,))
    out = tmp_path / "run"
    ds = runner.run(cfg, out, progress=False, prepared=prepared(cfg), command="cmd")
    assert len(seen["SpyA"]) == len(seen["SpyB"]) == cfg.cycle.cycles
    for a, b in zip(seen["SpyA"], seen["SpyB"], strict=True):
        assert a[0] == b[0]
        for x, y in zip(a[1:], b[1:], strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    # observations differ between cycles (redrawn), so the check above is not vacuous
    assert not torch.equal(seen["SpyA"][0][2], seen["SpyA"][1][2])

    first = write_tables(ds, out, "cmd")
    before = {p: p.read_bytes() for p in first}
    again = write_tables(xr.load_dataset(out / "metrics.nc"), out, "cmd")
    assert {p: p.read_bytes() for p in again} == before


def test_log_times_each_stage(tmp_path):
    """log.txt says how long setup's stages, each method's fit and its cycles took, and the
    peak memory of each."""
    cfg = RunConfig(methods=("none",), densities=(0.05,),
                    cycle=CycleSettings(days=1, spinup_cycles=2))
    s = prepared(cfg)
    s.stages.update({"world": Stage(0.0, True, 1.25, 1.2e9),
                     "forecast model": Stage(0.0, False, 2.5, 2.5e9)})
    runner.run(cfg, tmp_path / "run", progress=False, prepared=s)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "setup: world 1.2 s (peak 1.20 GB); forecast model 2.5 s (peak so far 2.50 GB)" in log
    assert re.search(r"cell none__0.05__0: ok; fit \d+\.\d s \(peak \d+\.\d\d GB\); "
                     r"cycles \d+\.\d s \(peak \d+\.\d\d GB\)", log), log


def test_log_start_is_when_the_run_began_not_after_setup(tmp_path, monkeypatch):
    """The "start" line is stamped before setup (world, forecast model), so start to "done"
    is the whole command; setup itself is made to take 2 s here."""
    cfg = RunConfig(world="tiny", methods=("none",), densities=(0.05,),
                    cycle=CycleSettings(days=1, spinup_cycles=2))
    slow = prepared(cfg)

    def slow_setup(*args, **kwargs):
        time.sleep(2.0)
        return slow

    monkeypatch.setattr(runner, "setup", slow_setup)
    monkeypatch.setattr(runner, "resolved_config", lambda c: c)  # the tiny world has no card
    before = time.time()
    runner.run(cfg, tmp_path / "run", progress=False)
    first = (tmp_path / "run" / "log.txt").read_text().splitlines()[0]
    started = time.mktime(time.strptime(first.split(" start: ")[0], "%Y-%m-%dT%H:%M:%S"))
    assert started <= before + 1.0, first  # stamped to the second, before the 2 s setup


def test_metrics_dims_are_method_density_seed_first(tmp_path):
    cfg = dataclasses.replace(CFG, methods=("none", "interp"))
    ds = runner.run(cfg, tmp_path / "run", progress=False, prepared=prepared(cfg))
    for name in ("rmse", "spread"):
        assert ds[name].dims == ("method", "density", "seed", "cycle", "phase", "channel")
    for name in ("analysis_seconds", "forecast_seconds", "n_obs"):
        assert ds[name].dims == ("method", "density", "seed", "cycle")
    assert ds["members"].dims == ("method", "density", "seed")
    assert list(ds["method"].values) == ["none", "interp"]
