"""Shared test settings: one torch thread (2-core CI), an isolated cache per session."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point ASSIMBENCH_CACHE at a fresh folder so tests never touch a user's cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ASSIMBENCH_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """A tiny FengWu release folder: fengwu.onnx (138 -> 138 channels, 9 x 16) and the
    release's two statistics files (tests/test_fengwu.py, tests/test_fengwu_setup.py)."""
    import numpy as np
    import tiny_onnx
    from test_fengwu import release_stats

    folder = tmp_path_factory.mktemp("release")
    mean, std = release_stats()
    np.save(folder / "data_mean.npy", mean)
    np.save(folder / "data_std.npy", std)
    tiny_onnx.export_tiny(folder / "fengwu.onnx")
    return folder
