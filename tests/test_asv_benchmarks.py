"""The asv benchmarks run for every registered method (a benchmark that raises is a hole in the
recorded history: DiffDA's skill track broke unnoticed when DiffDA began to need the training
context's sample_targets), and the history script refuses a bad revision before any run."""

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(ROOT))
    try:
        yield importlib.import_module("benchmarks.benchmarks")
    finally:
        sys.path.remove(str(ROOT))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_skill_track_runs_for_every_registered_method(benchmarks, name):
    rmse = benchmarks.Skill().track_analysis_rmse(name)
    # normalised RMSE of smooth unit-variance-ish fields: finite, positive, and no worse than
    # twice the no-assimilation control (a method that blows up here is a regression too)
    control = benchmarks.Skill().track_analysis_rmse("none")
    assert np.isfinite(rmse) and 0 < rmse < 2 * control, (name, rmse, control)


def test_record_history_refuses_an_unknown_revision_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "record_history.py"),
                             "--machine", "test", "HEAD", "no-such-revision"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: commit 'no-such-revision': expected a git revision of {ROOT} (e.g. HEAD~1, "
        "a hash, a branch); see `git log --oneline`"]
    assert not (ROOT / "results" / "asv" / "test").exists()  # nothing recorded, nothing written


@pytest.mark.parametrize("name", ["none", "interp"])
def test_reference_unit_tracks_run(benchmarks, name):
    """The load-robust tracks run (every method shares ``Analysis``'s setup, which the skill
    test above does not call): a positive, finite number of reference kernels."""
    case = benchmarks.AnalysisInReferenceUnits()
    case.setup(name)
    assert 0 < case.track_analyse(name) < 100
    step = benchmarks.EmulatorStepInReferenceUnits()
    step.setup()
    assert 0 < step.track_step() < 100


def test_no_module_level_function_looks_like_a_benchmark_to_asv(benchmarks):
    """asv runs every module-level name starting with a benchmark prefix as a benchmark: a
    helper imported as ``time_in_reference_units`` was recorded as a failing benchmark."""
    prefixes = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
    assert [n for n in vars(benchmarks) if n.startswith(prefixes)] == []
