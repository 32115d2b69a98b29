"""Cycling on the built-in world: the claims the methods' issues make about real cycles.

These use the real nature run and emulator (built and cached on first use, ~12 minutes on 2
cores; CI has them already from the README's main job) and run 15 days of 6-hourly cycles,
exactly as ``python -m bench run`` does.
"""

import numpy as np
import pytest

from bench.config import CycleSettings, ObservationSettings, RunConfig
from bench.cycle import run_cycles
from bench.report.tables import HEADLINE
from bench.setup import build_method, fit_and_load, setup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_in():
    cfg = RunConfig(methods=("none", "3dvar", "4dvar", "vaevar"), densities=(0.01, 0.05), threads=1,
                    cycle=CycleSettings(days=15))
    return cfg, setup(cfg, progress=False)


def _cycled(cfg, s, name: str, density: float) -> np.ndarray:
    """Analysis RMSE after spin-up, (cycles, C) in physical units."""
    method = build_method(cfg, name, seed=0)
    analyser = fit_and_load(s, method, progress=False)
    # A 4D method's window comes from the method, as bench/runner.py hands it on.
    result = run_cycles(analyser, s.model, s.truth, s.start, ObservationSettings(density=density),
                        cfg.cycle, s.climatology, window_hours=method.window_hours,
                        progress=False)
    assert result.status == "ok", f"{name} at {density}: {result.reason}"
    return result.per_channel["rmse"][cfg.cycle.spinup_cycles:, 1]


def _analysis_rmse(cfg, s, name: str, density: float) -> dict[str, float]:
    """Mean analysis RMSE after spin-up per headline channel (physical units)."""
    after = _cycled(cfg, s, name, density)
    return {c: float(np.mean(after[:, s.truth.spec.index(c)])) for c in HEADLINE}


@pytest.mark.parametrize("density", [0.01, 0.05])
def test_3dvar_beats_no_assimilation_in_every_headline_channel(built_in, density):
    cfg, s = built_in
    none = _analysis_rmse(cfg, s, "none", density)
    threedvar = _analysis_rmse(cfg, s, "3dvar", density)
    print(density, {c: round(threedvar[c] / none[c], 3) for c in HEADLINE})
    worse = {c: (threedvar[c], none[c]) for c in HEADLINE if threedvar[c] >= none[c]}
    assert not worse, f"3DVar is not better than no assimilation in {worse}"


def _beats_none_on_mean(cfg, s, name: str, density: float) -> None:
    """``name``'s analysis RMSE, normalised by each channel's climatological std and averaged
    over the 69 channels and the cycles after spin-up, is below no assimilation's."""
    std = np.asarray(s.truth.spec.std)
    none = _cycled(cfg, s, "none", density) / std
    method = _cycled(cfg, s, name, density) / std
    ratio = method.mean(axis=0) / none.mean(axis=0)
    print(density, f"mean normalised RMSE {name} {method.mean():.3f} none {none.mean():.3f};",
          f"{int((ratio > 1).sum())} of {ratio.size} channels worse")
    assert method.mean() < none.mean()


@pytest.mark.parametrize("density", [0.01, 0.05])
def test_vaevar_beats_no_assimilation_on_mean_analysis_rmse(built_in, density):
    """Not in every channel: VAE-Var's humidity analyses are worse than none's (issue note)."""
    _beats_none_on_mean(*built_in, "vaevar", density)


@pytest.mark.heavy
def test_diffda_beats_no_assimilation_on_mean_analysis_rmse_at_5_percent(built_in):
    """At 5 % only: at 1 % and 0.5 % DiffDA's cycles diverge (methods/diffda/method.py).
    Heavy: the first run trains DiffDA's two denoisers (~15 min of CPU time)."""
    _beats_none_on_mean(*built_in, "diffda", 0.05)


def test_4dvar_beats_3dvar_on_mean_analysis_rmse_at_5_percent(built_in):
    """4DVar (6 h window through the emulator's autograd, 3DVar's B) uses the observations
    6 h after the analysis time too: measured 0.273 vs 3DVar's 0.310 on the test period
    (results/heldsuarez-4dvar/); the setting was not chosen on it (validation: 0.269 vs
    0.302)."""
    cfg, s = built_in
    std = np.asarray(s.truth.spec.std)
    threedvar = _cycled(cfg, s, "3dvar", 0.05) / std
    fourdvar = _cycled(cfg, s, "4dvar", 0.05) / std
    print(f"mean normalised RMSE 4dvar {fourdvar.mean():.3f} 3dvar {threedvar.mean():.3f}")
    assert fourdvar.mean() < threedvar.mean()
