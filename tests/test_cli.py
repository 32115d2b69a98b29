"""The command line: flags made from the config dataclasses (each default written once), and
bad input as one line naming the flag and the value, exit code 2, nothing written or built."""

import subprocess
import sys

import pytest

from bench.cli import main
from bench.cli.flags import (
    FLAGLESS,
    RUN,
    UsageError,
    config_from_args,
    field_default,
    flag_message,
    leaf_fields,
    method_settings,
)
from bench.cli.parser import OWN_DEFAULTS, SUBCOMMANDS, build_parser
from bench.config import CycleSettings, ObservationSettings, RunConfig
from bench.validation import ConfigError

#: the positional arguments each command needs to parse
POSITIONAL = {"train": ["emulator"], "tables": ["results/run"], "compare": ["a", "--out", "b"]}


def parse(*argv):
    return build_parser(argv[0]).parse_args(list(argv))


def run_main(capsys, *argv) -> str:
    """main(argv) must refuse: exit code 2, one line on stderr; returns that line."""
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, (argv, err)
    return err


# ----------------------------------------------------------------------------- the flag table
def test_every_run_config_field_has_a_flag_or_is_deliberately_flagless():
    flagged = [f.field for f in RUN]
    assert len(flagged) == len(set(flagged)), "two flags set one field"
    assert len({f.name for f in RUN}) == len(RUN)
    assert set(flagged).isdisjoint(FLAGLESS)
    assert set(flagged) | set(FLAGLESS) == set(leaf_fields(RunConfig))


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_parser_defaults_are_the_dataclass_defaults(command):
    ns = parse(command, *POSITIONAL.get(command, []))
    assert ns.flags == tuple(SUBCOMMANDS[command][2]() if callable(SUBCOMMANDS[command][2])
                             else SUBCOMMANDS[command][2])
    for flag in ns.flags:
        if flag.name in OWN_DEFAULTS.get(command, ()):
            assert flag.default == getattr(ns, flag.dest)
            continue
        assert flag.value(ns) == flag.field_default, (command, flag.name)
        if flag.hint is bool:  # a switch must change its field
            assert flag.invert == flag.field_default, flag.name


def test_run_defaults_make_the_default_config_and_help_shows_them():
    assert config_from_args(parse("run")) == RunConfig()
    text = build_parser("run")._subparsers._group_actions[0].choices["run"].format_help()
    text = " ".join(text.split())
    assert "(default: 15)" in text and "(default: heldsuarez-5.625)" in text


def test_flags_reach_nested_fields():
    cfg = config_from_args(parse(
        "run", "--methods", "none,interp", "--density", "0.01,0.05", "--seeds", "0,1",
        "--days", "3", "--spinup-cycles", "2", "--obs-noise", "0", "--obs-fixed",
        "--obs-sampling", "elements", "--window-every", "12", "--model", "emulator",
        "--emulator-steps", "50", "--ensemble-scale", "0.5", "--ensemble-batch", "4",
        "--history-update", "replace", "--threads", "1", "--set", "interp.scale=2"))
    assert cfg.methods == ("none", "interp") and cfg.densities == (0.01, 0.05)
    assert cfg.seeds == (0, 1)
    assert cfg.cycle == CycleSettings(days=3.0, spinup_cycles=2, history_update="replace")
    assert cfg.observations == ObservationSettings(noise_fraction=0.0, redraw=False,
                                                   sampling="elements", window_every_hours=12)
    assert cfg.forecast.emulator_steps == 50 and cfg.threads == 1
    assert (cfg.ensemble.perturbation_scale, cfg.ensemble.forecast_batch) == (0.5, 4)
    assert cfg.method_settings == {"interp": {"scale": 2}}


def test_field_default_reads_nested_defaults():
    assert field_default(RunConfig, "cycle.days") == CycleSettings().days
    assert field_default(RunConfig, "method_settings") == {}


