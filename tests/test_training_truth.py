"""The training period served from a memory-mapped cache file (bench/training_truth.py): the
same values as the in-memory period, built once, never written through, resumable after a kill.
Its bounded memory is measured in tests/test_bounded_memory.py."""

import numpy as np
import pytest
import torch
from forecast_fixtures import InMemoryWorld, advected_trajectory, small_spec

from bench import cache, resumable
from bench.training_truth import TRUTH_FILE, mapped_period, truth_entry
from bench.worlds import streaming


@pytest.fixture
def world():
    spec = small_spec()
    return InMemoryWorld(spec, advected_trajectory(spec, 48, seed=2) * 2 + 1)


def test_the_mapped_period_equals_the_filled_one_and_is_built_once(world, isolated_cache,
                                                                   monkeypatch):
    expected = streaming.fill(world.period("train"), world.spec)
    truth = mapped_period(world, "train")
    assert truth.dtype == torch.float32 and truth.shape == expected.shape == (36, *world.spec.shape)
    assert torch.equal(truth, expected)
    entry = truth_entry(world, "train")
    assert cache.read_marker(entry)["frames"] == 36
    assert not resumable.partial_dir(entry).exists(), "the partial folder goes once complete"

    def no_reads(*args, **kwargs):
        raise AssertionError("a complete entry is loaded, not rebuilt")

    monkeypatch.setattr(streaming, "read", no_reads)
    again = mapped_period(world, "train")
    assert torch.equal(again, expected)
    # copy-on-write: a caller writing into its tensor never changes the cache file
    again[0] += 1.0
    on_disk = np.load(entry / TRUTH_FILE)
    np.testing.assert_array_equal(on_disk, expected.numpy())
    # another period, or another normalisation, is another entry
    assert truth_entry(world, "valid") != entry


def test_a_killed_build_resumes_with_the_chunks_it_had_not_written(world, isolated_cache,
                                                                   monkeypatch):
    frame = 4 * len(world.spec.names) * world.spec.shape[1] * world.spec.shape[2]
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 5 * frame)  # 36 frames: 8 chunks
    real_read, calls = streaming.read, []

    def dies_after_three(ds, spec, idx, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(int(idx[0]))
        return real_read(ds, spec, idx, *args, **kwargs)

    monkeypatch.setattr(streaming, "read", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        mapped_period(world, "train")
    assert cache.read_marker(truth_entry(world, "train")) is None
    assert calls == [0, 5, 10]

    calls.clear()
    monkeypatch.setattr(streaming, "read", lambda ds, spec, idx, *a, **k: (
        calls.append(int(idx[0])), real_read(ds, spec, idx, *a, **k))[1])
    truth = mapped_period(world, "train")
    assert calls == [15, 20, 25, 30, 35], "only the chunks not written before the kill"
    assert torch.equal(truth, streaming.fill(world.period("train"), world.spec))
