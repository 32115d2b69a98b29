"""bench/cache.py: the one atomic scheme every cache entry is written with.

An entry either does not exist or is complete; it is built once and then loaded; what a build
leaves behind when it fails, races or is replaced. Real SIGKILLs: tests/test_cache_kill.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cache


def temporaries(parent: Path) -> list[str]:
    """The hidden temporary directories under ``parent`` (what a writer builds into)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


class Writer:
    """A build/load pair for a one-file entry that records what it did."""

    def __init__(self, text="payload"):
        self.text, self.builds, self.loads = text, [], []

    def build(self, directory: Path) -> dict:
        self.builds.append(directory)
        (directory / "data.txt").write_text(self.text)
        return {"text": self.text, "pair": (1, 2)}

    def load(self, entry: Path, marker: dict) -> tuple[str, dict]:
        self.loads.append(entry)
        return (entry / "data.txt").read_text(), marker


@pytest.fixture
def entry(isolated_cache) -> Path:
    return cache.entry_dir("things", "thing", {"a": 1})


def test_entry_dir_is_keyed_by_a_stable_hash_of_the_settings(isolated_cache):
    assert cache.cache_root() == isolated_cache
    one = cache.entry_dir("things", "thing", {"a": 1, "b": [1, 2]})
    assert one == cache.entry_dir("things", "thing", {"b": [1, 2], "a": 1})
    assert one.parent == isolated_cache / "things" and one.name.startswith("thing-")
    assert one != cache.entry_dir("things", "thing", {"a": 2, "b": [1, 2]})


def test_build_once_then_load_and_a_fresh_entry_is_loaded_back_from_disk(entry):
    writer = Writer()
    text, marker = cache.load_or_build(entry, writer.build, writer.load)
    # built in a temporary sibling, loaded from the entry (not from the build's directory)
    assert len(writer.builds) == 1 and writer.builds[0].parent == entry.parent
    assert writer.builds[0] != entry and not writer.builds[0].exists()
    assert writer.loads == [entry]
    # the marker the load sees is the one on disk (JSON: the tuple became a list)
    assert text == "payload" and marker == {"text": "payload", "pair": [1, 2]}
    assert cache.read_marker(entry) == marker
    assert json.loads((entry / cache.MARKER).read_text()) == marker
    assert temporaries(entry.parent) == []

    (entry / "data.txt").write_text("changed on disk")  # proves the next call reads the disk
    again = Writer("other")
    assert cache.load_or_build(entry, again.build, again.load) == ("changed on disk", marker)
    assert again.builds == [] and again.loads == [entry]


def test_an_entry_does_not_exist_until_it_is_complete(entry, monkeypatch):
    seen = []

    def build(directory):
        (directory / "data.txt").write_text("x")
        seen.append(("build", entry.exists()))
        return {}

    real_write_marker, real_rename = cache._write_marker, os.rename

    def write_marker(directory, contents):
        seen.append(("marker", entry.exists(), (directory / "data.txt").exists()))
        real_write_marker(directory, contents)

    def rename(src, dst):
        seen.append(("rename", entry.exists(), cache.read_marker(Path(src)) is not None))
        real_rename(src, dst)

    monkeypatch.setattr(cache, "_write_marker", write_marker)
    monkeypatch.setattr(cache.os, "rename", rename)
    assert cache.build_entry(entry, build) == {}
    # the data is there before the marker, the marker before the rename, and the entry name
    # appears only with the rename
    assert seen == [("build", False), ("marker", False, True), ("rename", False, True)]
    assert cache.read_marker(entry) == {} and temporaries(entry.parent) == []


def test_rebuild_replaces_a_complete_entry(entry):
    cache.load_or_build(entry, Writer("old").build, Writer().load)
    (entry / "stale.txt").write_text("left by the old build")
    new = Writer("new")
    text, marker = cache.load_or_build(entry, new.build, new.load, rebuild=True)
    assert text == "new" and marker["text"] == "new" and len(new.builds) == 1
    assert not (entry / "stale.txt").exists()
    assert temporaries(entry.parent) == []


