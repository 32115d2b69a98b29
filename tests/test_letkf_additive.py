"""LETKF additive inflation (methods/letkf/additive.py): the pool of training-period 6-hour
forecast errors, its draws, and how the added spread enters the local analyses."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from test_letkf import (
    F64,
    MULTI,
    analyse,
    ensemble,
    kalman,
    moments,
    plain,
    random_obs,
    spec_of,
)
from test_letkf_batches import reference_letkf

from bench.state import StateSpec
from methods.base import Background, TrainingContext
from methods.letkf import LETKF


# ----------------------------------------------------------------------------- 8. additive
def pool_state(spec: StateSpec, size: int, seed: int, channels=None) -> dict:
    """A known pool of ``size`` random fields (float64), nonzero only in ``channels``."""
    eps = torch.randn(size, *spec.shape, generator=torch.Generator().manual_seed(seed),
                      dtype=F64)
    if channels is not None:
        mask = torch.zeros(spec.shape[0], dtype=torch.bool)
        mask[list(channels)] = True
        eps[:, ~mask] = 0.0
    return {"additive_pool": eps, "shape": list(spec.shape), "names": list(spec.names)}


def with_members(background: Background, members: torch.Tensor, cycle: int | None = None
                 ) -> Background:
    """``background`` with its members' backgrounds replaced (and its cycle)."""
    frames = background.members.clone()
    frames[:, -1] = members
    return dataclasses.replace(background, x_b=members.mean(0), members=frames,
                               cycle=background.cycle if cycle is None else cycle)


