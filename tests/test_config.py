"""bench/config.py and bench/validation.py: errors name the dotted field, the value and what
was expected; nested settings, old config.json files, and the type check of ``--set`` values
(no harness needed)."""

import dataclasses
import json
import math
import pickle
from typing import Literal

import pytest

from bench.config import (
    CycleSettings,
    ForecastSettings,
    ObservationSettings,
    RunConfig,
    build,
)
from bench.validation import ConfigError, check_method_setting, nested


def raised(make) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make()
    return info.value


# ----------------------------------------------------------------------------- ConfigError
def test_config_error_names_field_value_expected_and_survives_pickling():
    err = ConfigError("spinup_cycles", 8, "expected fewer than 4", {"days": 1.0})
    assert err.expected == "fewer than 4"  # one "expected", however the raiser wrote it
    inner = err.within("cycle")
    assert (inner.field, inner.value, inner.related) == ("cycle.spinup_cycles", 8,
                                                         {"cycle.days": 1.0})
    assert str(inner) == "cycle.spinup_cycles = 8, with cycle.days = 1.0: expected fewer than 4"
    again = pickle.loads(pickle.dumps(inner))  # a Dask worker raises it in another process
    assert (again.field, again.value, again.expected, again.related) == (
        inner.field, inner.value, inner.expected, inner.related)
    assert isinstance(again, ValueError)


def test_nested_settings_name_dotted_fields():
    err = raised(lambda: nested("cycle", lambda: CycleSettings(days=math.inf)))
    assert (err.field, err.value) == ("cycle.days", math.inf)
    err = raised(lambda: build(RunConfig, {"observations": {"noise_fraction": math.nan}}))
    assert err.field == "observations.noise_fraction"
    err = raised(lambda: build(RunConfig, {"cycle": {"dayz": 3}}))
    assert err.field == "cycle.dayz" and "days" in err.expected  # a typo is not dropped


def test_run_shorter_than_the_spin_up_is_refused_naming_both_fields():
    for days in (1, 2):
        err = raised(lambda d=days: build(RunConfig, {"cycle": {"days": d}}))
        assert err.field == "cycle.spinup_cycles" and err.related == {"cycle.days": days}
        assert "2.25 days" in err.expected
    assert CycleSettings(days=2.25).cycles == 9  # one cycle left after the 8 of spin-up
    assert CycleSettings(days=1, spinup_cycles=0).cycles == 4


@pytest.mark.parametrize("field,value", [
    ("methods", ()), ("methods", ("3dvar", "3dvar")), ("methods", ("",)),
    ("densities", (0.01, math.nan)), ("densities", (math.inf,)), ("densities", (0.0,)),
    ("seeds", (-1,)), ("seeds", (0, 0)), ("seeds", (1.5,)), ("threads", 0),
    ("device", "tpu"),
])
def test_run_config_refuses_bad_lists_and_numbers(field, value):
    err = raised(lambda: RunConfig(**{field: value}))
    assert err.field == field


def test_every_number_refuses_nan_and_infinity():
    bad = [(CycleSettings, "days"), (CycleSettings, "divergence_factor"),
           (ObservationSettings, "noise_fraction"), (ObservationSettings, "density")]
    for cls, field in bad:
        for value in (math.nan, math.inf, -math.inf):
            assert raised(lambda c=cls, f=field, v=value: c(**{f: v})).field == field


def test_fengwu_needs_its_files_and_says_why():
    err = raised(lambda: ForecastSettings(kind="fengwu"))
    assert err.field == "fengwu_onnx" and err.related == {"kind": "fengwu"}


def test_method_settings_only_for_methods_of_the_run():
    err = raised(lambda: RunConfig(methods=("none",), method_settings={"vaevar": {"lam": 1}}))
    assert err.field == "method_settings.vaevar" and err.related == {"methods": ("none",)}
    RunConfig(methods=("vaevar",), method_settings={"vaevar": {"lam": 1}})


def test_config_json_round_trip_and_the_old_flat_layout():
    cfg = RunConfig(methods=("none", "interp"), densities=(0.01, 0.05), seeds=(0, 1),
                    observations=ObservationSettings(sampling="elements", redraw=False),
                    cycle=CycleSettings(days=3, spinup_cycles=2),
                    method_settings={"interp": {"scale": 2}})
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    old = {"world": "heldsuarez-5.625", "methods": ["none"], "densities": [0.01], "seeds": [0],
           "obs_sampling": "elements", "obs_noise": 0.0, "obs_redraw": False,
           "cycle": {"days": 5.0}, "forecast": {"kind": "emulator"}}
    loaded = RunConfig.from_dict(old)
    assert loaded.observations == ObservationSettings(sampling="elements", noise_fraction=0.0,
                                                      redraw=False)
    assert loaded.cycle.days == 5.0 and loaded.methods == ("none",)


# ----------------------------------------------------------------------------- --set values
@dataclasses.dataclass(frozen=True)
class Toy:
    """A stand-in for a method's dataclass (the settings import no method)."""

    seed: int = 0
    lam: float = 1.0
    steps: int = 10
    balance: bool = True
    solver: str = "lbfgs"
    cap: int | None = None
    widths: tuple[int, ...] = (8, 8)
    channels: tuple[str, ...] = ("z500",)
    mode: Literal["a", "b"] = "a"


@pytest.mark.parametrize("field,value,expected", [
    ("lam", 4e4, 4e4), ("lam", 3, 3.0), ("steps", 300, 300), ("steps", 3e2, 300),
    ("balance", False, False), ("solver", "cg", "cg"), ("cap", None, None), ("cap", 5, 5),
    ("widths", [16, 32], (16, 32)), ("channels", ["t850", "u10"], ("t850", "u10")),
    ("mode", "b", "b"),
])
def test_check_method_setting_accepts_and_converts(field, value, expected):
    got = check_method_setting(Toy, "method_settings.toy." + field, field, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("field,value,words", [
    ("lam", "abc", "a finite number"), ("lam", math.nan, "a finite number"),
    ("lam", True, "a finite number"), ("steps", 2.5, "an integer"), ("steps", True, "an integer"),
    ("balance", 1, "true or false"), ("solver", 3, "a string"), ("cap", "x", "an integer or null"),
    ("widths", 8, "a JSON list of integers"), ("widths", [8, "x"], "a JSON list of integers"),
    ("channels", [1], "a JSON list of strings"), ("mode", "c", "one of 'a', 'b'"),
    ("nosuch", 1, "a field of Toy"),
])
def test_check_method_setting_names_field_value_and_type(field, value, words):
    err = raised(lambda: check_method_setting(Toy, "toy", field, value))
    assert err.field == f"method_settings.toy.{field}"  # a bare method name is completed
    assert err.value is value or (value != value and err.value != err.value)
    assert words in err.expected, err.expected
    assert "seed" not in err.expected or field != "nosuch"  # the harness sets seed
