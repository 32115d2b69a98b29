"""The training period as a memory-mapped cache file: what the emulator and DiffDA learn from,
in bounded memory however long the period.

Training draws random frames from the whole period every step, so the period must be at hand,
but not in memory: five training years of the built-in 32 × 64 world are 4.1 GB of float32
frames, ten years of WeatherBench2's 1.5° store 117 GB. The normalised period is written once,
chunk by chunk (bench/worlds/streaming.py), into a cache entry

    $ASSIMBENCH_CACHE/truth/<world>-<hash>/truth.npy     (T, C, H, W) float32, normalised

keyed by the world's card (its periods included), the period and the normalisation, and served
as a tensor over a copy-on-write memory map: a batch reads its frames from disk (the page cache
keeps what fits), the process holds no copy of the period. The build is resumable after a kill
(bench/resumable.py: the chunks are written with plain file writes, progress recorded after
each) and the entry is written by bench/cache.build_entry, complete or absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench import cache, resumable
from bench.worlds import streaming

TRUTH_FILE = "truth.npy"
#: Bumped when the file's contents change for the same key.
VERSION = 1


def truth_entry(world, period: str) -> Path:
    """The cache entry of ``world``'s ``period`` (its card, periods and normalisation)."""
    spec = world.spec
    return cache.entry_dir("truth", world.name, {
        "world": cache.config_hash(world.card), "period": period,
        "mean": [float(v) for v in spec.mean], "std": [float(v) for v in spec.std],
        "channels": list(spec.names), "version": VERSION})


def mapped_period(world, period: str = "train", progress: bool = False) -> torch.Tensor:
    """``world``'s ``period`` as a (T, C, H, W) float32 normalised tensor backed by a
    copy-on-write memory map of its cache file (written chunk by chunk when absent).

    The values are exactly ``streaming.fill(world.period(period), world.spec)``'s."""
    entry = truth_entry(world, period)

    def build(directory: Path) -> dict:
        ds, spec = world.period(period), world.spec
        n = int(ds.sizes["time"])
        with resumable.locked(entry) as folder:
            if cache.read_marker(entry) is not None:  # another process finished it meanwhile
                return {}
            rows = resumable.RowFile(folder, TRUTH_FILE, (n, *spec.shape), np.float32,
                                     {"world": world.name, "period": period, "frames": n})
            size = streaming.chunk_frames(streaming.frame_bytes(ds, spec.names))
            for batch, part in enumerate(streaming.chunks(np.arange(n), size)):
                if batch in rows.done:
                    continue
                rows.write(batch, int(part[0]), streaming.read(ds, spec, part).numpy())
                streaming.release_memory()
            resumable.link_into(folder / TRUTH_FILE, directory)
        return {"world": world.name, "period": period, "frames": n,
                "shape": [n, *map(int, spec.shape)]}

    truth = cache.load_or_build(
        entry, build, lambda e, _: torch.from_numpy(np.load(e / TRUTH_FILE, mmap_mode="c")))
    resumable.discard(entry)
    return truth