# ----------------------------------------------------------------------------- bad input
BAD_RUN = [
    (["--days", "inf"], "--days inf: expected a finite number"),
    (["--days", "nan"], "--days nan:"),
    (["--days=-inf"], "--days -inf:"),
    (["--days", "0"], "--days 0: expected a positive number of days"),
    (["--days", "1"], "--spinup-cycles 8, with --days 1: expected fewer than the run's 4"),
    (["--days", "2"], "--spinup-cycles 8, with --days 2:"),
    (["--spinup-cycles", "80"], "--spinup-cycles 80, with --days 15:"),
    (["--density", "0.01,,0.05"], "--density 0.01,,0.05: expected a comma list"),
    (["--density", "0.01,0.010"], "without repeats (0.010 appears twice)"),
    (["--density", "0"], "--density 0: expected fractions of grid points in (0, 1]"),
    (["--density", "1.5"], "--density 1.5:"),
    (["--density", "0.01,nan"], "--density 0.01,nan:"),
    (["--seeds", ""], "--seeds '': expected a comma list of integers without empty items"),
    (["--seeds", "0,0"], "--seeds 0,0: expected a comma list of integers without repeats"),
    (["--seeds", "-1"], "--seeds -1: expected non-negative integers"),
    (["--seeds", "1.5"], "--seeds 1.5: expected an integer"),
    (["--methods", "3dvar,3dvar"], "--methods 3dvar,3dvar:"),
    (["--methods", "none,"], "--methods none,:"),
    (["--obs-noise", "-1"], "--obs-noise -1:"),
    (["--obs-noise", "inf"], "--obs-noise inf:"),
    (["--obs-sampling", "rows"], "--obs-sampling rows: expected one of columns, elements"),
    (["--window-every", "5"], "--window-every 5:"),
    (["--first-lead", "7"], "--first-lead 7:"),
    (["--divergence-factor=-inf"], "--divergence-factor -inf:"),
    (["--days", "-inf"], "written --flag=VALUE"),
    (["--ensemble-scale", "nan"], "--ensemble-scale nan:"),
    (["--ensemble-batch", "0"], "--ensemble-batch 0:"),
    (["--emulator-steps", "x"], "--emulator-steps x: expected an integer"),
    (["--history-update", "x"], "--history-update x: expected one of increment, replace"),
    (["--threads", "0"], "--threads 0:"),
    (["--device", "tpu"], "--device tpu:"),
    (["--model", "fengwu"], "--fengwu-onnx missing, with --model fengwu"),
    (["--model", "gpt"], "--model gpt:"),
    (["--set", "lam=3"], "--set lam=3: expected METHOD.FIELD=VALUE"),
    (["--set", "interp.scale=1"], "--set interp.scale=1, with --methods none:"),
    (["--methods", "interp", "--set", "interp.a=1", "--set", "interp.a=2"], "set twice"),
    (["--executor", "local", "--dask-workers", "2"], "need --executor dask"),
]


@pytest.mark.parametrize("extra,expected", BAD_RUN)
def test_bad_run_flags_are_one_line_exit_2_and_nothing_is_made(tmp_path, capsys, isolated_cache,
                                                                extra, expected):
    """Found from the flags alone, before the harness runs: no --out folder, no cache."""
    out = tmp_path / "run"
    err = run_main(capsys, "run", "--out", str(out), "-q", *extra)
    assert expected in err, err
    assert not out.exists() and not isolated_cache.exists()


