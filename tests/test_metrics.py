"""Metrics against values computed by hand."""

import numpy as np
import pytest
import torch

from bench import metrics


def test_rmse_weights_latitudes_and_averages_mse_before_the_root():
    w = np.array([0.5, 1.5])  # two latitude rows
    truth = torch.zeros(2, 1, 2, 2)
    forecast = torch.zeros(2, 1, 2, 2)
    forecast[0, 0, 0, :] = 2.0  # time 0: error 2 on the light row -> MSE 0.5*4/2 = 1
    forecast[1, 0, 1, :] = 1.0  # time 1: error 1 on the heavy row -> MSE 1.5*1/2 = 0.75
    assert metrics.rmse(forecast, truth, w).item() == pytest.approx(np.sqrt((1 + 0.75) / 2))
    assert metrics.bias(forecast, truth, w).item() == pytest.approx((0.5 + 0.75) / 2)


def test_acc_is_one_for_scaled_anomalies_and_minus_one_for_flipped():
    rng = np.random.default_rng(0)
    clim = torch.from_numpy(rng.normal(size=(3, 4, 8)))
    anomaly = torch.from_numpy(rng.normal(size=(5, 3, 4, 8)))
    w = np.linspace(0.5, 1.5, 4)
    truth = clim + anomaly
    assert torch.allclose(metrics.acc(clim + 2 * anomaly, truth, clim, w), torch.ones(3,
                          dtype=torch.float64))
    assert torch.allclose(metrics.acc(clim - anomaly, truth, clim, w), -torch.ones(3,
                          dtype=torch.float64))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="latitude weights"):
        metrics.rmse(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), np.ones(3))
    with pytest.raises(ValueError, match="differ"):
        metrics.rmse(torch.zeros(1, 4, 8), torch.zeros(2, 4, 8), np.ones(4))


def test_rmse_agrees_with_xskillscore_weighted_rmse():
    xr = pytest.importorskip("xarray")
    xs = pytest.importorskip("xskillscore")
    rng = np.random.default_rng(4)
    lat = np.linspace(80, -80, 6)
    w = np.cos(np.deg2rad(lat))
    w = w / w.mean()
    forecast = rng.normal(size=(5, 2, 6, 8))
    truth = rng.normal(size=(5, 2, 6, 8))
    dims = ("time", "channel", "lat", "lon")
    f, t = xr.DataArray(forecast, dims=dims), xr.DataArray(truth, dims=dims)
    weights = xr.DataArray(w, dims="lat").broadcast_like(f.isel(time=0, channel=0))
    per_time = xs.rmse(f, t, dim=["lat", "lon"], weights=weights)  # (time, channel)
    ours = metrics.mse_per_time(torch.from_numpy(forecast), torch.from_numpy(truth), w).sqrt()
    np.testing.assert_allclose(ours.numpy(), per_time.values, rtol=1e-12)
    # and the time aggregation: sqrt of the mean MSE
    np.testing.assert_allclose(metrics.rmse(torch.from_numpy(forecast), torch.from_numpy(truth),
                                            w).numpy(),
                               np.sqrt((per_time.values**2).mean(axis=0)), rtol=1e-12)
