"""``python -m bench tune`` and ``run --tuned``: the tuning protocol picks the known best
setting per density on a toy whose answer is known, never opens the test period, and a tuned
run applies each density's settings, records them and marks its rows; bad grids, budgets and
tuned files are one line and exit code 2 before any work.
"""

import dataclasses
import json
import math
import re
import tomllib

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from forecast_fixtures import advected_trajectory, small_spec

import methods
from bench.cli import main
from bench.config import ObservationSettings, RunConfig
from bench.experiments import tune
from bench.experiments.tuning_grid import GridError, plan
from bench.forecast.persistence import Persistence
from bench.report.compare import settings_label
from bench.tuned import protocol
from bench.validation import ConfigError
from bench.worlds.base import World
from methods.base import Analyser, Analysis, Assimilator

TOY = "toy-gain"
PERIODS = {"train": ("2001-01-01T00:00", "2001-01-11T00:00"),
           "valid": ("2001-01-11T00:00", "2001-01-17T00:00"),
           "test": ("2001-01-17T00:00", "2001-01-25T00:00")}
#: the small cycles of every test: 8 cycles, 2 of them spin-up, noise-free observations
CYCLES = ["--days", "2", "--first-lead", "12", "--spinup-cycles", "2", "--obs-noise", "0",
          "--device", "cpu", "--threads", "1", "-q"]


@dataclasses.dataclass(frozen=True)
class MatchedGain(Assimilator, Analyser):
    """x_a = x_b + g Hᵀ(y − H x_b), with g = ``weight`` when the observed fraction of grid
    points is within 0.02 of ``matched_density``, else g = 0 (no analysis). With noise-free
    observations g = 1 puts the analysis on the truth at every observed point, so at density d
    the best setting is weight 1 and matched_density d: known by construction, and different
    at each density. Its default (matched 0.5) assimilates nothing at 0.1 or 0.3."""

    weight: float = 0.25
    matched_density: float = 0.5

    tuning_grid = {"weight": (0.25, 1.0), "matched_density": (0.1, 0.3)}

    def load(self, state, spec, device):
        return self

    def analyse(self, background, obs):
        h, w = obs.grid_shape[1:]
        fraction = obs.flat_index[:, 0].unique().numel() / (h * w)
        gain = self.weight if abs(fraction - self.matched_density) < 0.02 else 0.0
        d = obs.values - obs.operator(background.x_b)
        return Analysis(background.x_b + obs.adjoint(gain * d).to(background.x_b.dtype))


class ToyWorld(World):
    """An advected 3-channel world on 8 × 16 points, periods as ``PERIODS``; remembers which
    periods were opened and refuses the test period while ``forbid_test``."""

    def __init__(self):
        card = {"name": "toy", "periods": {k: {"start": a, "end": b}
                                           for k, (a, b) in PERIODS.items()}}
        super().__init__("toy", card)
        self._spec = small_spec()
        times = np.datetime64("2001-01-01", "ns") + np.arange(96) * np.timedelta64(6, "h")
        self._ds = self._spec.to_dataset(advected_trajectory(self._spec, 96, seed=0),
                                         time=times)
        self.opened, self.forbid_test = [], True

    def prepare(self, progress=True):
        return "toy world: in memory"

    def open(self):
        return self._ds

    @property
    def spec(self):
        return self._spec

    def period(self, name):
        self.opened.append(name)
        if name == "test" and self.forbid_test:
            raise AssertionError("tuning opened the test period")
        return super().period(name)


@pytest.fixture
def toy(monkeypatch, isolated_cache):
    """The toy method registered, and the toy world with persistence as every command's."""
    world = ToyWorld()
    monkeypatch.setitem(methods.METHODS, TOY, MatchedGain)
    for module in ("bench.setup", "bench.runner"):
        monkeypatch.setattr(f"{module}.open_world", lambda cfg: world)
    monkeypatch.setattr("bench.setup.load_model", lambda cfg, w, device, progress: (
        Persistence(w.spec), "persistence"))
    return world