def test_an_old_style_entry_without_a_marker_is_replaced(entry):
    entry.mkdir(parents=True)
    (entry / "data.txt").write_text("half writ")  # an earlier version's writer died here
    (entry / "other.bin").write_bytes(b"\0" * 10)
    assert cache.read_marker(entry) is None
    writer = Writer()
    assert cache.load_or_build(entry, writer.build, writer.load)[0] == "payload"
    assert len(writer.builds) == 1
    assert sorted(p.name for p in entry.iterdir()) == [cache.MARKER, "data.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_build_that_raises_leaves_nothing(entry, error):
    def build(directory):
        (directory / "data.txt").write_text("partial")
        raise error("build failed")

    with pytest.raises(error, match="build failed"):
        cache.load_or_build(entry, build, Writer().load)
    assert not entry.exists()
    assert list(entry.parent.iterdir()) == []


def test_a_marker_that_cannot_be_written_leaves_nothing(entry, monkeypatch):
    def write_marker(directory, contents):
        raise OSError("disk full")

    monkeypatch.setattr(cache, "_write_marker", write_marker)
    with pytest.raises(OSError, match="disk full"):
        cache.build_entry(entry, Writer().build)
    assert list(entry.parent.iterdir()) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_of_this_host_are_removed(entry):
    entry.parent.mkdir(parents=True)
    host = cache._host()
    names = {
        "dead": f".{entry.name}.{host}.{dead_pid()}.0123abcd.tmp",
        "live": f".{entry.name}.{host}.{os.getpid()}.0123abcd.tmp",
        "other host": f".{entry.name}.not-{host}.{dead_pid()}.0123abcd.tmp",
        "other entry": f".other-{entry.name}.{host}.{dead_pid()}.0123abcd.tmp",
    }
    for name in names.values():
        (entry.parent / name).mkdir()
        (entry.parent / name / "data.txt").write_text("partial")
    assert host and all(ch.isalnum() or ch in "-_" for ch in host)

    cache.build_entry(entry, Writer().build)
    left = temporaries(entry.parent)
    assert names["dead"] not in left
    assert sorted(left) == sorted(names[k] for k in ("live", "other host", "other entry"))


def test_two_writers_racing_keep_the_first_and_load_it(entry):
    """The second writer finds the entry complete between its build and its rename."""
    first, second = Writer("first"), Writer("second")

    def racing_build(directory):
        cache.build_entry(entry, first.build)  # the other process finishes meanwhile
        return second.build(directory)

    text, marker = cache.load_or_build(entry, racing_build, second.load)
    assert (text, marker["text"]) == ("first", "first")
    assert len(first.builds) == len(second.builds) == 1
    assert temporaries(entry.parent) == []


def test_two_writers_racing_on_the_rename_keep_the_first_and_load_it(entry, monkeypatch):
    """The other writer renames its copy after this one checked that the entry is absent."""
    first, second = Writer("first"), Writer("second")
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(Path(src).name)
        if len(calls) == 1:
            monkeypatch.setattr(cache.os, "rename", real_rename)
            cache.build_entry(entry, first.build)  # wins the race
        real_rename(src, dst)  # fails: the entry is a non-empty directory now

    monkeypatch.setattr(cache.os, "rename", rename)
    text, marker = cache.load_or_build(entry, second.build, second.load)
    assert (text, marker["text"]) == ("first", "first")
    assert len(calls) == 1 and len(first.builds) == len(second.builds) == 1
    assert temporaries(entry.parent) == []


def test_a_failed_rename_without_a_complete_entry_raises_and_leaves_nothing(entry, monkeypatch):
    def rename(src, dst):
        raise OSError("read-only file system")

    monkeypatch.setattr(cache.os, "rename", rename)
    with pytest.raises(OSError, match="read-only"):
        cache.build_entry(entry, Writer().build)
    monkeypatch.undo()
    assert list(entry.parent.iterdir()) == []


def test_a_corrupt_marker_is_a_cache_error_naming_the_entry(entry):
    entry.mkdir(parents=True)
    (entry / cache.MARKER).write_text('{"text": ')
    with pytest.raises(cache.CacheError, match=str(entry)):
        cache.read_marker(entry)


def test_clear_removes_an_entry_and_tolerates_a_missing_one(entry):
    cache.build_entry(entry, Writer().build)
    cache.clear(entry)
    assert list(entry.parent.iterdir()) == []
    cache.clear(entry)
    assert not entry.exists()


# ----------------------------------------------------------------------------- fitted states
def test_state_round_trips_tensors_arrays_containers_numbers_strings_and_none(tmp_path):
    arrays = {str(dtype): (np.arange(6) % 2).astype(dtype).reshape(2, 3)
              for dtype in (np.float16, np.float32, np.float64, np.int8, np.int32, np.int64,
                            np.uint8, np.uint16, np.bool_, np.complex64)}
    state = {
        "tensor": torch.linspace(0, 1, 5, dtype=torch.float64),
        "half": torch.ones(2, 2, dtype=torch.bfloat16),
        "arrays": arrays,
        "scalar array": np.array(2.5, dtype=np.float32),
        "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "nested": {"list": [1, 2.5, "x", None, [np.int32(3), {"deep": torch.zeros(1)}]],
                   "tuple": (1, np.ones(2)), "empty": {}},
        "int": 7, "float": 0.125, "bool": True, "str": "σ_b", "none": None,
        "numpy scalar": np.float64(1.5),
    }
    path = tmp_path / cache.STATE_FILE
    cache.save_state(state, path)
    got = cache.load_state(path)

    assert set(got) == set(state)
    torch.testing.assert_close(got["tensor"], state["tensor"], rtol=0, atol=0)
    assert got["half"].dtype == torch.bfloat16
    for name, want in [*arrays.items(), ("scalar array", state["scalar array"]),
                       ("strided", state["strided"]), ("fortran", state["fortran"])]:
        have = got["arrays"][name] if name in arrays else got[name]
        assert isinstance(have, np.ndarray), name
        assert have.dtype == want.dtype and have.shape == want.shape, name
        np.testing.assert_array_equal(have, want)
    nested = got["nested"]
    assert nested["list"][:4] == [1, 2.5, "x", None]
    assert nested["list"][4][0] == 3 and type(nested["list"][4][0]) is int
    torch.testing.assert_close(nested["list"][4][1]["deep"], torch.zeros(1))
    assert isinstance(nested["tuple"], list) and nested["tuple"][0] == 1
    np.testing.assert_array_equal(nested["tuple"][1], np.ones(2))
    assert nested["empty"] == {}
    assert [got[k] for k in ("int", "float", "bool", "str", "none")] == [7, 0.125, True, "σ_b",
                                                                         None]
    assert got["numpy scalar"] == 1.5 and type(got["numpy scalar"]) is float


