"""Memory does not grow with the period: ``prepare``, the normalisation statistics, the
climatology and NMC / truth − forecast samples on WeatherBench2-layout stores with 1× and 4× the
training frames reach the same peak memory (within 10 %).

Each store is 2.8125° with both poles (65 × 128), 69 channels: 2.3 MB a float32 frame, about
16 MB a frame with the float32 and float64 copies the all-at-once code made of the whole period
— so stacking the 4× store's 80 training frames would add ~1 GB to the 1× store's 20, far
above the 10 % of the ~0.9 GB an interpreter with torch, xarray, zarr and the suite loaded
holds. Chunks are set to 8 frames and sample batches to 8 starts, so the 4× store spans 10
chunks and 9 NMC batches, the 1× store 3 chunks and 2 batches (both with full batches, so the
largest batch is the same). Each run is a fresh child process; its peak resident set
after each stage is the measure (VmHWM: ru_maxrss would include the parent's peak, which Linux
carries across exec).

The child runs with a fixed glibc mmap threshold (``MALLOC_MMAP_THRESHOLD_``): by default glibc
raises it to the size of the largest array freed (up to 32 MB) and then keeps freed arrays below
it in its heap, which chunk after chunk of them fragments — a creep of ~5–8 % here that
``streaming.release_memory`` (malloc_trim after each chunk and batch) only halves. That creep is
the allocator's, not data the code holds, and it vanishes once the arrays exceed 32 MB (two 1°
frames of 69 channels, one 0.25° frame); the fixed threshold takes it out of the measure.

Measured so (MB, 1× → 4×): the streaming code 1279 → 1289 (+1 %); the all-at-once code it
replaced (dask reductions for the statistics, a stacked climatology, the whole training period
loaded for the samples) 1351 → 2712 (+101 %; climatology alone 1322 → 2551). The training
truth the emulator and DiffDA learn from, memory-mapped (bench/training_truth.py), anonymous
memory held with every frame read: 572 → 583 MB (+2 %); held in memory as before (``fill``),
617 → 757 MB (+23 %).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec
from wb2_store import LEVELS, SURFACE, UPPER_AIR, expected

from bench.forecast.emulator_train import increment_std
from bench.worlds import streaming

ROOT = Path(__file__).resolve().parents[1]
LATS = np.linspace(-90.0, 90.0, 65)  # south -> north, both poles, as WeatherBench2 stores
LONS = np.arange(128) * 2.8125
START = np.datetime64("2018-01-01T00:00", "ns")
STEP = np.timedelta64(6, "h")
#: training frames of the 1× store (5 days); valid and test periods of 8 frames each follow
TRAIN_FRAMES = 20
EXTRA_FRAMES = 16
#: frames per chunk and starts per sample batch in the child
CHUNK_FRAMES = 8
BATCH = 8


def write_store(path: Path, n_times: int, block: int = 32) -> None:
    """A WeatherBench2-schema zarr store (one frame a chunk) of ``n_times`` 6-hourly frames,
    written ``block`` frames at a time so the test itself never holds the store."""
    lat, lon, lev = LATS, LONS, np.array(LEVELS, dtype=np.int64)
    rng = np.random.default_rng(0)
    for first in range(0, n_times, block):
        t = np.arange(first, min(first + block, n_times))
        data = {}
        for name in UPPER_AIR:
            values = expected(name, lev[None, :, None, None], t[:, None, None, None],
                              lat[None, None, :, None], lon[None, None, None, :])
            # noise in time, so forecasts and their differences are not all zero
            noise = rng.standard_normal((t.size, 1, lat.size, lon.size))
            values = values + UPPER_AIR[name][1] * noise
            data[name] = (("time", "level", "latitude", "longitude"), values.astype(np.float32))
        for name in SURFACE:
            values = expected(name, 0.0, t[:, None, None], lat[None, :, None], lon[None, None, :])
            values = values + SURFACE[name][1] * rng.standard_normal((t.size, lat.size, lon.size))
            data[name] = (("time", "latitude", "longitude"), values.astype(np.float32))
        ds = xr.Dataset(data, coords={"time": START + t * STEP, "level": lev, "latitude": lat,
                                      "longitude": lon}).chunk({"time": 1})
        if first == 0:
            ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
        else:
            ds.to_zarr(path, append_dim="time", zarr_format=2, consolidated=True)


def card(train_frames: int) -> dict:
    """The era5-wb2 card with periods on the store (train, then 8 valid, then 8 test frames)
    and statistics over every training frame (no stride, no cap: they grow with the period)."""
    text = (ROOT / "datasets" / "era5-wb2.toml").read_text()
    out = tomllib.loads(text)

    def at(frame: int) -> str:
        return str(START + frame * STEP)[:16]

    out["periods"] = {
        "train": {"start": at(0), "end": at(train_frames)},
        "valid": {"start": at(train_frames), "end": at(train_frames + 8)},
        "test": {"start": at(train_frames + 8), "end": at(train_frames + 16)}}
    out["stats"] = {**out["stats"], "time_stride": 1, "max_times": 0}
    return out


CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
from bench.forecast.persistence import Persistence
from bench.samples import SampleSettings, load_or_make_samples
from bench.forecast.emulator_train import increment_std
from bench.setup import climatology
from bench.training_truth import mapped_period
from bench.worlds import streaming
from bench.worlds.era5 import ERA5World

card, path, chunk, batch = json.loads(sys.argv[1])
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would start at the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
def rss_anon_mb():  # anonymous resident memory now (heap, not mapped files)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024
stages = {"imports": peak_mb()}
world = ERA5World("era5-wb2", card, path=path)
world.prepare(progress=False)
stages["prepare"] = peak_mb()
layout = world.layout
streaming.CHUNK_BYTES = chunk * 4 * len(layout.names) * layout.shape[1] * layout.shape[2]
spec = world.spec  # the normalisation statistics over every training frame
stages["statistics"] = peak_mb()
frames = world.period("train").sizes["time"]
clim = climatology(world, frames=frames)  # every training frame
stages["climatology"] = peak_mb()
model = Persistence(spec)
for kind, stride in (("nmc", 1), ("truth_minus_forecast", 2)):
    eps = load_or_make_samples(world, model, "persistence",
                               SampleSettings(kind=kind, start_stride=stride, batch_size=batch),
                               progress=False)
    stages[kind] = peak_mb()
# the emulator's and DiffDA's training truth: every frame read (the increments' std) while the
# period is held as training holds it. Mapped file pages count in VmHWM although the kernel
# may drop them at any time, so this stage is measured by the anonymous memory (RssAnon) with
# the period still referenced: what the process itself holds.
truth = mapped_period(world, "train")
increment_std(truth)
held = {"training truth": rss_anon_mb()}
print(json.dumps({"frames": frames, "samples": eps.shape[0], "stages": stages,
                  "held": held, "truth_frames": truth.shape[0]}))
"""


