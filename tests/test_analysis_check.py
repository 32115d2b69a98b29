"""The one-analysis check (bench/experiments/check.py) on a small advected world.

The cases must hold the errors they claim to (truth − forecast, or the NMC difference that
bench/samples.py makes for the same start), and the ratio must be 1 for no assimilation and
near 0 where dense exact observations are fitted."""

import numpy as np
import pytest
import torch
from forecast_fixtures import Shift, advected_trajectory, small_spec

from bench.config import ObservationSettings
from bench.experiments.check import cases, error_ratios, summary
from bench.forecast.persistence import Persistence
from bench.samples import SampleSettings, make_samples
from methods.interp import Interpolation
from methods.none import NoAssimilation

SPEC = small_spec()


@pytest.fixture(scope="module")
def trajectory():
    truth = advected_trajectory(SPEC, 60, seed=3)
    times = np.datetime64("2001-01-01", "ns") + np.arange(60) * np.timedelta64(6, "h")
    return truth, times


def test_forecast_cases_hold_truth_minus_forecast(trajectory):
    truth, times = trajectory
    model = Persistence(SPEC)
    found = cases(model, truth, times, "forecast", lead_hours=12, starts=5)
    assert len(found) == 5 and all(c.lead_hours == 12 for c in found)
    for c in found:
        i = int(np.nonzero(times == c.valid_time)[0][0])
        assert torch.equal(c.x_true, truth[i])
        assert torch.equal(c.x_b, truth[i - 2])  # persistence: the state 12 h earlier
        # the frames a cycle would hold: the forecast's own, ending in x_b (methods/base)
        assert torch.equal(c.history[-1], c.x_b) and torch.equal(c.history[0], truth[i - 2])


def test_nmc_cases_hold_the_samples_nmc_differences(trajectory):
    """x_true − x_b is exactly what bench/samples.py calls the NMC sample of that start."""
    truth, times = trajectory
    model = Shift(SPEC)
    # a model with an error: the shift is exact, so perturb it with a drift per step
    model._step = lambda frames: frames[:, -1].roll(1, dims=-1) * 0.97 + 0.05
    found = cases(model, truth, times, "nmc", lead_hours=48, starts=4)
    samples = make_samples(model, truth, SampleSettings(kind="nmc", start_stride=1),
                           progress=False)
    for c in found:
        i = int(np.nonzero(times == c.valid_time)[0][0]) - 8  # the 48 h forecast's start
        start_index = i - (model.history - 1)  # samples start at frame history − 1
        assert torch.allclose(c.x_true - c.x_b, samples[start_index].float(), atol=1e-5)
        assert c.lead_hours == 24


def test_no_assimilation_has_ratio_one_and_dense_exact_obs_near_zero(trajectory):
    truth, times = trajectory
    found = cases(Persistence(SPEC), truth, times, "forecast", lead_hours=24, starts=3)
    # neither learns: the grid is all they read
    methods = {name: m.load({}, SPEC, "cpu") for name, m in (("none", NoAssimilation()),
                                                             ("interp", Interpolation()))}
    table = error_ratios(methods, found, SPEC, (1.0,),
                         ObservationSettings(density=1.0, noise_fraction=0.0))
    none = table[table.method == "none"]
    assert np.allclose(none.ratio, 1.0)
    assert (none.background_rmse > 0).all()
    assert (table[table.method == "interp"].ratio < 1e-6).all()
    wide = summary(table, ("z500", "t850", "nosuch"))
    assert list(wide.columns) == ["method", "density", "z500", "t850", "all"]
    assert np.isclose(float(wide.loc[wide.method == "none", "all"].iloc[0]), 1.0)


def test_too_short_a_period_is_a_clear_error(trajectory):
    truth, times = trajectory
    with pytest.raises(ValueError, match="hold no 240 h case"):
        cases(Persistence(SPEC), truth[:20], times[:20], "forecast", lead_hours=240, starts=2)
    with pytest.raises(ValueError, match="errors='oops'"):
        cases(Persistence(SPEC), truth, times, "oops", lead_hours=6, starts=2)



def test_check_command_refuses_bad_input_in_one_line(capsys, isolated_cache):
    from bench.cli import main

    for args, expected in [(["--errors", "oops"], "--errors oops: expected one of forecast, nmc"),
                           (["--starts", "0"], "--starts 0"),
                           (["--lead-hours", "7"], "--lead-hours 7"),
                           (["--methods", "none,nosuch"],
                            "--methods nosuch: expected a registered method")]:
        assert main(["check", "--methods", "none", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert expected in err and err.count("\n") == 0, (args, err)
    assert not isolated_cache.exists(), "bad input must write nothing"


def test_run_check_fits_methods_and_writes_the_tables(tmp_path, monkeypatch, isolated_cache):
    from forecast_fixtures import persistence_setup

    from bench import setup
    from bench.config import CycleSettings, ObservationSettings, RunConfig
    from bench.experiments.check import run_check

    cfg = RunConfig(methods=("none", "interp"), densities=(0.5,),
                    observations=ObservationSettings(noise_fraction=0.0),
                    cycle=CycleSettings(days=1, spinup_cycles=2))
    monkeypatch.setattr(setup, "setup", lambda cfg, progress=True: persistence_setup(cfg))
    wide, paths = run_check(cfg, tmp_path / "out", errors="forecast", lead_hours=12, starts=3,
                            command="python -m bench check …", progress=False)
    ratio = dict(zip(wide.method, wide["all"], strict=True))
    assert ratio["none"] == pytest.approx(1.0) and ratio["interp"] < 0.9
    assert {p.name for p in paths} == {"analysis_check.md", "analysis_check.csv",
                                       "analysis_check.tex", "analysis_check_channels.csv"}
    assert "python -m bench check …" in (tmp_path / "out" / "analysis_check.md").read_text()
