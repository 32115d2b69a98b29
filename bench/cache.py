"""Where expensive artefacts (worlds, the emulator, samples, fitted methods) are cached, and the
one way every cache entry is written.

An entry is a directory ``$ASSIMBENCH_CACHE/<kind>/<name>-<hash>/`` whose hash is taken over the
JSON of everything that determines its contents. ``build_entry`` is the only writer:

    1. build into a sibling temporary directory unique to this host, process and call
       (``.<entry>.<host>.<pid>.<random>.tmp``);
    2. fsync every file written there;
    3. write the completion marker ``complete.json`` there (temp file, fsync, rename), last;
    4. rename the directory onto the entry name (atomic on one filesystem) and fsync the parent.

So an entry either does not exist or is complete: a writer killed at any point (SIGKILL
included) leaves only a temporary directory, which no reader ever opens and the next writer on
that host removes. A directory at the entry name without a marker (left by the writers of
earlier versions) is incomplete and is replaced. Two processes building one entry at once both
finish; the first rename wins and the second discards its copy and loads the first's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

MARKER = "complete.json"
#: The file holding a fitted method's state in its entry.
STATE_FILE = "state.pt"
#: How save_state marks a numpy array inside a state (torch's weights-only loader takes tensors).
_NDARRAY = "__ndarray__"

T = TypeVar("T")


class CacheError(RuntimeError):
    """A cache entry exists but is incomplete or corrupt."""


def cache_root() -> Path:
    """``$ASSIMBENCH_CACHE`` if set, else the user cache dir (``$XDG_CACHE_HOME/assimbench``)."""
    env = os.environ.get("ASSIMBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "assimbench"


def config_hash(settings: dict) -> str:
    """A short stable hash of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entry_dir(kind: str, name: str, settings: dict) -> Path:
    return cache_root() / kind / f"{name}-{config_hash(settings)}"


def read_marker(entry: Path) -> dict | None:
    """The completion marker's contents, or None when the entry is absent or incomplete."""
    path = entry / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(
            f"cache marker {path} is corrupt ({err}); delete {entry} and prepare it again"
        ) from None


def clear(entry: Path) -> None:
    """Remove ``entry``: renamed away first (atomic), then removed, so that a process killed
    while removing it never leaves its marker beside partly removed files (rmtree goes in the
    directory's order, the marker not necessarily first); the next writer on this host removes
    the renamed copy (a stale temporary)."""
    if not entry.exists():
        return
    doomed = _temporary(entry)
    try:
        os.rename(entry, doomed)
    except FileNotFoundError:  # another process removed it meanwhile
        return
    _fsync_dir(entry.parent)
    shutil.rmtree(doomed, ignore_errors=True)


# ----------------------------------------------------------------------------- the one writer
def build_entry(entry: Path, build: Callable[[Path], dict]) -> dict:
    """Create ``entry`` atomically (module docstring) and return its marker.

    Args:
        entry: the entry directory (``entry_dir(...)``).
        build: writes the entry's files into the directory it is given and returns the marker
            contents (JSON-serialisable; what a reader needs besides the files).
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(entry)
    tmp = _temporary(entry)
    tmp.mkdir()
    try:
        marker = build(tmp)
        _fsync_tree(tmp)
        _write_marker(tmp, marker)
        if entry.exists():
            if read_marker(entry) is not None:  # another process finished first: keep theirs
                shutil.rmtree(tmp)
                return read_marker(entry)
            clear(entry)  # incomplete (an earlier version's writer died)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process renamed its copy in between
            if read_marker(entry) is None:
                raise
            shutil.rmtree(tmp)
        _fsync_dir(entry.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_marker(entry)


def load_or_build(entry: Path, build: Callable[[Path], dict],
                  load: Callable[[Path, dict], T], rebuild: bool = False) -> T:
    """``load(entry, marker)`` of the complete entry, building it first when there is none.

    A freshly built entry is loaded back from disk too, so a first run and a cached rerun see
    exactly the same bytes. ``rebuild`` replaces a complete entry (``--retrain``).
    """
    marker = None if rebuild else read_marker(entry)
    if marker is None:
        if rebuild:
            clear(entry)
        marker = build_entry(entry, build)
    return load(entry, marker)


# ----------------------------------------------------------------------------- fitted states
def save_state(state: dict, path: Path) -> None:
    """Write a fitted method's state (tensors, numpy arrays, numbers, strings, and lists,
    tuples and dicts of these) with torch.save; numpy arrays are wrapped so that the
    weights-only loader reads them back as arrays. Tuples come back as lists."""
    torch.save(_wrap(state), path)


def load_state(path: Path) -> dict:
    """The state ``save_state`` wrote, on the CPU (weights-only unpickling: no code runs)."""
    try:
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any unreadable state is a damaged entry
        raise CacheError(f"cached state {path} cannot be read ({type(err).__name__}: "
                         f"{(str(err).splitlines() or [''])[0][:160]}); delete {path.parent}"
                         ) from None


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        # np.asarray, not np.ascontiguousarray: that one makes a 0-d array 1-d
        return {_NDARRAY: torch.from_numpy(np.asarray(value, order="C"))}
    if isinstance(value, dict):
        return {k: _wrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wrap(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_NDARRAY}:
            return value[_NDARRAY].numpy()
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


# ----------------------------------------------------------------------------- durability
def _write_marker(directory: Path, contents: dict) -> None:
    tmp = directory / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(contents, indent=1, sort_keys=True, default=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MARKER)
    _fsync_dir(directory)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (the data is on disk before the marker)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _host() -> str:
    return "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in "-_")[:32] or "host"


def _temporary(entry: Path) -> Path:
    """A sibling of ``entry`` unique to this host, process and call (never read as an entry)."""
    return entry.parent / f".{entry.name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _remove_stale_temporaries(entry: Path) -> None:
    """Remove temporary directories of this entry left by dead processes of this host."""
    prefix = f".{entry.name}.{_host()}."
    for tmp in entry.parent.glob(f"{prefix}*.tmp"):
        pid = tmp.name[len(prefix):].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
