"""Observation-space diagnostics of one analysis (bench/innovations.py) and the free forecasts'
references (bench/cycle.free_forecasts)."""

import numpy as np
import torch
from forecast_fixtures import small_spec

from bench.config import ObservationSettings
from bench.innovations import (
    HISTOGRAM_EDGES,
    HISTOGRAM_NAMES,
    N_BINS,
    NAMES,
    histogram_bins,
    innovation_histograms,
    innovation_statistics,
)
from bench.observations import observe
from bench.scorer import CellScores

SPEC = small_spec()


def test_statistics_equal_the_definitions_in_physical_units():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(SPEC.shape, generator=g)
    x_b = truth + 0.5 * torch.randn(SPEC.shape, generator=g)
    x_a = 0.5 * (x_b + truth)
    obs = observe(truth, SPEC, ObservationSettings(density=0.3, noise_fraction=0.1), cycle=0)
    stats = innovation_statistics(obs, x_b, x_a, SPEC)
    assert set(stats) == set(NAMES)
    for c in range(len(SPEC.channels)):
        pick = (obs.channel == c).numpy()
        s = float(SPEC.std[c])
        y = obs.values.double().numpy()[pick]
        hb = obs.operator(x_b.double()).numpy()[pick]
        ha = obs.operator(x_a.double()).numpy()[pick]
        d_b, d_a = (y - hb) * s, (y - ha) * s
        assert stats["obs_count"][c] == pick.sum()
        np.testing.assert_allclose(stats["omb_mean"][c], d_b.mean())
        np.testing.assert_allclose(stats["omb_rms"][c], np.sqrt((d_b ** 2).mean()))
        np.testing.assert_allclose(stats["oma_rms"][c], np.sqrt((d_a ** 2).mean()))
        np.testing.assert_allclose(stats["desroziers_r"][c], (d_a * d_b).mean())
        np.testing.assert_allclose(stats["desroziers_hbh"][c], ((ha - hb) * s * d_b).mean())
        sigma = obs.error_std.double().numpy()[pick] * s
        np.testing.assert_allclose(stats["obs_error_var"][c], (sigma ** 2).mean())


def test_desroziers_recovers_r_and_hbh_with_the_optimal_scalar_gain():
    """Scalar Gaussian toy: background error σ_b, observation error σ_o, analysis with the
    optimal gain k = σ_b² / (σ_b² + σ_o²): E[d_a d_b] = σ_o², E[(Ha − Hb) d_b] = σ_b²."""
    spec = small_spec(channels=("t850",), nlat=64, nlon=128)
    g = torch.Generator().manual_seed(1)
    sb, so = 0.6, 0.3
    truth = torch.zeros(spec.shape)
    x_b = truth + sb * torch.randn(spec.shape, generator=g)
    settings = ObservationSettings(density=1.0, noise_fraction=so)
    obs = observe(truth, spec, settings, cycle=0)  # σ_o = so (spec.std = 1)
    gain = sb ** 2 / (sb ** 2 + so ** 2)
    x_a = x_b + gain * (obs.adjoint(obs.values - obs.operator(x_b)))
    stats = innovation_statistics(obs, x_b, x_a, spec)
    n = stats["obs_count"][0]
    assert n == 64 * 128
    tol = 4 * sb * sb / np.sqrt(n) * 2  # a few standard errors of a product mean
    assert abs(stats["desroziers_r"][0] - so ** 2) < tol
    assert abs(stats["desroziers_hbh"][0] - sb ** 2) < tol
    np.testing.assert_allclose(stats["obs_error_var"][0], so ** 2, rtol=1e-6)


def test_no_observations_give_nan_and_zero_count():
    x = torch.zeros(SPEC.shape)
    obs = observe(x, SPEC, ObservationSettings(density=0.2, channels=("t850",)), cycle=0)
    stats = innovation_statistics(obs, x, x, SPEC)
    assert stats["obs_count"][SPEC.index("z500")] == 0
    assert np.isnan(stats["omb_rms"][SPEC.index("z500")])
    assert stats["obs_count"][SPEC.index("t850")] > 0


