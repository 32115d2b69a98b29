"""Reading a period of a world in bounded memory: chunks of frames, float64 accumulators.

Everything that reduces a period to a few numbers or one field — the normalisation mean and std,
the climatology — reads it ``chunk_frames`` frames at a time and folds each chunk into float64
accumulators, so memory is O(chunk) whatever the number of frames (a 0.25° frame of 69 channels
is 287 MB float32; 54,056 training frames would be 15 TB). A period that must be held whole
(``fill``: the emulator's training frames) is written chunk by chunk into one preallocated
float32 tensor, without the float64 copies of the whole period that ``StateSpec.to_tensor``
would make.

A chunk holds at most ``CHUNK_BYTES`` of float32 frames (at least one frame). ``ds`` below is a
Dataset in the World layout: one variable per channel, dims (time, lat, lon), physical units,
lazy (dask) or in memory.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import xarray as xr

from bench.state import StateSpec

#: Bytes of float32 frames read at once (at least one frame). 64 MiB: 116 frames of the built-in
#: 32 × 64 world, one frame at 0.25°; the float64 working copies make the peak ~3× this.
CHUNK_BYTES = 64 * 2**20


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's ``malloc_trim``; nothing
    elsewhere). glibc keeps freed arrays of up to 32 MB in its arenas for reuse, and chunk after
    chunk of such arrays fragments them, so without this the resident set creeps up with the
    number of chunks read — with the period — although nothing is held."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: its allocator is not ours to tune
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def chunk_frames(frame_bytes: int, budget: int | None = None) -> int:
    """Frames per chunk: as many float32 frames of ``frame_bytes`` each as fit ``budget``
    (default ``CHUNK_BYTES``, read at call time so a test can shrink it), at least 1."""
    budget = CHUNK_BYTES if budget is None else budget
    return max(1, int(budget) // max(1, int(frame_bytes)))


def frame_bytes(ds: xr.Dataset, names: Sequence[str]) -> int:
    """float32 bytes of one frame of the channels ``names``: 4 × C × H × W."""
    return 4 * len(names) * int(ds.sizes["lat"]) * int(ds.sizes["lon"])


def chunks(idx: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``idx`` (frame indices, in order) in consecutive pieces of at most ``size``."""
    idx = np.asarray(idx)
    for start in range(0, idx.size, size):
        yield idx[start:start + size]


def read(ds: xr.Dataset, spec: StateSpec, idx: np.ndarray, normalised: bool = True,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Frames ``idx`` (indices along ``ds.time``; repeats allowed) as a (len(idx), C, H, W)
    tensor of ``dtype``, normalised unless ``normalised=False``: each distinct frame is read
    once (one compute for all channels, as ``StateSpec.to_tensor``)."""
    idx = np.asarray(idx, dtype=np.int64)
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = spec.to_tensor(ds.isel(time=unique), normalised=normalised, dtype=dtype)
    if unique.size == idx.size and np.array_equal(unique, idx):
        return frames
    return frames[torch.from_numpy(inverse.reshape(-1))]


def channel_moments(ds: xr.Dataset, names: Sequence[str], idx: np.ndarray,
                    chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (ddof 0), shape (C,) float64 in ``ds``'s units, over the frames
    ``idx`` and all grid points (plain means): the chunks' counts, means and sums of squared
    deviations combined exactly (Chan, Golub & LeVeque 1983), never the whole period at once.

    ``chunk``: frames per chunk (default: ``chunk_frames``)."""
    idx = np.asarray(idx, dtype=np.int64)
    chunk = chunk or chunk_frames(frame_bytes(ds, names))
    count = 0
    mean = np.zeros(len(names))
    m2 = np.zeros(len(names))  # Σ (x − mean)²
    for part in chunks(idx, chunk):
        sub = ds[list(names)].isel(time=part).compute()  # one read of each source chunk
        for c, name in enumerate(names):
            # float64 one channel at a time: the working copy is one channel of the chunk
            x = np.asarray(sub[name].values, dtype=np.float64)
            n_b, mean_b = x.size, x.mean()
            m2_b = np.square(x - mean_b).sum()
            total = count + n_b
            delta = mean_b - mean[c]
            mean[c] += delta * n_b / total
            m2[c] += m2_b + delta * delta * count * n_b / total
        count += n_b  # every channel of a chunk has the same number of values
        del sub, x
        release_memory()
    if count == 0:
        raise ValueError("no frames to compute statistics over")
    return mean, np.sqrt(m2 / count)


def mean_frame(ds: xr.Dataset, spec: StateSpec, idx: np.ndarray, chunk: int | None = None,
               normalised: bool = True) -> torch.Tensor:
    """The mean over the frames ``idx`` of ``ds``: (C, H, W) float64, normalised unless
    ``normalised=False``; a float64 running sum over chunks of ``chunk`` frames."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("no frames to average")
    chunk = chunk or chunk_frames(frame_bytes(ds, spec.names))
    total = torch.zeros(spec.shape, dtype=torch.float64)
    for part in chunks(idx, chunk):
        total += read(ds, spec, part, normalised, torch.float64).sum(dim=0)
        release_memory()
    return total / idx.size


def fill(ds: xr.Dataset, spec: StateSpec, out: torch.Tensor | None = None,
         chunk: int | None = None) -> torch.Tensor:
    """All frames of ``ds``, normalised, into ``out`` ((T, C, H, W) float32; allocated when
    None) chunk by chunk: the values ``spec.to_tensor(ds)`` gives, with at most one chunk of
    float64 working copies besides ``out`` (to_tensor of the whole period holds three)."""
    n = int(ds.sizes["time"])
    if out is None:
        out = torch.empty((n, *spec.shape), dtype=torch.float32)
    if tuple(out.shape) != (n, *spec.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {(n, *spec.shape)}")
    chunk = chunk or chunk_frames(frame_bytes(ds, spec.names))
    for part in chunks(np.arange(n), chunk):
        out[part[0]:part[-1] + 1] = read(ds, spec, part, True, out.dtype)
        release_memory()
    return out
