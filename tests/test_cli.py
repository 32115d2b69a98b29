"""The command line: listing worlds and clear one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from bench.cli import main


def test_worlds_lists_every_card(capsys):
    assert main(["worlds"]) == 0
    out = capsys.readouterr().out
    assert "heldsuarez-5.625" in out and "era5-wb2" in out
    assert "legendre-gauss 32x64" in out


def test_unknown_world_is_one_line_and_exit_code_2(capsys, isolated_cache):
    assert main(["prepare", "--world", "mars"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown world 'mars'" in err and "heldsuarez-5.625" in err
    assert not isolated_cache.exists(), "bad input must write nothing"


def test_bad_steps_is_exit_code_2(capsys, isolated_cache):
    assert main(["train", "emulator", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_train_set_is_checked_before_anything_is_built(capsys, isolated_cache):
    """`train vaevar --set ...` trains what `run --set ...` would use, so a bad field or value
    is the same one-line error, and --set on the emulator is refused."""
    cases = [
        (["train", "vaevar", "--set", "vaevar.nosuch=1"], "has no field 'nosuch'"),
        (["train", "vaevar", "--set", "vaevar.sample_stride=0"], "sample_stride"),
        (["train", "vaevar", "--set", "diffda.steps=3"], "diffda"),
        (["train", "emulator", "--set", "vaevar.lam=1"], "--steps"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert expected in err and err.count("\n") == 0, (args, err)
    assert not isolated_cache.exists(), "bad input must write nothing"


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "bench", "prepare", "--world", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown world 'nope'")


def test_run_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, isolated_cache):
    out = tmp_path / "run"
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cases = [
        (["--methods", "nosuch"], "unknown method 'nosuch'"),
        (["--world", "mars"], "unknown world 'mars'"),
        (["--density", "0"], "density 0.0 is outside (0, 1]"),
        (["--density", "1.5"], "density 1.5 is outside (0, 1]"),
        (["--days", "0"], "--days 0"),
        (["--obs-noise", "-1"], "--obs-noise"),
        (["--model", "fengwu"], "--fengwu-onnx"),
        (["--out", str(blocker / "sub")], "not a writable folder"),
    ]
    for extra, expected in cases:
        args = ["run", "--out", str(out), *extra] if "--out" not in extra else ["run", *extra]
        assert main(args) == 2, extra
        err = capsys.readouterr().err.strip()
        assert expected in err, (extra, err)
        assert err.count("\n") == 0, err
    assert not out.exists() and not isolated_cache.exists()


# ----------------------------------------------------------------------------- --set
def test_set_gives_a_method_a_hyper_parameter_for_the_run():
    from bench.cli.parser import method_settings
    from bench.config import RunConfig
    from bench.runner import build_method

    settings = method_settings(["vaevar.lam=4e4", "diffda.steps=300", "vaevar.widths=[8,8,8]",
                                "3dvar.solver=cg"])
    assert settings == {"vaevar": {"lam": 4e4, "widths": [8, 8, 8]}, "diffda": {"steps": 300},
                        "3dvar": {"solver": "cg"}}
    cfg = RunConfig(methods=("vaevar", "diffda", "3dvar"), method_settings=settings)
    cfg.validate()
    vaevar = build_method(cfg, "vaevar", seed=3)
    assert (vaevar.lam, vaevar.widths, vaevar.seed) == (4e4, (8, 8, 8), 3)
    assert build_method(cfg, "3dvar").solver == "cg"
    assert build_method(cfg, "none").seed == 0  # no settings: the defaults


@pytest.mark.parametrize("flag,message", [
    ("vaevar.lambda=3", "VAEVar has no field 'lambda'"),
    ("vaevar.lam=-1", "lam = -1"),
    ("interp.scale=1", "'interp' is not in --methods"),
    ("lam=3", "is not METHOD.FIELD=VALUE"),
])
def test_bad_set_is_one_line_and_exit_2(tmp_path, capsys, flag, message):
    from bench.cli import main

    out = tmp_path / "run"
    code = main(["run", "--methods", "none,vaevar", "--set", flag, "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