def peak(tmp_path: Path, factor: int) -> dict:
    """Run the stages in a fresh child on a store with ``factor`` × TRAIN_FRAMES training
    frames; its peak RSS after each stage (MB) and the counts."""
    frames = factor * TRAIN_FRAMES
    store = tmp_path / f"era5-{factor}x.zarr"
    write_store(store, frames + EXTRA_FRAMES)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               MALLOC_MMAP_THRESHOLD_=str(128 * 1024),  # glibc's default start (docstring)
               ASSIMBENCH_CACHE=str(tmp_path / f"cache-{factor}x"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    arg = json.dumps([card(frames), str(store), CHUNK_FRAMES, BATCH], default=str)
    child = subprocess.run([sys.executable, "-c", CHILD, arg], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["frames"] == frames
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_peak_memory_does_not_grow_with_the_number_of_training_frames(tmp_path):
    one, four = peak(tmp_path, 1), peak(tmp_path, 4)
    assert four["samples"] > 4 * one["samples"]  # truth − forecast: 38 vs 8 samples
    summary = {"1x": {**one["stages"], **one["held"]}, "4x": {**four["stages"], **four["held"]}}
    print(json.dumps(summary))
    for stage in ("prepare", "statistics", "climatology", "nmc", "truth_minus_forecast"):
        assert four["stages"][stage] <= 1.10 * one["stages"][stage], (stage, summary)
    assert four["truth_frames"] == 4 * one["truth_frames"]
    assert four["held"]["training truth"] <= 1.10 * one["held"]["training truth"], summary


def test_streamed_reductions_equal_the_all_at_once_ones():
    """Chunked reductions (chunks of 3 frames, the last of 1) equal the whole-period ones: the
    ERA5 statistics' channel moments, the climatology's mean frame, the emulator's period and
    its increment std."""
    spec = small_spec()
    ds = InMemoryWorld(spec, advected_trajectory(spec, 40, seed=1) * 3 + 1).period("train")
    whole = spec.to_tensor(ds, normalised=False, dtype=torch.float64)  # (30, C, H, W)
    idx = np.array([0, 2, 3, 7, 11, 12, 20])
    mean, std = streaming.channel_moments(ds, spec.names, idx, chunk=3)
    np.testing.assert_allclose(mean, whole[idx].mean(dim=(0, 2, 3)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, whole[idx].std(dim=(0, 2, 3), correction=0).numpy(),
                               rtol=1e-12)
    clim = streaming.mean_frame(ds, spec, idx, chunk=3)
    torch.testing.assert_close(clim, spec.normalise(whole[idx]).mean(dim=0), rtol=1e-12,
                               atol=1e-12)
    period = streaming.fill(ds, spec, chunk=3)
    torch.testing.assert_close(period, spec.to_tensor(ds), rtol=0, atol=0)
    torch.testing.assert_close(increment_std(period, chunk=4),
                               (period[1:] - period[:-1]).std(dim=(0, 2, 3)), rtol=1e-5, atol=0)