def one_line_error(capsys, argv) -> str:
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------- tune end to end
def test_tune_picks_the_known_best_setting_per_density_then_run_applies_it(toy, tmp_path,
                                                                         capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--world", "toy", "--methods", f"none,{TOY}", "--density", "0.1,0.3",
                 *CYCLES, "--out", str(out)]) == 0, capsys.readouterr().err
    assert "test" not in toy.opened and "valid" in toy.opened
    doc = tomllib.loads((out / "tuned.toml").read_text())
    assert doc["methods"] == {TOY: {"0.1": {"weight": 1.0, "matched_density": 0.1},
                                    "0.3": {"weight": 1.0, "matched_density": 0.3}}}
    assert doc["candidates"] == {"none": 1, TOY: 5} and doc["budget"] == 8
    assert doc["tie_tolerance"] == tune.TIE_TOLERANCE
    assert doc["protocol"]["observations.noise_fraction"] == 0.0
    table = pd.read_csv(out / "tuning.csv", comment="#")
    assert len(table) == 10 and table["chosen"].sum() == 2  # 5 candidates x 2 densities
    # the default (matched 0.5) assimilates nothing: its score is no assimilation's
    default = table[table["candidate"] == 0].set_index("density")["score"]
    chosen = table[table["chosen"]].set_index("density")["score"]
    assert (chosen < default).all()
    # every candidate cycled the validation period only
    valid = [np.datetime64(t) for t in PERIODS["valid"]]
    for path in (out / "candidates" / TOY).glob("*/metrics.nc"):
        times = xr.load_dataset(path)["valid_time"].values
        assert valid[0] <= times.min() and times.max() < valid[1]
        assert json.loads((path.parent / "config.json").read_text())["cycle"]["period"] == "valid"

    # run --tuned: each density's own settings, recorded and marked
    toy.forbid_test = False
    run = tmp_path / "run"
    assert main(["run", "--world", "toy", "--methods", f"none,{TOY}", "--density", "0.1,0.3",
                 *CYCLES, "--tuned", str(out / "tuned.toml"), "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["tuned"] == doc["methods"] and config["cycle"]["period"] == "test"
    ds = xr.load_dataset(run / "metrics.nc")
    rmse = ds["rmse"].sel({"method": TOY}).mean(["seed", "cycle", "channel"])
    # had one density's settings been used at the other, its analysis would be its background
    # there (g = 0) at every cycle
    assert (rmse.sel(phase="analysis") < 0.99 * rmse.sel(phase="background")).all()
    skill = pd.read_csv(run / "tables" / "skill.csv", comment="#")
    assert dict(zip(skill["method"], skill["settings"], strict=True)) == {
        "none": "default", TOY: "tuned"}
    shown = (run / "tables" / "skill.md").read_text()
    assert re.search(rf"\| {TOY} \(tuned\) +\|", shown) and re.search(r"\| none +\|", shown)
    assert "matched_density=0.3" in shown
    paper = (run / "tables" / "paper_rmse_analysis.md").read_text()
    assert re.search(rf"\| {TOY} \(tuned\) +\|", paper)
    assert "(tuned)" in (run / "tables" / "paper_rmse_analysis.tex").read_text()
    assert settings_label(config, TOY, 0.3) == "tuned: matched_density=0.3, weight=1.0"


def test_an_untuned_run_has_no_tuned_key_and_no_marker():
    assert "tuned" not in RunConfig().to_dict()
    with pytest.raises(ConfigError, match="every density of the run"):
        RunConfig(methods=("interp",), densities=(0.01, 0.05),
                  tuned={"interp": {"0.01": {"length_scale_km": 700.0}}})
    with pytest.raises(ConfigError, match="--set"):
        RunConfig(methods=("interp",), method_settings={"interp": {"length_scale_km": 600}},
                  tuned={"interp": {"0.01": {"length_scale_km": 700.0}}})


# ----------------------------------------------------------------------------- the protocol
def test_every_declared_grid_fits_the_default_budget_without_refitting():
    from bench.cli.tune import DEFAULT_BUDGET

    grids = plan(tuple(methods.METHODS), {}, None, DEFAULT_BUDGET)
    for g in grids:
        cls = methods.METHODS[g.method]
        assert g.refits == (), g.method
        assert g.candidates[0] == {f: getattr(cls(), f) for f in g.grid}, g.method
        assert len(g.candidates) <= DEFAULT_BUDGET
    assert not next(g for g in grids if g.method == "none").tunes


def test_refit_opens_fit_fields_and_the_default_is_tried_once(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[3dvar]\nvariance_scale = [0.25, 1.0]\n")
    with pytest.raises(GridError, match="not an analysis field of ThreeDVar.*--refit"):
        plan(("3dvar",), {}, grid, 8)
    (g,) = plan(("3dvar",), {}, grid, 8, refit=True)
    # 0.25 is the default: two candidates, not three
    assert g.refits == ("variance_scale",)
    assert g.candidates == ({"variance_scale": 0.25}, {"variance_scale": 1.0})


def test_choose_breaks_near_ties_towards_the_earlier_and_keeps_the_default_if_all_diverge():
    scores = {0.1: [0.5, 0.4, 0.4], 0.2: [0.5, 0.4003, 0.4], 0.3: [0.5, 0.4005, 0.4],
              0.4: [math.inf, math.inf, math.inf], 0.5: [0.4001, math.inf, 0.4]}
    table = pd.DataFrame([{"method": "m", "density": d, "candidate": k, "score": v}
                          for d, values in scores.items() for k, v in enumerate(values)])
    chosen = tune.choose(table, tolerance=1e-3)
    # 0.4003 ties with 0.4 (within 0.1 %), 0.4005 does not; all diverged: the default
    assert list(chosen.loc[chosen["chosen"], "candidate"]) == [1, 1, 2, 0, 0]
    # a tie goes to the fewest fields changed from the default, then the earliest
    table["changes"] = [0, 2, 1] * 5
    chosen = tune.choose(table, tolerance=1e-3)
    assert list(chosen.loc[chosen["chosen"], "candidate"]) == [2, 2, 2, 0, 0]


def test_tuning_refuses_to_cycle_the_test_period(tmp_path):
    with pytest.raises(ValueError, match="valid period only"):
        tune.run_candidates(RunConfig(methods=("interp",)), plan(("interp",), {}, None, 8),
                            tmp_path)


def test_tuned_toml_round_trips():
    doc = {"command": "python -m bench tune \"x\"", "seeds": [0, 1], "days": 2.0,
           "protocol": {"observations.channels": ["z500"], "observations.redraw": True},
           "methods": {"3dvar": {"0.01": {"min_obs_error": 0.001, "max_iterations": 100}}}}
    assert tomllib.loads(tune.toml_text(doc)) == doc


# ----------------------------------------------------------------------------- bad input
BAD_GRIDS = [
    ("[interp]\nfoo = [1]\n", [], "interp.foo = 1: expected a field of Interpolation"),
    ("[3dvar]\nvariance_scale = [0.5]\n", [], "not an analysis field of ThreeDVar"),
    ("[interp]\nlength_scale_km = [100, 200, 300]\n", ["--budget", "3"],
     "--budget 3: interp has 4 candidate settings"),
    ("[interp]\nlength_scale_km = [-5]\n", [], "length_scale_km"),
    ("[interp]\nlength_scale_km = 500\n", [], "expected a non-empty list"),
    ("[vaevar]\nlam = [1.0]\n", [], "[vaevar] is not a method of this tuning"),
    ("[interp\n", [], "not TOML"),
    ("", ["--budget", "0"], "--budget 0: expected an integer >= 1"),
    ("", ["--set", "interp.length_scale_km=700"], "fixes it already"),
]


@pytest.mark.parametrize("text,extra,expected", BAD_GRIDS)
def test_bad_grids_and_budgets_are_one_line_before_any_work(tmp_path, capsys, isolated_cache,
                                                            text, extra, expected):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    out = tmp_path / "tune"
    argv = ["tune", "--methods", "interp,3dvar", "--out", str(out), *extra]
    err = one_line_error(capsys, argv + (["--grid", str(grid)] if text else []))
    assert expected in err
    assert not out.exists() and not isolated_cache.exists()


def test_nothing_to_tune_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["tune", "--methods", "none", "--out", str(tmp_path / "t")])
    assert "nothing to tune" in err and not (tmp_path / "t").exists()


def test_tune_has_no_period_flag(capsys):
    assert "--period" in one_line_error(capsys, ["tune", "--period", "test"])


def tuned_file(tmp_path, methods_table, **protocol_changes) -> str:
    cfg = RunConfig(world="toy", observations=ObservationSettings(noise_fraction=0.0))
    proto = protocol(cfg) | protocol_changes
    path = tmp_path / "tuned.toml"
    path.write_text(tune.toml_text({"protocol": proto, "methods": methods_table}))
    return str(path)


@pytest.mark.parametrize("extra,table,expected", [
    (["--density", "0.1,0.2"], None, f"{TOY} was tuned at 0.1, 0.3, not at 0.2 of this run"),
    (["--density", "0.1", "--obs-noise", "0.01"], None,
     "another protocol than this run's: observations.noise_fraction (0.0 -> 0.01)"),
    (["--density", "0.1", "--set", f"{TOY}.weight=0.5"], None, f"--set {TOY}.weight"),
    (["--density", "0.1"], {"interp": {"0.1": {}}}, "none of this run's methods"),
    (["--density", "0.1"], {TOY: {"0.1": {"weight": "heavy"}}}, "weight"),
    (["--density", "0.1"], {TOY: {"0.1": {"gain": 1.0}}}, "a field of MatchedGain"),
])
def test_bad_tuned_files_are_one_line_before_any_work(tmp_path, capsys, toy, extra, table,
                                                      expected):
    good = {TOY: {"0.1": {"weight": 1.0}, "0.3": {"weight": 1.0}}}
    path = tuned_file(tmp_path, good if table is None else table)
    out = tmp_path / "run"
    argv = ["run", "--world", "toy", "--methods", f"none,{TOY}", "--obs-noise", "0",
            "--tuned", path, "--out", str(out)]
    # a later flag wins: the protocol test sets --obs-noise again
    assert expected in one_line_error(capsys, argv + extra)
    assert not out.exists() and toy.opened == []


def test_a_missing_tuned_file_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["run", "--tuned", str(tmp_path / "no.toml")])
    assert "cannot read it" in err



def test_tune_takes_run_presets_and_typed_flags_win():
    from bench.cli.flags import config_from_args
    from bench.cli.parser import parse_command_line

    cfg = config_from_args(parse_command_line(["tune", "--preset", "quick", "--days", "4"]))
    assert cfg.methods == ("none", "interp", "3dvar") and cfg.densities == (0.05,)
    assert cfg.cycle.days == 4.0
