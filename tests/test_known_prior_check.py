"""`check --errors known-prior` end to end on the small persistence world, and the
"known_prior" samples that methods learn from (bench/samples.py, TrainingContext.samples)."""

import numpy as np
import pytest
import torch
from forecast_fixtures import persistence_setup

from bench import setup
from bench.config import CycleSettings, ObservationSettings, RunConfig
from methods.common.covariance import BMatrix, known_prior


def _cfg(methods=("none", "interp", "3dvar")):
    return RunConfig(methods=methods, densities=(0.5,),
                     observations=ObservationSettings(noise_fraction=0.1),
                     cycle=CycleSettings(days=1, spinup_cycles=2))


@pytest.fixture
def small(monkeypatch, isolated_cache):
    monkeypatch.setattr(setup, "setup", lambda cfg, progress=True: persistence_setup(cfg))
    return persistence_setup(_cfg())


def test_known_prior_samples_are_draws_from_the_check_b_and_cached(small):
    from bench.samples import SampleSettings, known_prior_statistics, samples_entry

    s = small
    eps = setup.samples(s, "known_prior", progress=False, count=12)
    assert eps.shape == (12, *s.world.spec.shape) and eps.dtype == torch.float32
    b = BMatrix(s.world.spec, known_prior_statistics(s.world, s.model, s.model_key,
                                                      progress=False))
    expected = known_prior.draw(b, 12, known_prior.TRAIN, seed=0)
    np.testing.assert_array_equal(eps.numpy(), expected)
    # nested: the first 5 of 12 are the 5; cached under a key that holds the count
    assert torch.equal(setup.samples(s, "known_prior", progress=False, count=5), eps[:5])
    assert samples_entry(s.world, s.model_key, SampleSettings("known_prior", count=5)) != \
        samples_entry(s.world, s.model_key, SampleSettings("known_prior", count=12))
    # other kinds' keys do not depend on count (earlier caches stay valid)
    assert samples_entry(s.world, s.model_key, SampleSettings("nmc", count=5)) == \
        samples_entry(s.world, s.model_key, SampleSettings("nmc"))
    with pytest.raises(ValueError, match="count"):
        SampleSettings("known_prior", count=0)


def test_methods_fit_on_known_prior_samples_and_keep_their_default_cache_keys(small):
    from methods.diffda import DiffDA
    from methods.threedvar import ThreeDVar
    from methods.vaevar import VAEVar

    s = small
    for method in (ThreeDVar(training_samples="known_prior", known_prior_count=40),
                   VAEVar.for_tests(training_samples="known_prior", known_prior_count=20),
                   DiffDA.for_tests(training_samples="known_prior", known_prior_count=10)):
        state = method.fit(setup.training_context(s, method, progress=False))
        assert state, type(method).__name__
        assert method.cache_config()["known_prior_count"] == method.known_prior_count
    assert VAEVar.for_tests(training_samples="known_prior",
                            known_prior_count=20).fit(setup.training_context(
                                s, VAEVar.for_tests(), progress=False))["n_samples"] == 20
    for default in (ThreeDVar(), VAEVar(), DiffDA()):
        assert "known_prior_count" not in default.cache_config()
    assert "training_samples" not in ThreeDVar().cache_config()
    assert "training_samples" in VAEVar().cache_config()  # an older field: key unchanged


def test_check_known_prior_writes_ratios_to_the_background_and_to_the_optimum(small, tmp_path):
    import pandas as pd

    from bench.experiments.check import run_check

    wide, paths = run_check(_cfg(), tmp_path / "out", errors="known-prior", lead_hours=6,
                            starts=3, command="python -m bench check …", progress=False)
    ratio = dict(zip(wide.method, wide["all"], strict=True))
    to_opt = dict(zip(wide.method, wide["all_to_optimum"], strict=True))
    assert set(ratio) == {"none", "interp", "3dvar", "3dvar (true B)"}
    assert ratio["none"] == pytest.approx(1.0)
    assert to_opt["3dvar (true B)"] == pytest.approx(1.0)
    assert ratio["3dvar (true B)"] < 0.9  # half the points observed, σ_o = 0.1
    for name in ("none", "interp", "3dvar"):  # 3 draws: a little noise allowed
        assert to_opt[name] > 0.97, (name, to_opt)
    assert {p.name for p in paths} == {
        f"analysis_check{s}.{e}" for s in ("", "_optimum") for e in ("md", "csv", "tex")
    } | {"analysis_check_channels.csv"}
    text = (tmp_path / "out" / "analysis_check_optimum.md").read_text()
    assert "python -m bench check …" in text and "3dvar (true B)" in text
    channels = pd.read_csv(tmp_path / "out" / "analysis_check_channels.csv", comment="#")
    assert {"ratio", "ratio_to_optimum"} <= set(channels.columns)


def test_the_cli_accepts_known_prior(capsys, isolated_cache):
    from bench.cli import main

    assert main(["check", "--methods", "none", "--errors", "oops"]) == 2
    assert "known-prior" in capsys.readouterr().err
