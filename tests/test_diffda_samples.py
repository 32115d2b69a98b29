"""DiffDA trains from the harness's cached truth − forecast samples (methods/diffda/train.py):
sample k maps to its truth frame by bench.samples_forecast.sample_targets, and (x_t − d, x_t)
reproduces the in-memory forecast_pairs the fit used before, to float32 round-off.

The tiny world: smooth fields advected on an 8 × 16 grid, forecast by a nonlinear two-frame
model (so that x_t − (x_t − x̂) ≠ x̂ bit for bit somewhere).
"""

import dataclasses

import numpy as np
import pytest
import torch
from diffda_fixtures import in_memory_samples
from forecast_fixtures import advected_trajectory, small_spec

from bench.forecast.base import ForecastModel
from bench.samples import SampleSettings
from bench.samples_forecast import make_samples, sample_starts, sample_targets, steps
from methods.base import TrainingContext
from methods.diffda import DiffDA
from methods.diffda.train import IncrementPairs, forecast_pairs, training_increments


class TwoFrame(ForecastModel):
    """x_{t+6h} = 0.9 x_t + 0.1 tanh(x_{t−6h}) − 0.3 (elementwise: batch-size independent)."""

    def __init__(self, spec):
        self.spec, self.history, self.device = spec, 2, torch.device("cpu")

    def _step(self, frames):
        return 0.9 * frames[:, -1] + 0.1 * torch.tanh(frames[:, -2]) - 0.3


@pytest.fixture(scope="module")
def tiny():
    spec = small_spec(nlat=8, nlon=16)
    truth = advected_trajectory(spec, 60, seed=0).float()
    return spec, truth, TwoFrame(spec)


def times_of(n: int) -> np.ndarray:
    return np.datetime64("2001-03-01", "ns") + np.arange(n) * np.timedelta64(6, "h")


def context(spec, truth, model, samples) -> TrainingContext:
    """The tiny world's context serving ``samples`` (None: made in memory) and the truth frame
    of each sample."""
    in_memory, targets = in_memory_samples(model, truth)
    return TrainingContext(spec=spec, model=model, train_truth=lambda: truth,
                           samples=samples or in_memory, sample_targets=targets,
                           device=torch.device("cpu"), seed=0, progress=False)


def mapped(tmp_path, name: str, array: torch.Tensor) -> torch.Tensor:
    """``array`` served as the cache serves samples: a copy-on-write memory map."""
    np.save(tmp_path / name, array.numpy())
    return torch.from_numpy(np.load(tmp_path / name, mmap_mode="c"))


# ------------------------------------------------------------------------- target indices
@pytest.mark.parametrize("settings", [
    SampleSettings("truth_minus_forecast", lead_hours=6, start_stride=1),
    SampleSettings("truth_minus_forecast", lead_hours=48, start_stride=3, days=5),
    SampleSettings("truth_minus_forecast", lead_hours=24, start_stride=2, max_samples=7),
    SampleSettings("nmc", long_hours=48, short_hours=24, start_stride=4)])
def test_sample_targets_are_each_samples_valid_time(settings):
    times = times_of(60)
    starts = sample_starts(times, settings, history=2)
    targets = sample_targets(times, settings, history=2)
    assert targets.dtype == np.int64 and targets.shape == starts.shape
    np.testing.assert_array_equal(targets, starts + settings.lead_hours // 6
                                  if settings.kind != "nmc" else starts + 8)
    assert targets.max() < len(times)  # no sample reads past the window
    assert steps(settings)[0] == (targets - starts)[0]


def test_each_sample_is_truth_at_its_target_minus_the_forecast_from_its_start(tiny):
    """Direct check of the mapping, with a window and a cap that forecast_pairs never had."""
    spec, truth, model = tiny
    settings = SampleSettings("truth_minus_forecast", lead_hours=12, start_stride=2, days=10,
                              max_samples=9, batch_size=4)
    times = times_of(truth.shape[0])
    d = make_samples(model, truth, settings, progress=False, times=times)
    starts = sample_starts(times, settings, 2)
    targets = sample_targets(times, settings, 2)
    forecast = model.rollout(torch.stack([truth[i - 1:i + 1] for i in starts]), 2)[:, -1]
    assert torch.equal(d, truth[targets] - forecast)