def _analysis(seed: int, error: float = 0.8):
    """Truth, a background with an error large enough to fill the outer bins, an analysis
    halfway, and the observations of the truth."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(SPEC.shape, generator=g)
    x_b = truth + error * torch.randn(SPEC.shape, generator=g)
    obs = observe(truth, SPEC, ObservationSettings(density=0.3, noise_fraction=0.1), cycle=seed)
    return obs, x_b, 0.5 * (x_b + truth)


def test_histograms_equal_numpy_histogram_of_the_normalised_innovations():
    obs, x_b, x_a = _analysis(0)
    counts = innovation_histograms(obs, x_b, x_a, SPEC)
    stats = innovation_statistics(obs, x_b, x_a, SPEC)
    edges = np.concatenate([[-np.inf], HISTOGRAM_EDGES, [np.inf]])
    y = obs.values.double().numpy()
    for name, x in (("omb_histogram", x_b), ("oma_histogram", x_a)):
        assert counts[name].shape == (len(SPEC.channels), N_BINS)
        d = y - obs.operator(x.double()).numpy()  # normalised: (y − H x) · std_c / std_c
        for c in range(len(SPEC.channels)):
            pick = (obs.channel == c).numpy()
            np.testing.assert_array_equal(counts[name][c], np.histogram(d[pick], edges)[0])
        np.testing.assert_array_equal(counts[name].sum(1), stats["obs_count"])
    assert counts["omb_histogram"][:, 0].sum() > 0 and counts["omb_histogram"][:, -1].sum() > 0
    centre, lower, upper = histogram_bins()
    assert len(centre) == N_BINS == 42 and np.isneginf(centre[0]) and np.isposinf(centre[-1])
    np.testing.assert_array_equal(lower[1:], upper[:-1])
    np.testing.assert_allclose(centre[1:-1], 0.5 * (lower[1:-1] + upper[1:-1]))
    # a channel without observations: zeros
    only_t = observe(x_b, SPEC, ObservationSettings(density=0.2, channels=("t850",)), cycle=0)
    counts = innovation_histograms(only_t, x_b, x_a, SPEC)["omb_histogram"]
    assert counts[SPEC.index("z500")].sum() == 0
    assert counts[SPEC.index("t850")].sum() == len(only_t)


def test_scorer_sums_histograms_of_the_cycles_after_spinup():
    scores = CellScores(5, SPEC, spinup_cycles=2)
    expected = {name: 0 for name in HISTOGRAM_NAMES}
    for k in range(5):
        obs, x_b, x_a = _analysis(10 + k)
        scores.score_observations(k, obs, x_b, x_a)
        if k >= 2:
            for name, counts in innovation_histograms(obs, x_b, x_a, SPEC).items():
                expected[name] = expected[name] + counts
    times = np.datetime64("2001-01-01", "ns") + np.arange(5) * np.timedelta64(6, "h")
    ds = scores.dataset(times)
    n = scores.per_observed_channel["obs_count"]
    for name in HISTOGRAM_NAMES:
        assert ds[name].dims == ("channel", "innovation_bin")
        np.testing.assert_array_equal(ds[name].values, expected[name])
        np.testing.assert_array_equal(ds[name].sum("innovation_bin").values, n[2:].sum(0))
    assert ds["innovation_bin_upper"].values[-1] == np.inf


def test_free_forecasts_from_truth_are_exact_with_the_exact_model(tmp_path):
    """With the advection model that made the world, the truth-started forecast has zero
    error at every lead; the analysis- and background-started ones do not."""
    from forecast_fixtures import Shift, advected_trajectory

    from bench.config import CycleSettings
    from bench.cycle import TruthWindow, first_background, run_cycles
    from methods.none import NoAssimilation

    traj = advected_trajectory(SPEC, 40, seed=1)
    times = np.datetime64("2001-01-01", "ns") + np.arange(40) * np.timedelta64(6, "h")
    truth = TruthWindow(SPEC.to_dataset(traj, time=times), SPEC, torch.device("cpu"))
    model = Shift(SPEC)
    settings = CycleSettings(days=2, first_lead_hours=12, spinup_cycles=0, forecast_every=4,
                             forecast_hours=24)
    start = first_background(model, truth, settings)
    # a first background with an error, so that the analysis-started forecast has one too
    start.history = start.history + 0.1
    result = run_cycles(NoAssimilation(), model, truth, start, ObservationSettings(density=0.1),
                        settings, traj.mean(0), progress=False)
    f = result.forecasts
    assert np.allclose(f["truth_forecast_rmse"], 0.0, atol=1e-5)
    assert (f["forecast_rmse"] > 1e-3).all() and (f["background_forecast_rmse"] > 1e-3).all()
    # no assimilation: the analysis is the background, so both forecasts are the same
    np.testing.assert_allclose(f["forecast_rmse"], f["background_forecast_rmse"])
    # the cycle hands the run's spin-up to the scorer: histograms of cycles ≥ 3 only
    settings = CycleSettings(days=2, first_lead_hours=12, spinup_cycles=3)
    result = run_cycles(NoAssimilation(), model, truth, start, ObservationSettings(density=0.1),
                        settings, traj.mean(0), progress=False)
    n = result.per_observed_channel["obs_count"][3:].sum(0)
    np.testing.assert_array_equal(result.histograms["omb_histogram"].sum(1), n)
    np.testing.assert_array_equal(result.histograms["oma_histogram"],
                                  result.histograms["omb_histogram"])
