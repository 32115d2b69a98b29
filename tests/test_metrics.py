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


def _crps_by_pairs(members, truth):
    """The fair CRPS straight from its definition, O(N²) pairs, per grid value."""
    n = members.shape[0]
    skill = (members - truth[None]).abs().mean(dim=0)
    pairs = (members[:, None] - members[None, :]).abs().sum(dim=(0, 1))
    return skill - pairs / (2 * n * (n - 1))


def test_fair_crps_equals_its_definition_and_properscoring_up_to_the_finite_n_term():
    import properscoring

    from bench.metrics import crps_fair

    g = torch.Generator().manual_seed(3)
    members = torch.randn(7, 2, 4, 8, generator=g, dtype=torch.float64)
    truth = torch.randn(2, 4, 8, generator=g, dtype=torch.float64)
    w = np.ones(4)
    expected = _crps_by_pairs(members, truth).mean(dim=(-2, -1))
    torch.testing.assert_close(crps_fair(members, truth, w), expected)
    # properscoring's ensemble CRPS divides the pair sum by 2N² instead of 2N(N − 1)
    n = members.shape[0]
    ps = properscoring.crps_ensemble(truth.numpy(), np.moveaxis(members.numpy(), 0, -1))
    pair_sum = (members[:, None] - members[None, :]).abs().sum(dim=(0, 1)).numpy()
    fair = ps + pair_sum / (2 * n * n) - pair_sum / (2 * n * (n - 1))
    np.testing.assert_allclose(crps_fair(members, truth, w).numpy(), fair.mean(axis=(-2, -1)))


def test_fair_crps_is_unbiased_for_a_gaussian_truth_draw():
    """E[fair CRPS] of N members from N(0, 1) against y ~ N(0, 1) is the CRPS of N(0, 1)
    against itself, 1/√π, for any N (the finite-N estimator has no N-dependent bias)."""
    from bench.metrics import crps_fair

    g = torch.Generator().manual_seed(4)
    for n in (2, 5):
        members = torch.randn(n, 1, 200, 200, generator=g, dtype=torch.float64)
        truth = torch.randn(1, 200, 200, generator=g, dtype=torch.float64)
        value = float(crps_fair(members, truth, np.ones(200)))
        assert abs(value - 1 / np.sqrt(np.pi)) < 0.01, (n, value)
