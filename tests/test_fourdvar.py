"""4DVar (methods/fourdvar): its gradient and Gauss–Newton Hessian, its reduction to 3DVar on a
window of one time, what later observations do, and its refusal of a window without a model.
The method contract is tests/test_method_contract.py (``-k 4dvar``); the emulator's adjoint is
tests/test_emulator_adjoint.py."""

import numpy as np
import pytest
import torch
from forecast_fixtures import Shift, advected_trajectory, small_spec
from test_emulator_adjoint import random_emulator

from bench.config import ObservationSettings
from bench.experiments.synthetic import synthetic_spec
from bench.forecast.emulator import EmulatorConfig
from bench.forecast.persistence import Persistence
from bench.observations import observe
from methods import METHODS
from methods.base import Background, Observations, ObservationWindow
from methods.fourdvar import FourDVar
from methods.fourdvar.cost import WindowCost
from methods.threedvar import ThreeDVar

SPEC = small_spec(nlat=8, nlon=16)  # t850, z500, u850


class DifferentiableShift(Shift):
    """The advection of ``advected_trajectory`` (x moves one cell east per 6 h): a perfect,
    linear model that moves features."""

    differentiable = True


def background_of(history: torch.Tensor) -> Background:
    return Background(history[-1].clone(), history, np.datetime64("2001-01-01"), 6, 0)


def empty(obs: Observations) -> Observations:
    """No observations, on ``obs``'s grid."""
    return Observations(obs.values[:0], obs.error_std[:0], obs.channel[:0],
                        obs.flat_index[:0], obs.weights[:0], obs.lat[:0], obs.lon[:0],
                        obs.grid_shape)


def observations(truth: torch.Tensor, density: float, noise: float = 0.01, cycle: int = 0):
    return observe(truth, SPEC, ObservationSettings(density=density, noise_fraction=noise),
                   cycle=cycle)


def window_cost(model, history, offsets, seed=0):
    """A WindowCost of observations (density 0.3, 1 % noise) of random states at ``offsets``
    and the default FourDVar's B (synthetic statistics)."""
    method = FourDVar()
    g = torch.Generator().manual_seed(seed)
    window = ObservationWindow(tuple(
        (o, observations(torch.randn(SPEC.shape, generator=g), 0.3, cycle=k))
        for k, o in enumerate(offsets)), model=model)
    b = method.load(method.untrained(SPEC, seed), SPEC, "cpu").b
    return WindowCost(b, window, background_of(history), method.min_obs_error), b


