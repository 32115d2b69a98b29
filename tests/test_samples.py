"""Background-error samples, checked in closed form with models whose forecasts are known."""

import pytest
import torch
from forecast_fixtures import Shift, advected_trajectory, small_spec

from bench.forecast.persistence import Persistence
from bench.forecast.skill import lead_time_rmse
from bench.samples import SampleSettings, make_samples


def test_nmc_with_persistence_is_the_24h_tendency():
    spec = small_spec()
    truth = torch.randn(40, *spec.shape)
    settings = SampleSettings(kind="nmc", start_stride=2)
    got = make_samples(Persistence(spec), truth, settings, progress=False)
    # 48 h forecast from i is x_i, 24 h forecast from i + 4 is x_{i+4}: ε = x_i − x_{i+4}
    starts = list(range(1, 40 - 8, 2))
    want = torch.stack([truth[i] - truth[i + 4] for i in starts])
    torch.testing.assert_close(got, want)


def test_truth_minus_forecast_with_persistence_and_with_the_exact_model():
    spec = small_spec()
    truth = advected_trajectory(spec, 30, seed=0)
    settings = SampleSettings(kind="truth_minus_forecast", lead_hours=12, start_stride=3)
    got = make_samples(Persistence(spec), truth, settings, progress=False)
    starts = list(range(1, 30 - 2, 3))
    torch.testing.assert_close(got, torch.stack([truth[i + 2] - truth[i] for i in starts]))
    exact = make_samples(Shift(spec), truth, settings, progress=False)
    assert exact.abs().max() < 1e-6
    nmc = make_samples(Shift(spec), truth, SampleSettings(kind="nmc"), progress=False)
    assert nmc.abs().max() < 1e-6


def test_sample_settings_are_validated():
    with pytest.raises(ValueError, match="unknown sample kind"):
        SampleSettings(kind="ensemble")
    with pytest.raises(ValueError, match="multiple of 6"):
        SampleSettings(lead_hours=10)
    with pytest.raises(ValueError, match="long_hours > short_hours"):
        SampleSettings(long_hours=24, short_hours=48)


def test_lead_time_rmse_of_persistence_equals_its_persistence_column():
    spec = small_spec()
    truth = advected_trajectory(spec, 40, seed=3)
    table = lead_time_rmse(Persistence(spec), truth, truth.mean(0), leads_hours=(6, 24))
    torch.testing.assert_close(torch.tensor(table["model"].values),
                               torch.tensor(table["persistence"].values))
    exact = lead_time_rmse(Shift(spec), truth, truth.mean(0), leads_hours=(6, 24))
    assert exact["model"].max() < 1e-5 < exact["persistence"].min()
