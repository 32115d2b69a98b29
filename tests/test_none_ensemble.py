"""The no-assimilation ensemble control: free members, scored by their mean.

Closed forms through the harness's own cycle (bench.cycle.run_cycles): with persistence as the
forecast model the members never move, so the scored analysis is the initial members' mean at
every cycle — equal to ``none``'s analysis when the perturbations are centred on the first
background, and the spread stays the initial perturbations' spread."""

import dataclasses

import numpy as np
import pytest
import torch

from bench.config import CycleSettings, ObservationSettings
from bench.cycle import TruthWindow, first_background, run_cycles
from bench.forecast.persistence import Persistence
from bench.scorer import spread
from bench.state import StateSpec
from methods import METHODS
from methods.base import Background

SPEC = StateSpec.create(("t850", "z500"), np.linspace(67.5, -67.5, 4), np.arange(8) * 45.0,
                        "legendre-gauss")


def _cycle(method, perturbations):
    g = torch.Generator().manual_seed(0)
    trajectory = torch.randn(24, *SPEC.shape, generator=g).cumsum(0) * 0.3
    times = np.datetime64("2001-01-01", "ns") + np.arange(24) * np.timedelta64(6, "h")
    model = Persistence(SPEC)
    truth = TruthWindow(SPEC.to_dataset(trajectory, time=times), SPEC, torch.device("cpu"))
    settings = CycleSettings(days=3, first_lead_hours=6, spinup_cycles=1)
    start = first_background(model, truth, settings)
    if method.members:
        start = dataclasses.replace(start, members=start.history[None] + perturbations[:, None])
    analyser = method.load(method.fit(None) if method.learns else {}, SPEC, "cpu")
    return run_cycles(analyser, model, truth, start, ObservationSettings(density=0.5),
                      settings, trajectory.mean(0), window_hours=0, progress=False), start


def test_free_ensemble_of_centred_members_scores_as_none_under_persistence():
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(6, *SPEC.shape, generator=g)
    eps -= eps.mean(0)  # centred on the first background
    ensemble, _ = _cycle(METHODS["none-ensemble"](members=6), eps)
    control, _ = _cycle(METHODS["none"](), eps)
    np.testing.assert_allclose(ensemble.per_channel["rmse"], control.per_channel["rmse"],
                               rtol=1e-5, atol=1e-6)


def test_free_ensemble_mean_is_the_members_mean_and_keeps_their_spread():
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(5, *SPEC.shape, generator=g) + 0.5  # an offset the mean must carry
    method = METHODS["none-ensemble"](members=5)
    scores, start = _cycle(method, eps)
    # persistence never moves the members: every cycle's spread, background and analysis, is
    # the initial members' (the scorer's own spread of them)
    initial = spread(start.members[:, -1], SPEC, SPEC.latitude_weights())
    for phase in range(scores.per_channel["spread"].shape[1]):
        np.testing.assert_allclose(scores.per_channel["spread"][:, phase],
                                   np.broadcast_to(initial, scores.per_channel["spread"][:, phase]
                                                   .shape), rtol=1e-5)
    background = Background(x_b=torch.zeros(SPEC.shape), history=start.history,
                            valid_time=np.datetime64("2001-01-02"), lead_hours=6, cycle=0,
                            members=start.members)
    analysis = method.analyse(background, None)
    # the mean is recomputed from the members, not copied from x_b (zeros here)
    torch.testing.assert_close(analysis.x_a, start.members[:, -1].mean(0))
    torch.testing.assert_close(analysis.members, start.members[:, -1])
    assert analysis.members.data_ptr() != start.members.data_ptr()  # a copy, not a view


@pytest.mark.parametrize("members", [1, 0, 2.5])
def test_bad_member_counts_are_refused_in_one_line(members):
    with pytest.raises(ValueError, match=r"^NoAssimilationEnsemble.members = .* is invalid: "
                                         r"expected an integer ≥ 2$"):
        METHODS["none-ensemble"](members=members)