@pytest.mark.parametrize("argv,expected", [
    (["train", "emulator", "--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["train", "emulator", "--steps", "inf"], "--steps inf: expected an integer"),
    (["train", "vaevar", "--steps", "5"], "--steps applies to the emulator only"),
    (["train", "emulator", "--set", "vaevar.lam=1"], "--steps"),
    (["train", "emulator", "--threads", "0"], "--threads 0:"),
    (["single-obs", "--methods", "3dvar", "--lat", "91"],
     "--lat 91: expected a latitude in [-90, 90]"),
    (["single-obs", "--methods", "3dvar", "--lon", "nan"], "--lon nan:"),
    (["single-obs", "--methods", "3dvar", "--channel", "z501"], "--channel z501:"),
    (["single-obs", "--methods", "3dvar", "--error-std", "0"], "--error-std 0:"),
    (["single-obs", "--methods", "3dvar,,none"], "--methods 3dvar,,none:"),
    (["check", "--methods", "3dvar", "--density", "0.05,0.05"], "--density 0.05,0.05:"),
    (["check", "--methods", "3dvar", "--obs-noise", "nan"], "--obs-noise nan:"),
    (["samples", "--lead-hours", "x"], "--lead-hours x: expected an integer"),
    (["samples", "--sample-days", "-3"], "--sample-days: days=-3 must be an integer >= 0"),
    (["samples", "--batch-size", "0"], "--batch-size: batch_size=0 must be an integer >= 1"),
    (["samples", "--max-samples", "-1"], "--max-samples: max_samples=-1"),
    (["prepare", "--world", "mars"], "unknown world 'mars'"),
    (["single-obs"], "--methods : expected at least one value"),
    (["check"], "--methods : expected at least one value"),
])
def test_other_commands_refuse_bad_flags(capsys, isolated_cache, argv, expected):
    assert expected in run_main(capsys, *argv)
    assert not isolated_cache.exists()


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--seeds", "0,0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: --seeds 0,0: expected a comma list of integers without " \
                          "repeats (0 appears twice)\n"


def test_worlds_lists_every_card(capsys):
    assert main(["worlds"]) == 0
    out = capsys.readouterr().out
    assert "heldsuarez-5.625" in out and "era5-wb2" in out
    assert "legendre-gauss 32x64" in out


# ----------------------------------------------------------------------------- errors -> flags
@pytest.mark.parametrize("error,argv,message", [
    (ConfigError("method_settings.vaevar.lam", "abc", "a finite number"),
     ["run", "--methods", "vaevar", "--set", "vaevar.lam=abc"],
     "--set vaevar.lam=abc: expected a finite number"),
    (ConfigError("method_settings.vaevar", {"lam": -1}, "lam must be > 0"),
     ["run", "--methods", "vaevar", "--set", "vaevar.lam=-1"],
     "--set vaevar.lam=-1: expected lam must be > 0"),
    (ConfigError("device", "cuda", "cpu or auto: no CUDA device"), ["run", "--device", "cuda"],
     "--device cuda: expected cpu or auto: no CUDA device"),
    (ConfigError("forecast.fengwu_onnx", "x.onnx", "an existing file"), ["run"],
     "--fengwu-onnx x.onnx: expected an existing file"),
    (ConfigError("observations.density", 2.0, "a fraction"), ["run"], "--density 2:"),
    (ConfigError("observations.seed", -1, "a seed"), ["run"], "--seeds -1:"),
    (ConfigError("observations.redraw", 1, "true or false"), ["run"], "--obs-fixed:"),
    (ConfigError("forecast.emulator_steps", 0, "an integer >= 1"), ["train", "emulator"],
     "--steps 0:"),
    (ConfigError("members", 500, "at most 100"), ["run"], "members 500: expected at most 100"),
])
def test_config_errors_from_anywhere_name_the_flag(error, argv, message):
    """The runner, setup and cycle raise ConfigError with dotted fields; only the CLI knows
    the flags."""
    assert flag_message(error, parse(*argv)).startswith(message)


def test_set_items_are_json_and_refuse_repeats_and_bad_shapes():
    settings = method_settings(["vaevar.lam=4e4", "diffda.steps=300", "vaevar.widths=[8,8,8]",
                                "3dvar.solver=cg", "vaevar.odd_decoder=false"])
    assert settings == {"vaevar": {"lam": 4e4, "widths": [8, 8, 8], "odd_decoder": False},
                        "diffda": {"steps": 300}, "3dvar": {"solver": "cg"}}
    for bad in (["vaevar.lam=1", "vaevar.lam=2"], ["lam=3"], [".lam=3"], ["vaevar.=3"], [""]):
        with pytest.raises(UsageError):
            method_settings(bad)


# ----------------------------------------------------------------------------- with the harness
def test_set_gives_a_method_a_hyper_parameter_for_the_run():
    from bench.setup import build_method

    cfg = config_from_args(parse("run", "--methods", "vaevar,diffda,3dvar,none",
                                 "--set", "vaevar.lam=4e4", "--set", "vaevar.widths=[8,8,8]",
                                 "--set", "3dvar.solver=cg"))
    vaevar = build_method(cfg, "vaevar", seed=3)
    assert (vaevar.lam, vaevar.widths, vaevar.seed) == (4e4, (8, 8, 8), 3)
    assert build_method(cfg, "3dvar").solver == "cg"
    assert build_method(cfg, "none").seed == 0  # no settings: the defaults


@pytest.mark.parametrize("extra,expected", [
    (["--methods", "nosuch"], "--methods nosuch: expected a registered method"),
    (["--world", "mars"], "unknown world 'mars'"),
    (["--model", "fengwu", "--fengwu-onnx", "no.onnx", "--fengwu-mean", "m.npy",
      "--fengwu-std", "s.npy"], "--fengwu-onnx no.onnx:"),
    (["--methods", "none,vaevar", "--set", "vaevar.lam=abc"],
     "--set vaevar.lam=abc: expected a finite number"),
    (["--methods", "none,vaevar", "--set", "vaevar.lambda=3"],
     "--set vaevar.lambda=3: expected a field of VAEVar"),
    (["--methods", "none,vaevar", "--set", "vaevar.widths=8"],
     "--set vaevar.widths=8: expected a JSON list of integers"),
    # the built-in test period holds 240 frames; the first analysis is frame 9 (48 h lead, two
    # input frames): 231 cycles fit, a 4D method's 6 h windows need one frame more
    (["--days", "60"], "--days 60: expected 240 cycles from 2002-02-02T06:00 that end inside "
     "the cycled period (2002-03-31T18:00); use fewer days"),
    (["--methods", "4dvar", "--days", "57.75"],
     "--days 57.75: expected 231 cycles and 6 h observation windows from 2002-02-02T06:00"),
])
def test_bad_run_input_found_by_preflight(tmp_path, capsys, isolated_cache, extra, expected):
    """Preflight (methods, --set values, world card, FengWu files, cycles that fit the period)
    runs before anything is built: no world generated, no forecast model trained."""
    out = tmp_path / "run"
    assert expected in run_main(capsys, "run", "--out", str(out), "-q", *extra)
    assert not out.exists() and not isolated_cache.exists()


def test_unwritable_out_is_refused_before_anything_is_built(tmp_path, capsys, isolated_cache):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "not a writable folder" in run_main(capsys, "run", "--out", str(blocker / "sub"))
    assert not isolated_cache.exists()


def test_run_preflights_once(tmp_path, capsys, isolated_cache, monkeypatch):
    """One preflight per run command (it builds every method and reads the world's card)."""
    from bench import runner

    calls = []
    monkeypatch.setattr(runner, "preflight", lambda cfg: calls.append(cfg))

    def stop(*args, **kwargs):
        raise ConfigError("cycle.days", 1.0, "stop here (test)")

    monkeypatch.setattr(runner, "run", stop)
    run_main(capsys, "run", "--out", str(tmp_path / "run"), "-q")
    assert calls == [RunConfig()]


def test_train_set_is_checked_before_anything_is_built(capsys, isolated_cache):
    """`train vaevar --set ...` trains what `run --set ...` would use: the same checks."""
    cases = [
        (["train", "vaevar", "--set", "vaevar.nosuch=1"], "--set vaevar.nosuch=1"),
        (["train", "vaevar", "--set", "vaevar.sample_stride=0"], "--set vaevar.sample_stride=0"),
        (["train", "vaevar", "--set", "diffda.steps=3"], "--set diffda.steps=3"),
    ]
    for args, expected in cases:
        assert expected in run_main(capsys, *args)
    assert not isolated_cache.exists()