def added(method: LETKF, state: dict, spec: StateSpec, background: Background
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, picks): what the analysis adds to the members where nothing is observed (N, C, H,
    W), and the pool samples it drew, found as the N distinct samples with D = α (ε_pick −
    mean ε_pick)."""
    none = random_obs(spec, 0, seed=0)
    d = method.load(state, spec, "cpu").analyse(background, none).members.to(F64) \
        - background.member_backgrounds.to(F64)
    eps = state["additive_pool"].reshape(state["additive_pool"].shape[0], -1).to(F64)
    step = (d - d[0]).reshape(d.shape[0], -1) / method.additive_inflation
    for first in range(eps.shape[0]):  # ε_pick_n = ε_pick_0 + (D_n − D_0) / α
        distance = torch.cdist(eps[first] + step, eps)
        if bool((distance.min(1).values < 1e-9).all()):
            return d, distance.argmin(1)
    raise AssertionError("the additive perturbations are not differences of pool samples")


def test_no_additive_inflation_is_the_letkf_without_it_and_fits_nothing():
    """α = 0: fit returns {} without asking for samples, untrained is {}, a pool handed to load
    is ignored: the analysis is the plain LETKF's (the per-column reference loop), bit for bit
    with and without the pool; the memory estimate holds no pool."""
    spec = spec_of(7, 12, ("t850", "z500", "t2m"))
    background = ensemble(spec, 8, seed=21)
    obs = random_obs(spec, 20, seed=22)
    method = plain(members=8, localisation_km=3500.0, inflation=1.2, rtpp=0.5)
    assert method.learns and method.fit(None) == {} and method.untrained(spec) == {}
    bare = analyse(method, spec, background, obs)
    pooled = method.load(pool_state(spec, 16, seed=1), spec, "cpu").analyse(background, obs)
    assert torch.equal(bare.members, pooled.members) and torch.equal(bare.x_a, pooled.x_a)
    expected = reference_letkf(method, spec, background, obs)
    np.testing.assert_allclose(bare.members.reshape(expected.shape).numpy(), expected, rtol=0,
                               atol=1e-10)
    assert bare.diagnostics["spread_additive"] == 0.0
    on = dataclasses.replace(method, additive_inflation=1.0, additive_pool=100)
    c, h, w = spec.shape
    assert on.memory_estimate(spec, 20).model - method.memory_estimate(
        spec, 20).model == 2.0 * 100 * c * h * w


def test_additive_draw_is_centred_distinct_pool_samples_scaled_by_alpha():
    """Nothing observed: the members come back as x_b⁽ⁿ⁾ + α (ε_{j_n} − mean ε_j) for N distinct
    pool samples j; the mean is unchanged; the draw is the same for the same (seed, cycle), bit
    for bit (a new analyser too), and differs between cycles and seeds."""
    spec = spec_of(4, 8)
    n, alpha = 6, 0.7
    background = ensemble(spec, n, seed=23)
    state = pool_state(spec, 15, seed=2)
    method = LETKF(members=n, additive_inflation=alpha, additive_pool=15)
    d, picks = added(method, state, spec, background)
    assert picks.unique().numel() == n
    eps = state["additive_pool"][picks]
    torch.testing.assert_close(d, alpha * (eps - eps.mean(0)), rtol=0, atol=1e-12)
    torch.testing.assert_close(d.mean(0), torch.zeros(spec.shape, dtype=F64), rtol=0,
                               atol=1e-14)
    again, same = added(method, state, spec, background)
    assert torch.equal(again, d) and torch.equal(same, picks)
    later = with_members(background, background.member_backgrounds, cycle=1)
    assert not torch.equal(added(method, state, spec, later)[1], picks)
    other = dataclasses.replace(method, seed=1)
    assert not torch.equal(added(other, state, spec, background)[1], picks)


def test_additive_inflation_adds_the_pool_spread_to_the_prior_of_the_local_analyses():
    """Members spread in t850 only, a pool in z500 only (no cross-covariance): the prior the
    local analyses use has spread² = the members' + α² × the draw's (spread_prior, spread_additive
    diagnostics), the draw's being α² Σ var(ε_pick) / (C G); and the analysis is the plain LETKF
    (with RTPP, relaxing to the inflated prior) of the members plus the draw — the global one
    the Kalman filter with their sample covariance."""
    spec = spec_of(4, 8)
    n, alpha = 8, 1.3
    c, h, w = spec.shape
    background = ensemble(spec, n, seed=24)
    xs = background.member_backgrounds.clone()
    xs[:, 1] = xs[:, 1].mean(0)  # no spread in z500
    background = with_members(background, xs)
    state = pool_state(spec, 12, seed=3, channels=[1])
    obs = random_obs(spec, 10, seed=25)
    settings = {"members": n, "localisation_km": 4000.0, "rtpp": 0.4}
    method = LETKF(additive_inflation=alpha, additive_pool=12, **settings)
    d, picks = added(method, state, spec, background)
    analysis = method.load(state, spec, "cpu").analyse(background, obs)
    diag = analysis.diagnostics
    spread_f2 = float(xs.var(0).mean())
    spread_d2 = alpha**2 * float(state["additive_pool"][picks].var(0).sum()) / (c * h * w)
    assert diag["spread_additive"] ** 2 == pytest.approx(spread_d2, rel=1e-12)
    assert diag["spread_prior"] ** 2 == pytest.approx(spread_f2 + spread_d2, rel=1e-12)
    assert spread_d2 > 0.1 * spread_f2
    inflated = with_members(background, xs + d)
    expected = reference_letkf(plain(**settings), spec, inflated, obs)
    np.testing.assert_allclose(analysis.members.reshape(expected.shape).numpy(), expected,
                               rtol=0, atol=1e-10)
    # the global filter: the Kalman filter with the inflated members' sample covariance
    kalman_settings = {**settings, "localisation_km": math.inf, "rtpp": 0.0, **MULTI}
    globally = LETKF(additive_inflation=alpha, additive_pool=12, **kalman_settings).load(
        state, spec, "cpu").analyse(background, obs)
    mean, cov = moments(globally.members)
    k_mean, k_cov = kalman(inflated, obs)
    torch.testing.assert_close(mean, k_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(cov, k_cov, rtol=0, atol=1e-11)


def test_fit_keeps_an_evenly_spaced_subset_of_six_hour_forecast_errors():
    """fit asks ctx.samples for truth − 6 h forecast samples (one start every additive_stride
    frames) and keeps at most additive_pool of them, evenly spaced, in float16, with the grid's
    layout; untrained makes a pool of the configured size; the cache key depends on whether
    α > 0, not on its value or on analysis settings."""
    spec = spec_of(4, 8)
    calls = []
    eps = torch.randn(50, *spec.shape, generator=torch.Generator().manual_seed(4))

    def samples(kind="nmc", **settings):
        calls.append((kind, settings))
        return eps

    ctx = TrainingContext(spec=spec, model=None, train_truth=lambda: None, samples=samples,
                          device=torch.device("cpu"))
    method = LETKF(additive_inflation=1.0, additive_pool=20)
    state = method.fit(ctx)
    assert calls == [("truth_minus_forecast", {"lead_hours": 6, "start_stride": 4})]
    pool = state["additive_pool"]
    assert pool.dtype == torch.float16 and tuple(pool.shape) == (20, *spec.shape)
    assert torch.equal(pool, eps[torch.arange(20) * 50 // 20].half())
    assert state["shape"] == list(spec.shape) and state["names"] == list(spec.names)
    everything = dataclasses.replace(method, additive_pool=80, additive_stride=2).fit(ctx)
    assert torch.equal(everything["additive_pool"], eps.half()) and calls[-1][1] == {
        "lead_hours": 6, "start_stride": 2}
    random = method.untrained(spec_of(6, 10), seed=3)["additive_pool"]
    assert tuple(random.shape) == (20, 2, 6, 10) and random.float().std() > 0
    key = method.cache_config()
    assert dataclasses.replace(method, additive_inflation=0.3, rtpp=0.9, localisation_km=1e3,
                               seed=4).cache_config() == key
    for changed in ({"additive_inflation": 0.0}, {"additive_pool": 64}, {"additive_stride": 1}):
        assert dataclasses.replace(method, **changed).cache_config() != key


def test_additive_pool_is_checked_at_load_and_an_untrained_one_analyses():
    spec = spec_of(4, 8)
    method = LETKF(members=8, additive_inflation=1.0, additive_pool=16)
    analysis = method.load(method.untrained(spec, seed=1), spec, "cpu").analyse(
        ensemble(spec, 8, seed=26, dtype=torch.float32), random_obs(spec, 6, seed=27))
    assert analysis.members.dtype == torch.float32 and torch.isfinite(analysis.members).all()
    assert analysis.diagnostics["spread_additive"] > 0
    with pytest.raises(ValueError, match="pool"):
        method.load({}, spec, "cpu")
    with pytest.raises(ValueError, match="fewer than"):
        method.load(pool_state(spec, 5, seed=0), spec, "cpu")
    with pytest.raises(ValueError, match="fit on this world"):
        method.load(pool_state(spec_of(4, 6), 16, seed=0), spec, "cpu")
