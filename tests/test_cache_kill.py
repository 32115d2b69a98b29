"""A run killed with SIGKILL during a ``fit`` or a cache write, then rerun, never loads a partial
file — tested at each cache kind with real SIGKILLs.

For each kind (a method's fitted state, background-error samples, the emulator, a world) a child
Python process starts the kind's real writer with one thing patched to SIGKILL it:

    data     in the middle of writing the data file (part of its bytes written and flushed;
             samples: half a batch of rows in the partial folder, bench/resumable.py);
    marker   after the data is written, before the completion marker;
    rename   after the marker, just before the rename onto the entry name.

Then, in the test: the entry does not exist (or has no marker), only the dead writer's temporary
is left, and rerunning the writer builds a complete entry equal to a direct, uncached
computation, and removes that temporary.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import cache

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
MOMENTS = ("data", "marker", "rename")
#: the folder under the cache root of each kind's entries
KIND_DIRS = {"method": "methods", "samples": "samples", "emulator": "emulators",
             "world": "worlds"}
WORLD_NAME = "heldsuarez-5.625"


# ----------------------------------------------------------------------------- the writers
# Each runs the kind's real writer (unpatched in the test, patched by ``arm`` in the child).
def tiny_world():
    from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec

    spec = small_spec()
    return InMemoryWorld(spec, advected_trajectory(spec, 48, seed=0))


def emulator_config():
    from bench.forecast.emulator import EmulatorConfig

    return EmulatorConfig(width=8, blocks=1, steps=2, batch_size=4)


def tiny_setup():
    """A bench.setup.Setup on the tiny world with persistence (as forecast_fixtures'
    persistence_setup builds it)."""
    from bench.config import CycleSettings
    from bench.cycle import TruthWindow, first_background
    from bench.forecast.persistence import Persistence
    from bench.setup import Setup

    world = tiny_world()
    world.period = lambda name, base=world.period: base("valid" if name == "test" else name)
    spec, cpu = world.spec, torch.device("cpu")
    model = Persistence(spec)
    truth = TruthWindow(world.period("test"), spec, cpu)
    start = first_background(model, truth, CycleSettings(days=1.0, first_lead_hours=6,
                                                         spinup_cycles=0))
    clim = spec.to_tensor(world.period("train")).mean(0)
    return Setup(world, model, "persistence", truth, start, clim, cpu)


def write_method():
    from toy_methods import Nudge

    from bench.setup import fitted_state

    return fitted_state(tiny_setup(), Nudge(), progress=False)


def write_samples():
    from bench.forecast.persistence import Persistence
    from bench.samples import SampleSettings, load_or_make_samples

    world = tiny_world()
    return load_or_make_samples(world, Persistence(world.spec), "persistence", SampleSettings(),
                                progress=False)


def write_emulator(retrain=False):
    from bench.forecast.emulator_train import load_or_train

    return load_or_train(tiny_world(), emulator_config(), progress=False, retrain=retrain)


def nature_world():
    from test_nature import short_card

    from bench.worlds.nature import NatureWorld

    return NatureWorld(WORLD_NAME, short_card(1, (1, 1, 1)))


def write_world():
    world = nature_world()
    world.prepare(progress=False)
    return world


WRITERS = {"method": write_method, "samples": write_samples, "emulator": write_emulator,
           "world": write_world}


def entry_of(kind: str) -> Path:
    """The cache entry the kind's writer builds (the same in the child and in the test)."""
    from bench.forecast.emulator_train import emulator_entry
    from bench.samples import SampleSettings, samples_entry

    if kind == "samples":
        return samples_entry(tiny_world(), "persistence", SampleSettings())
    if kind == "emulator":
        return emulator_entry(tiny_world(), emulator_config())
    if kind == "world":
        return nature_world().entry
    from toy_methods import Nudge

    from bench.setup import fit_entry

    return fit_entry(tiny_setup(), Nudge())