# ------------------------------------------------------------- pairs against forecast_pairs
@pytest.mark.parametrize("lead_steps,stride", [(1, 1), (8, 2), (3, 5)])
def test_pairs_reproduce_forecast_pairs(tiny, lead_steps, stride):
    spec, truth, model = tiny
    forecasts, target = forecast_pairs(model, truth, lead_steps, stride)
    pairs = training_increments(context(spec, truth, model, None), truth, 6 * lead_steps,
                                stride)
    assert torch.equal(pairs.target, target)  # the same starts, the same truth frames
    assert torch.equal(pairs.increments, truth[target] - forecasts)  # d bit for bit
    x_hat, d = pairs.batch(torch.arange(len(pairs)))
    assert torch.equal(d, truth[target] - forecasts)
    # x̂ = x_t − d: float32 round-off only, two roundings (u = eps / 2 each), elementwise
    bound = torch.finfo(torch.float32).eps / 2 * (d.abs() + forecasts.abs())
    assert torch.all((x_hat - forecasts).abs() <= bound)
    assert not torch.equal(x_hat, forecasts)  # … which the fit's cache key accounts for
    scale = pairs.scale()
    torch.testing.assert_close(scale, (truth[target] - forecasts).std(dim=(0, 2, 3)),
                               rtol=1e-5, atol=0)


def test_fit_reads_the_cached_samples_and_matches_the_in_memory_ones(tiny, tmp_path):
    """ctx.samples (memory-mapped) is asked for the whole period's samples of each lead and
    stride; the fit equals, bit for bit, the fit on samples made in memory (ctx.samples None)
    and on increments taken from forecast_pairs."""
    spec, truth, model = tiny
    method = DiffDA.for_tests(leads_hours=(6, 12), start_stride=2, train_steps=6)
    calls = []

    def samples(kind, **kw):
        calls.append((kind, kw))
        settings = dataclasses.replace(SampleSettings(kind), **kw)
        return mapped(tmp_path, f"{kw['lead_hours']}.npy",
                      make_samples(model, truth, settings, progress=False))

    cached = method.fit(context(spec, truth, model, samples))
    assert calls == [("truth_minus_forecast", dict(lead_hours=h, start_stride=2, days=0))
                     for h in (6, 12)]
    in_memory = method.fit(context(spec, truth, model, None))
    for a, b in zip(cached["models"], in_memory["models"], strict=True):
        assert torch.equal(a["scale"], b["scale"]) and a["losses"] == b["losses"]
        assert all(torch.equal(v, b["state"][k]) for k, v in a["state"].items())
    forecasts, target = forecast_pairs(model, truth, 1, 2)
    assert cached["models"][0]["n_pairs"] == len(target)
    reference = mapped(tmp_path, "ref.npy", truth[target] - forecasts)

    def from_pairs(kind, **kw):
        return reference if kw["lead_hours"] == 6 else samples(kind, **kw)

    again = method.fit(context(spec, truth, model, from_pairs))
    assert all(torch.equal(v, again["models"][0]["state"][k])
               for k, v in cached["models"][0]["state"].items())


def test_increments_stay_memory_mapped_and_batches_gather_rows(tiny, tmp_path):
    spec, truth, model = tiny
    d = make_samples(model, truth, SampleSettings("truth_minus_forecast", lead_hours=6,
                                                  start_stride=1, days=0), progress=False)
    served = mapped(tmp_path, "d.npy", d)
    pairs = training_increments(context(spec, truth, model, lambda kind, **kw: served), truth,
                                6, 1)
    assert pairs.increments is served  # not copied
    pick = torch.tensor([5, 0, 5, len(pairs) - 1])
    x_hat, inc = pairs.batch(pick)
    assert torch.equal(inc, d[pick]) and torch.equal(x_hat, truth[pairs.target[pick]] - d[pick])


# ------------------------------------------------------------------------------- known prior
def test_known_prior_pairs_are_truth_plus_draws(tiny, tmp_path):
    spec, truth, model = tiny
    eps = mapped(tmp_path, "eps.npy", 0.1 * torch.randn(7, *spec.shape,
                                                         generator=torch.Generator().manual_seed(1)))
    target = (torch.arange(7) * 3) % truth.shape[0]
    x_hat, d = IncrementPairs(eps, truth, target, sign=-1.0).batch(torch.arange(7))
    assert torch.equal(x_hat, truth[target] + eps) and torch.equal(d, -eps)
    method = DiffDA.for_tests(training_samples="known_prior", known_prior_count=7,
                              start_stride=3, train_steps=3)
    state = method.fit(context(spec, truth, model, lambda kind, count: eps[:count]))
    assert state["models"][0]["n_pairs"] == 7
    torch.testing.assert_close(state["models"][0]["scale"], eps.std(dim=(0, 2, 3)),
                               rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------- cache key
def test_the_samples_fit_has_its_own_cache_key():
    """The fit changed at float32 round-off (x̂ = x_t − d): entries cached without
    ``fit_version`` must not be served for it."""
    method = DiffDA()
    assert method.cache_config()["fit_version"] == 2
    assert "fit_version" not in DiffDA.keyed_when_set + DiffDA.analysis_fields
    with pytest.raises(ValueError, match="fit_version"):
        DiffDA(fit_version=1)
