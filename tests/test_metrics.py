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
