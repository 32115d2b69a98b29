"""Arrays built batch by batch that survive a kill: the resumable part of a long cache build.

A long build (background-error samples: thousands of forecasts) writes its array, a batch of
rows at a time, into a *partial folder* beside the cache, not into the entry:

    $ASSIMBENCH_CACHE/.partial/<kind>/<entry name>/
        <file>.npy       the array: the .npy header, then each batch written at its offset
        progress.json    the batches finished (and what the array is, to refuse a stale one)
    $ASSIMBENCH_CACHE/.partial/<kind>/<entry name>.lock    one builder at a time (flock)

A batch's rows are on disk (fdatasync) before progress.json names it (temporary file, fsync,
rename), so after a kill at any point — SIGKILL included — progress.json names only batches
whose rows are complete, and the next build computes only the others. The finished array is then
hard-linked (copied where links fail) into the entry's temporary directory, so the entry itself is
still written by bench/cache.build_entry: complete or absent. ``discard`` removes the partial
folder once the entry is complete. Batches are written with plain file writes, never through a
memory map, so the process holds one batch in memory, not the array.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench import cache

PROGRESS = "progress.json"


def partial_dir(entry: Path) -> Path:
    """The partial folder of the cache entry ``entry`` (``<root>/<kind>/<name>``)."""
    return entry.parent.parent / ".partial" / entry.parent.name / entry.name


@contextlib.contextmanager
def locked(entry: Path) -> Iterator[Path]:
    """Hold the partial folder of ``entry`` exclusively (a blocking flock on its lock file, which
    the kernel releases when the holder dies); yields the folder, created if absent."""
    folder = partial_dir(entry)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f"{entry.name}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def discard(entry: Path) -> None:
    """Remove the partial folder and lock file of ``entry`` once the entry is complete (under the
    lock, so a builder still linking from it is never pulled from under)."""
    folder = partial_dir(entry)
    if not folder.parent.exists() or cache.read_marker(entry) is None:
        return
    with locked(entry):
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (folder.parent / f"{entry.name}.lock").unlink()


def link_into(source: Path, directory: Path) -> Path:
    """Hard-link ``source`` into ``directory`` (a copy where the filesystem has no links)."""
    target = directory / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


class RowFile:
    """A (N, ...) .npy array in a partial folder, written a batch of rows at a time.

    Args:
        folder: the partial folder (``locked``'s).
        name: the file name (e.g. "samples.npy").
        shape, dtype: the whole array's.
        identity: JSON-serialisable description of what is being built (settings, starts …):
            progress recorded for another identity, shape or dtype is discarded and the array
            started afresh.
    """

    def __init__(self, folder: Path, name: str, shape: tuple[int, ...], dtype, identity: dict):
        self.path = Path(folder) / name
        self.progress = Path(folder) / PROGRESS
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.header = {"identity": identity, "file": name, "shape": list(self.shape),
                       "dtype": self.dtype.str}
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.done: set[int] = set()
        record = self._read_progress()
        if record is not None and {k: record.get(k) for k in self.header} == self.header \
                and self.path.exists():
            self.offset = int(record["offset"])
            if self.path.stat().st_size == self.offset + self.shape[0] * self.row_bytes:
                self.done = set(record["done"])
                return
        self._create()

    def _read_progress(self) -> dict | None:
        try:
            return json.loads(self.progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _create(self) -> None:
        """A fresh file: header and full length (sparse; rows written later), no progress."""
        with contextlib.suppress(FileNotFoundError):
            self.progress.unlink()
        # open_memmap writes the header and extends the file; nothing is mapped afterwards
        array = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype,
                                          shape=self.shape)
        self.offset = int(array.offset)
        del array
        self.done = set()
        self._record()

    def write(self, batch: int, first_row: int, values: np.ndarray) -> None:
        """Write ``values`` (rows first_row … first_row + len − 1) and record ``batch`` done."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.shape[1:] or first_row + len(values) > self.shape[0]:
            raise ValueError(f"rows {first_row}..{first_row + len(values)} of shape "
                             f"{values.shape[1:]} do not fit an array of {self.shape}")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            data, position = memoryview(values).cast("B"), self.offset + first_row * self.row_bytes
            while data:  # pwrite may write less than asked
                written = os.pwrite(fd, data, position)
                data, position = data[written:], position + written
            os.fdatasync(fd)  # the rows are on disk before the progress record names them
        finally:
            os.close(fd)
        self.done.add(int(batch))
        self._record()

    def _record(self) -> None:
        tmp = self.progress.with_suffix(".tmp")
        record = {**self.header, "offset": self.offset, "done": sorted(self.done)}
        with open(tmp, "w") as f:
            f.write(json.dumps(record, default=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.progress)
        cache._fsync_dir(self.progress.parent)
