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
