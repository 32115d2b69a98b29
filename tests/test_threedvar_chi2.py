"""χ² = 2 J_min / N ≈ 1 for 3DVar when its B and R are the true ones (Bennett et al. 1993;
Desroziers et al. 2005): the check that makes J_min a diagnostic of B and R.

Truth drawn from the prior 3DVar assumes, x_true = x_b + U w with w ~ N(0, I), and
observations y = H x_true + ε with ε ~ N(0, R): then d = y − H x_b ~ N(0, HBHᵀ + R) and, at
the exact minimum, E[2 J_min] = N. A B twice too large (or too small) moves χ²/N away from 1.
"""

import numpy as np
import torch
from threedvar_fixtures import gaussian_spec, synthetic_samples

from bench.config import ObservationSettings
from bench.observations import observe
from methods.base import Background
from methods.common.covariance import BMatrix, estimate
from methods.threedvar import ThreeDVar


def _chi2_per_obs(scale_b: float, cases: int = 6) -> float:
    spec, samples = synthetic_samples(gaussian_spec(), n=200, seed=0)
    stats = estimate(spec, samples, variance_scale=1.0)
    truth_b = BMatrix(spec, stats)
    assumed = ThreeDVar(solver="cg", max_iterations=400, tolerance=1e-10, min_obs_error=1e-6,
                        variance_scale=scale_b)
    analyser = assumed.load(estimate(spec, samples, variance_scale=scale_b), spec, "cpu")
    g = torch.Generator().manual_seed(11)
    total_j, total_n = 0.0, 0
    for k in range(cases):
        x_b = samples[k + 1].double()
        w = torch.randn(truth_b.shape_w, generator=g, dtype=torch.float64)
        x_true = x_b + truth_b.u(w)
        # σ_o = 0.3 normalised: observations drawn with exactly the R the method is given
        obs = observe(x_true.float(), spec, ObservationSettings(density=0.3, noise_fraction=0.3,
                                                                seed=k), cycle=k)
        background = Background(x_b.float(), x_b.float()[None], np.datetime64("2002-01-01"), 6,
                                k)
        analysis = analyser.analyse(background, obs)
        total_j += analysis.diagnostics["j_min"]
        total_n += len(obs)
    return 2.0 * total_j / total_n


def test_chi2_per_observation_is_one_with_the_true_b_and_r():
    chi2 = _chi2_per_obs(1.0)
    # 6 cases of ~1,300 observations: the sampling std of χ²/N is ≈ √(2/N) ≈ 0.016
    assert abs(chi2 - 1.0) < 0.08, chi2


def test_chi2_per_observation_detects_a_wrong_b():
    too_small, too_large = _chi2_per_obs(0.25), _chi2_per_obs(4.0)
    assert too_small > 1.2 and too_large < 0.85, (too_small, too_large)