# ----------------------------------------------------------------------------- gradient, Hessian
def test_gradient_taylor_test_through_two_emulator_steps():
    """J(w + εδ) − J(w) − ε ∇J(w)·δ = O(ε²), through a 12-h window (2 steps) of a small random
    emulator run in float64 (a float64 history keeps the model in float64)."""
    model = random_emulator(True, spec=SPEC, config=EmulatorConfig(width=8, blocks=1))
    g = torch.Generator().manual_seed(1)
    history = torch.randn(2, *SPEC.shape, generator=g, dtype=torch.float64)
    cost, b = window_cost(model, history, (0, 6, 12))
    w = 0.3 * torch.randn(b.shape_w, generator=g, dtype=torch.float64)
    delta = torch.randn(b.shape_w, generator=g, dtype=torch.float64)
    lin = cost.linearise(w)
    j0, slope = cost.evaluate(w)[0], float((lin.gradient * delta).sum())
    assert lin.cost == pytest.approx(j0, rel=1e-12)
    eps = np.array([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    remainders = np.array([abs(cost.evaluate(w + e * delta)[0] - j0 - e * slope) for e in eps])
    assert (remainders < 1e-2 * np.abs(slope) * eps).all()
    slopes = np.diff(np.log(remainders)) / np.diff(np.log(eps))
    assert np.all(np.abs(slopes - 2) < 0.1), slopes
    # the Gauss–Newton Hessian is symmetric (tangent-linear and adjoint agree)
    u, v = (torch.randn(b.shape_w, generator=g, dtype=torch.float64) for _ in range(2))
    uav, vau = float((u * lin.hessian(v)).sum()), float((v * lin.hessian(u)).sum())
    assert uav == pytest.approx(vau, rel=1e-10)
    assert cost.passes["forward"] == 2 * (1 + 1 + len(eps))  # linearise + evaluate(w) + Taylor


def test_hessian_is_exact_for_a_linear_model():
    """With a linear model J is quadratic: ∇J(w + δ) − ∇J(w) = A δ."""
    truth = advected_trajectory(SPEC, 2, seed=2).double()
    cost, b = window_cost(DifferentiableShift(SPEC), truth, (0, 6, 12))
    g = torch.Generator().manual_seed(3)
    w, delta = (torch.randn(b.shape_w, generator=g, dtype=torch.float64) for _ in range(2))
    lin = cost.linearise(w)
    torch.testing.assert_close(cost.linearise(w + delta).gradient - lin.gradient,
                               lin.hessian(delta), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- 3DVar limit
def test_window_of_offset_zero_alone_is_threedvar():
    spec = synthetic_spec(16, 32, 13)  # winds at two levels: U_p's vector SHT and balance
    g = torch.Generator().manual_seed(4)
    x_b = torch.randn(spec.shape, generator=g)
    obs = observe(x_b + torch.randn(spec.shape, generator=g), spec,
                  ObservationSettings(density=0.05), cycle=0)
    background = Background(x_b, torch.stack([x_b, x_b]), np.datetime64("2001-01-01"), 6, 0)
    stats = FourDVar().untrained(spec, seed=1)
    window = ObservationWindow(((0, obs),), model=Persistence(spec))
    three = ThreeDVar(solver="cg", max_iterations=40, tolerance=1e-6).load(stats, spec, "cpu")
    four = FourDVar(outer_loops=1, inner_iterations=40, tolerance=1e-6).load(stats, spec, "cpu")
    x_3d = three.analyse(background, obs).x_a
    analysis = four.analyse(background, window)
    torch.testing.assert_close(analysis.x_a, x_3d, rtol=0, atol=0)  # operation for operation
    assert analysis.diagnostics["evaluations"] == 0  # no model pass
    # converged, with two outer loops and a model-less window: 3DVar's minimum
    converged = ThreeDVar(solver="cg", max_iterations=500, tolerance=1e-9)
    x_exact = converged.load(stats, spec, "cpu").analyse(background, obs).x_a
    four = FourDVar(outer_loops=2, inner_iterations=500, tolerance=1e-9).load(stats, spec, "cpu")
    x_4d = four.analyse(background, ObservationWindow(((0, obs),))).x_a
    assert float((x_4d - x_exact).norm()) < 1e-5 * float((x_exact - x_b).norm())


# ----------------------------------------------------------------------------- later observations
def test_observations_at_twelve_hours_move_the_analysis_upstream():
    """Observations only at +12 h of a model that moves features: 4DVar's analysis differs from
    3DVar's of the same observations (taken as valid now) and fits them after 12 h."""
    truth = advected_trajectory(SPEC, 4, seed=5)
    g = torch.Generator().manual_seed(6)
    error = 0.5 * torch.randn(SPEC.shape, generator=g)
    history = truth[:2] + error
    y12 = observations(truth[3], 0.3)
    model = DifferentiableShift(SPEC)
    window = ObservationWindow(((0, empty(y12)), (6, empty(y12)), (12, y12)), model=model)
    method = FourDVar(window_hours=12, inner_iterations=30)
    stats = method.untrained(SPEC, seed=0)
    x_4d = method.load(stats, SPEC, "cpu").analyse(background_of(history), window).x_a
    x_3d = ThreeDVar().load(stats, SPEC, "cpu").analyse(background_of(history), y12).x_a

    def misfit(x0):  # ‖H M_{0→12h}(x₀) − y‖ (increment on every frame: the history update)
        frames = (history + (x0 - history[-1]))[None]
        return float((y12.operator(model.rollout(frames, 2)[0, -1]) - y12.values).norm())

    x_b = history[-1]
    assert float((x_4d - x_3d).norm()) > 0.5 * float((x_4d - x_b).norm())
    assert misfit(x_4d) < 0.2 * misfit(x_b)
    assert misfit(x_4d) < 0.5 * misfit(x_3d)


def test_a_longer_window_of_a_perfect_model_gives_a_better_analysis():
    """Perfect model, background error drawn from B, noise-free observations of the truth:
    observations at +6 h and +12 h lower the analysis error of a 0-h window."""
    truth = advected_trajectory(SPEC, 4, seed=7)
    method = FourDVar(window_hours=12, outer_loops=1, inner_iterations=80, tolerance=1e-6)
    analyser = method.load(method.untrained(SPEC, seed=0), SPEC, "cpu")
    g = torch.Generator().manual_seed(8)
    error = analyser.b.u(torch.randn(analyser.b.shape_w, generator=g, dtype=torch.float64))
    history = truth[:2] + error.float()
    obs = {o: observations(truth[1 + o // 6], 0.1, noise=0.0, cycle=o // 6) for o in (0, 6, 12)}
    model = DifferentiableShift(SPEC)
    errors = {}
    for hours in (0, 12):
        window = ObservationWindow(tuple((o, obs[o]) for o in (0, 6, 12) if o <= hours),
                                   model=model)
        x_a = analyser.analyse(background_of(history), window).x_a
        errors[hours] = float((x_a - truth[1]).norm())
    assert errors[0] < float(error.norm()) and errors[12] < 0.7 * errors[0]


def test_twelve_hour_window_through_a_float32_emulator():
    model = random_emulator(True, spec=SPEC, config=EmulatorConfig(width=8, blocks=1))
    truth = advected_trajectory(SPEC, 4, seed=9)
    obs = tuple((o, observations(truth[1 + o // 6], 0.3, cycle=o // 6)) for o in (0, 6, 12))
    method = FourDVar(window_hours=12, inner_iterations=5)
    analysis = method.load(method.untrained(SPEC), SPEC, "cpu").analyse(
        background_of(truth[:2] + 0.1), ObservationWindow(obs, model=model))
    d = analysis.diagnostics
    assert analysis.x_a.dtype == torch.float32 and torch.isfinite(analysis.x_a).all()
    assert d["outer_iterations"] == 2 and d["iterations"] <= 10
    assert d["model_steps"] == 2 * (d["outer_iterations"] + 1)  # each outer loop + the final J
    assert d["evaluations"] == d["model_steps"] + d["tangent_steps"] + d["adjoint_steps"]
    assert d["j_min"] < d["cost_initial"]


# ----------------------------------------------------------------------------- refusal, fields
def test_refuses_a_window_without_a_differentiable_model():
    method = FourDVar()
    analyser = method.load(method.untrained(SPEC), SPEC, "cpu")
    truth = advected_trajectory(SPEC, 2, seed=0)
    obs = observations(truth[1], 0.3)
    for window in (ObservationWindow(((0, obs), (6, obs))), obs):
        with pytest.raises(TypeError) as info:
            analyser.analyse(background_of(truth), window)
        message = str(info.value)
        assert "\n" not in message and "4DVar" in message
    assert "emulator" in str(pytest.raises(TypeError, analyser.analyse, background_of(truth),
                                           ObservationWindow(((0, obs), (6, obs)))).value)
    with pytest.raises(TypeError, match="emulator"):
        analyser.dominant_kernel(background_of(truth), ObservationWindow(((0, obs),)))
    # the costs need no model
    small, large = (FourDVar(window_hours=h).memory_estimate(SPEC, 10) for h in (6, 12))
    assert 0 < small.analysis < large.analysis and small.model == large.model > 0


def test_fields():
    assert METHODS["4dvar"] is FourDVar and FourDVar().window_hours == 6
    assert FourDVar(window_hours=12).window_hours == 12
    for bad in ({"window_hours": 0}, {"window_hours": 9}, {"outer_loops": 0},
                {"model_error": -1.0}, {"tolerance": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FourDVar(**bad)
