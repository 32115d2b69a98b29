"""The dask executor: same metrics as the local one, a killed worker loses nothing, clear errors.

The cluster is a LocalCluster of two worker processes; they build the small synthetic Setup of
tests/dask_fixtures.py themselves (an in-memory Setup is not sent to them).
"""

import functools
import os

import pytest
import xarray as xr
from dask_fixtures import KillOnce, tiny_setup

from bench import dask_executor, runner
from bench.cli import main
from bench.config import CycleSettings, RunConfig
from bench.dask_executor import DaskExecutor

CFG = RunConfig(world="tiny", methods=("none", "interp"), densities=(0.05, 0.2), seeds=(0, 1),
                cycle=CycleSettings(days=2, first_lead_hours=12, spinup_cycles=2))
#: what differs between two runs of the same cells: wall time and memory of each analysis
TIMING = ["analysis_seconds", "peak_memory_bytes", "forecast_seconds"]


@pytest.fixture(scope="module")
def client():
    """Two worker processes forked from a server that has imported torch and bench once.

    Each offers one unit of the GPU resource, so cells of a ``--device cuda`` config (which ask
    for it) run here too; the tiny Setup stays on the CPU.

    With the default "spawn" each worker (and the replacement of a killed one) imports torch
    itself, which takes 10-30 s on a busy 2-core machine; the forkserver pays that once.
    """
    import dask
    from distributed import Client, LocalCluster
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(
            ["distributed", "torch", "xarray", "bench.runner", "dask_fixtures"])
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, resources={"GPU": 1}) as cluster, \
                Client(cluster) as c:
            yield c


def assert_same_metrics(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every variable, coordinate and attribute identical, except the timings."""
    xr.testing.assert_identical(a.drop_vars(TIMING), b.drop_vars(TIMING))
    assert a.attrs == b.attrs


def test_dask_gives_exactly_the_local_metrics_and_tables(tmp_path, client):
    from bench.report.tables import write_tables

    local = runner.run(CFG, tmp_path / "local", progress=False, prepared=tiny_setup(CFG))
    ran = runner.run(CFG, tmp_path / "dask", progress=False,
                     executor=DaskExecutor(client, factory=tiny_setup))
    assert_same_metrics(ran, local)
    assert (ran["status"] == "ok").all() and ran.sizes["cycle"] == CFG.cycle.cycles
    on_disk = xr.load_dataset(tmp_path / "dask" / "metrics.nc")
    assert_same_metrics(on_disk, local)
    cells = sorted(p.name for p in (tmp_path / "dask" / "cells").iterdir())
    assert cells == sorted(p.name for p in (tmp_path / "local" / "cells").iterdir())
    assert len(cells) == 8, cells  # no temporary files left behind
    skill = [write_tables(ds, tmp_path / name, "cmd")[1].read_text() for name, ds in
             (("dask", ran), ("local", local))]
    assert skill[0] == skill[1]


def test_a_worker_killed_mid_cell_is_replaced_and_the_run_is_unchanged(
        tmp_path, client, monkeypatch):
    import methods

    monkeypatch.setitem(methods.METHODS, "kill_once", KillOnce)
    cfg = RunConfig(**{**CFG.__dict__, "methods": ("none", "kill_once")})
    marker = tmp_path / "killed"
    pids = set(client.run(os.getpid).values())
    executor = DaskExecutor(client, factory=functools.partial(tiny_setup,
                                                              kill_marker=str(marker)))
    ran = runner.run(cfg, tmp_path / "dask", progress=False, executor=executor)
    assert marker.exists(), "no worker was killed: the test proves nothing"
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids, "the killed worker was not replaced"
    local = runner.run(cfg, tmp_path / "local", progress=False, prepared=tiny_setup(cfg))
    assert_same_metrics(ran, local)
    assert (ran["status"] == "ok").all()
    assert len(list((tmp_path / "dask" / "cells").iterdir())) == 8
    # every cell logged exactly one result: the killed attempt died before writing anything
    log = (tmp_path / "dask" / "log.txt").read_text().splitlines()
    finished = sorted(line.split("; fit")[0] for line in log if ": ok; fit" in line)
    assert finished == sorted(f"cell {runner.cell_name(*key)}: ok" for key in runner.grid(cfg))


def test_resume_on_dask_runs_only_the_missing_cells_and_cuda_cells_ask_for_a_gpu(
        tmp_path, client):
    cfg = RunConfig(**{**CFG.__dict__, "device": "cuda"})  # tiny_setup stays on the CPU
    assert DaskExecutor.resources(cfg) == {"GPU": 1} and DaskExecutor.resources(CFG) is None
    out = tmp_path / "run"
    executor = DaskExecutor(client, factory=tiny_setup)
    whole = runner.run(cfg, out, progress=False, executor=executor)
    (out / "cells" / "interp__0.2__1.nc").unlink()
    (out / "metrics.nc").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    resumed = runner.run(cfg, out, resume=True, progress=False, executor=executor)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()
            if p.name in kept} == kept
    assert (out / "cells" / "interp__0.2__1.nc").exists()
    assert_same_metrics(resumed, whole)


def test_a_cell_task_leaves_a_finished_cell_alone(tmp_path):
    """A retried task whose first attempt wrote the file (then died) does not run it again."""
    key = ("none", 0.05, 0)
    path = runner.cell_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    path.write_text("finished")
    assert dask_executor.cell_task(CFG.to_json(), str(tmp_path), key, tiny_setup) is None
    assert path.read_text() == "finished"


@pytest.mark.parametrize(("flags", "expected"), [
    (["--executor", "dask"], "--executor dask needs one of --scheduler"),
    (["--executor", "dask", "--scheduler", "tcp://a:1", "--dask-workers", "2"],
     "--executor dask needs one of --scheduler"),
    (["--executor", "dask", "--dask-workers", "0"], "--dask-workers 0 must be >= 1"),
    (["--scheduler", "tcp://a:1"], "--scheduler and --dask-workers need --executor dask"),
])
def test_executor_flags_are_checked_before_anything_runs(flags, expected, tmp_path, capsys,
                                                          isolated_cache):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err.removeprefix('error: ')}" and expected in err
    assert err.count("\n") == 0, err
    assert not out.exists()


def test_an_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys, isolated_cache,
                                                           monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 2.0)
    out = tmp_path / "run"
    address = f"tcp://127.0.0.1:{port}"
    assert main(["run", "--out", str(out), "--executor", "dask", "--scheduler", address]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach the dask scheduler at --scheduler {address} "
                           f"(Timed out"), last
    assert not out.exists()