def test_state_is_loaded_on_the_cpu(tmp_path):
    path = tmp_path / cache.STATE_FILE
    cache.save_state({"x": torch.ones(2)}, path)
    assert cache.load_state(path)["x"].device == torch.device("cpu")


class Payload:
    """Runs code when unpickled (what a weights-only loader must refuse)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return Path.touch, (self.sentinel,)


def test_load_state_refuses_to_unpickle_code(tmp_path):
    sentinel = tmp_path / "code ran"
    path = tmp_path / "entry" / cache.STATE_FILE
    path.parent.mkdir()
    torch.save({"weights": torch.ones(2), "payload": Payload(sentinel)}, path)
    with pytest.raises(cache.CacheError, match=str(path.parent)):
        cache.load_state(path)
    assert not sentinel.exists()
    # nor an object of a class (the loader would have to import and build it)
    torch.save({"obj": Writer()}, path)
    with pytest.raises(cache.CacheError, match="cannot be read"):
        cache.load_state(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_a_corrupt_state_file_is_a_cache_error_naming_the_entry(tmp_path, damage):
    entry = tmp_path / "methods" / "nudge-tiny-0123456789ab"
    entry.mkdir(parents=True)
    path = entry / cache.STATE_FILE
    cache.save_state({"sigma_b": torch.arange(1000.0), "a": np.ones(100)}, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a state" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(cache.CacheError, match=f"{path}.*delete {entry}"):
        cache.load_state(path)


def test_clear_renames_the_entry_away_before_removing_its_files(entry, monkeypatch):
    """Removing files one by one (in the directory's order, the marker not necessarily first)
    happens under a temporary name, so a kill meanwhile never leaves a marker beside a part."""
    cache.build_entry(entry, Writer().build)
    removed = []
    real_rmtree = cache.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        removed.append((Path(path), entry.exists()))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(cache.shutil, "rmtree", rmtree)
    cache.clear(entry)
    assert len(removed) == 1
    (path, entry_there), = removed
    assert path != entry and path.name.startswith(f".{entry.name}.") and not entry_there
    assert list(entry.parent.iterdir()) == []