# ----------------------------------------------------------------------------- in the child
def die(where: str) -> None:
    print(f"KILLED {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(kind: str, moment: str) -> None:
    """Patch the child so that the kind's writer is killed at ``moment`` (module docstring).

    Only writes of this kind's entries are killed: a method's fit writes samples first.
    """
    ours = KIND_DIRS[kind]

    def is_ours(directory) -> bool:
        return Path(directory).parent.name == ours and Path(directory).name.startswith(".")

    if kind == "world":
        import bench.worlds.nature as nature

        nature.generate = fake_generate(die_while_writing=moment == "data")
    elif moment == "data" and kind == "samples":  # written batch by batch (bench/resumable)
        from bench import resumable

        def write(self, batch, first_row, values):
            data = np.ascontiguousarray(values, self.dtype).tobytes()
            with open(self.path, "r+b") as f:  # half a batch's rows, then the kill
                f.seek(self.offset + first_row * self.row_bytes)
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            die(f"writing {self.path.name}")

        resumable.RowFile.write = write
    elif moment == "data":
        module, name, path_arg = {"method": (cache, "save_state", 1),
                                  "emulator": (torch, "save", 1)}[kind]
        real_save = getattr(module, name)

        def save(*args, **kwargs):
            real_save(*args, **kwargs)
            path = Path(args[path_arg])
            data = path.read_bytes()
            with open(path, "wb") as f:  # what a writer killed half-way leaves
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            die(f"writing {path.name}")

        setattr(module, name, save)
    if moment == "marker":
        real_write_marker = cache._write_marker

        def write_marker(directory, contents):
            if is_ours(directory):
                die("before the marker")
            real_write_marker(directory, contents)

        cache._write_marker = write_marker
    elif moment == "rename":
        real_rename = os.rename

        def rename(src, dst):
            if is_ours(src):
                die("before the rename")
            real_rename(src, dst)

        cache.os.rename = rename
    elif moment == "clear":  # removing a complete entry, its files in the worst order
        real_rmtree = cache.shutil.rmtree

        def rmtree(path, *args, **kwargs):
            path = Path(path)
            if path.parent.name != ours:
                return real_rmtree(path, *args, **kwargs)
            files = sorted((p for p in path.rglob("*") if p.is_file()),
                           key=lambda p: p.name == cache.MARKER)  # the marker last
            files[0].unlink()
            die(f"removing {files[0].name}")

        cache.shutil.rmtree = rmtree


def fake_generate(die_while_writing: bool):
    """A stand-in for bench.worlds.nature.generate: a small zarr store, no dinosaur run. With
    ``die_while_writing`` it writes the first of two chunks, half a chunk file, and dies."""
    import xarray as xr

    def generate(settings, store_path, progress=True):
        frames = np.arange(2 * 4 * 8, dtype=np.float32).reshape(2, 4, 8)
        ds = xr.Dataset({"z500": (("time", "lat", "lon"), frames)},
                        coords={"time": settings.times()[:2]})
        ds.to_zarr(store_path, mode="w", consolidated=True, zarr_format=2,
                   encoding={"z500": {"chunks": (1, 4, 8)}})
        if die_while_writing:
            chunk = Path(store_path) / "z500" / "1.0.0"
            data = chunk.read_bytes()
            with open(chunk, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            die("writing world.zarr")
        return {"frames": 2, "seconds": 0.0}

    return generate


CHILD = """
import os, sys
import torch
torch.set_num_threads(1)
print("PID", os.getpid(), flush=True)
import test_cache_kill as t
t.arm({kind!r}, {moment!r})
{run}
print("NOT KILLED", flush=True)
"""


# ----------------------------------------------------------------------------- in the test
def kill_child(kind: str, moment: str, run: str | None = None) -> int:
    """Run the kind's writer in a child armed to die at ``moment``; its pid."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               ASSIMBENCH_CACHE=str(cache.cache_root()),
               PYTHONPATH=os.pathsep.join(
                   [str(TESTS), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    script = CHILD.format(kind=kind, moment=moment, run=run or f"t.WRITERS[{kind!r}]()")
    child = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    report = f"stdout:\n{child.stdout}\nstderr:\n{child.stderr[-3000:]}"
    assert child.returncode == -signal.SIGKILL, report
    assert "KILLED" in child.stdout and "NOT KILLED" not in child.stdout, report
    return int(re.search(r"^PID (\d+)$", child.stdout, re.M).group(1))


def assert_nothing_loadable(entry: Path, pid: int, moment: str) -> Path:
    """After the kill: no entry (or none with a marker); only the dead writer's temporaries,
    the one it died in holding what ``moment`` says it had written. Returns that one."""
    assert not entry.exists() or cache.read_marker(entry) is None
    assert not entry.exists(), "the entry name appears only with the rename of a complete one"
    left = sorted(entry.parent.iterdir())
    assert left and all(p.name.startswith(f".{entry.name}.") and p.name.endswith(".tmp")
                        for p in left), [p.name for p in left]
    mine = [p for p in left if f".{cache._host()}.{pid}." in p.name]
    assert len(mine) == 1, [p.name for p in left]
    has_marker = (mine[0] / cache.MARKER).exists()
    assert has_marker == (moment == "rename"), sorted(p.name for p in mine[0].iterdir())
    return mine[0]


def assert_rebuilt(entry: Path, leftover: Path) -> None:
    assert cache.read_marker(entry) is not None
    assert not leftover.exists(), "the dead writer's temporary is removed by the next writer"
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def direct_samples(world):
    """NMC samples computed now, without any cache."""
    from bench.forecast.persistence import Persistence
    from bench.samples import SampleSettings, make_samples

    truth = world.spec.to_tensor(world.period("train").load())
    return make_samples(Persistence(world.spec), truth, SampleSettings(), progress=False)


def check_rerun(kind: str, entry: Path, leftover: Path, moment: str) -> None:
    """Rerun the writer unpatched: a complete entry, equal to a direct computation."""
    data_file = {"method": cache.STATE_FILE, "samples": "samples.npy",
                 "emulator": "emulator.pt"}[kind]
    partial = None
    if moment == "data" and kind == "samples":  # the batch being written is not recorded
        from bench import resumable

        progress = resumable.partial_dir(entry) / resumable.PROGRESS
        assert json.loads(progress.read_text())["done"] == []
    elif moment == "data":
        partial = (leftover / data_file).stat().st_size
    got = WRITERS[kind]()
    assert_rebuilt(entry, leftover)
    if partial is not None:
        assert 0 < partial < (entry / data_file).stat().st_size
    if kind == "samples":
        from bench import resumable

        torch.testing.assert_close(got, direct_samples(tiny_world()), rtol=0, atol=0)
        assert not resumable.partial_dir(entry).exists(), "removed once the entry is complete"
    elif kind == "method":
        from toy_methods import Nudge

        world = tiny_world()
        want = Nudge().fit(SimpleNamespace(samples=lambda kind="nmc", **_: direct_samples(world)))
        assert got["n_samples"] == want["n_samples"] > 0
        torch.testing.assert_close(got["sigma_b"], want["sigma_b"], rtol=0, atol=0)
    else:
        from bench.forecast.emulator_train import load_period, train_emulator

        model, _ = got
        world = tiny_world()
        net, _ = train_emulator(load_period(world, "train"), world.spec, emulator_config(),
                                progress=False)
        want = net.state_dict()
        have = model.net.state_dict()
        assert have.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(have[name], want[name], rtol=0, atol=0, msg=name)
    # and the next run loads it
    stamp = (entry / cache.MARKER).stat().st_mtime_ns
    WRITERS[kind]()
    assert (entry / cache.MARKER).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("kind", ["method", "samples", "emulator"])
def test_a_writer_killed_then_rerun_never_loads_a_partial_entry(isolated_cache, kind, moment):
    entry = entry_of(kind)
    pid = kill_child(kind, moment)
    leftover = assert_nothing_loadable(entry, pid, moment)
    check_rerun(kind, entry, leftover, moment)


def test_a_rebuild_killed_while_removing_the_old_entry_never_loads_a_partial_one(
        isolated_cache):
    """--retrain / --refit remove a complete entry first: a kill meanwhile (the files going in
    the worst order, the marker last) must not leave the marker beside a part."""
    entry = entry_of("emulator")
    write_emulator()
    assert cache.read_marker(entry) is not None
    pid = kill_child("emulator", "clear", run="t.write_emulator(retrain=True)")
    assert not entry.exists() or cache.read_marker(entry) is None
    left = [p for p in entry.parent.iterdir() if f".{pid}." in p.name]
    assert len(left) == 1 and not entry.exists()
    check_rerun("emulator", entry, left[0], "clear")


@pytest.mark.slow
def test_a_world_killed_while_writing_then_rerun_is_generated_whole(isolated_cache):
    """The child's generate is a fake (a small zarr store); the rerun is a real nature run."""
    entry = entry_of("world")
    leftovers = []
    for moment in MOMENTS:  # each child, finding the earlier ones' temporaries, builds anew
        pid = kill_child("world", moment)
        assert not entry.exists() or cache.read_marker(entry) is None
        left = sorted(entry.parent.iterdir())
        assert all(p.name.startswith(f".{entry.name}.") for p in left)
        mine = [p for p in left if f".{cache._host()}.{pid}." in p.name]
        assert len(mine) == 1 and (mine[0] / "world.zarr").is_dir()
        assert (mine[0] / cache.MARKER).exists() == (moment == "rename")
        leftovers.append(mine[0])
        world = nature_world()
        assert world.status()[0] == "missing"
        with pytest.raises(cache.CacheError, match="prepare --world"):
            world.open()
    assert len(leftovers) == len(MOMENTS)

    world = write_world()
    for leftover in leftovers:
        assert not leftover.exists()
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
    state, message = nature_world().status(verify_checksums=True)
    assert state == "valid", message
    assert world.open().sizes["time"] == 3 * 4 == cache.read_marker(entry)["frames"]

