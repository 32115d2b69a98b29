"""``run --preset NAME``: a named group of flags (presets/NAME.toml). The resolved config is the
explicit command's, a typed flag overrides the preset's value, an unknown preset is one line
and exit code 2 with nothing written. Configs are built from the flags only: nothing runs."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.cli.flags import RUN, config_from_args, flag_message
from bench.cli.parser import parse_command_line
from bench.cli.presets import list_presets, presets_dir
from bench.config import RunConfig
from bench.validation import ConfigError
from methods import METHODS

ROOT = Path(__file__).resolve().parents[1]

#: each preset as the flags it stands for, typed out (what the README promises)
EXPLICIT = {
    "paper": ["--methods", "none,interp,3dvar,vaevar,diffda", "--density", "0.005,0.01,0.05",
              "--seeds", "0,1,2", "--forecast-every", "4", "--days", "15"],
    "quick": ["--methods", "none,interp,3dvar", "--density", "0.05", "--seeds", "0",
              "--days", "3", "--spinup-cycles", "2"],
    "paper-regimes": ["--methods", "none,interp,3dvar,vaevar,diffda", "--density",
                      "0.001,0.01,0.05,0.2,0.5", "--seeds", "0,1,2", "--days", "15"],
}


def config(*argv) -> RunConfig:
    return config_from_args(parse_command_line(["run", *argv]))


def refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err
    return err


def test_the_presets_folder_holds_the_documented_presets():
    assert presets_dir() == ROOT / "presets"
    assert set(list_presets(RUN)) == set(EXPLICIT)


@pytest.mark.parametrize("name", list(EXPLICIT))
def test_a_preset_is_its_explicit_command(name):
    """Same RunConfig, same config.json, written either way."""
    out = ["--out", "results/x"]
    by_preset, explicit = config("--preset", name, *out), config(*EXPLICIT[name], *out)
    assert by_preset == explicit
    assert by_preset.to_json() == explicit.to_json()
    assert by_preset != RunConfig()


def test_every_preset_runs_registered_methods_with_seeds():
    for name in list_presets(RUN):
        cfg = config("--preset", name)
        assert set(cfg.methods) <= set(METHODS), name
    paper = config("--preset", "paper")
    assert len(paper.seeds) >= 3 and paper.cycle.forecast_every > 0


def test_paper_preset_made_the_committed_paper_run():
    """results/heldsuarez-paper/README.md: its command is `--preset paper --threads 1`."""
    recorded = json.loads((ROOT / "results" / "heldsuarez-paper" / "config.json").read_text())
    made = json.loads(config("--preset", "paper", "--threads", "1").to_json())
    # the run predates config.json's resolved periods and normalisation source (the world's
    # card fills them in at run time; None here); every flag-set field must match
    for later in ("periods", "normalisation"):
        assert later not in recorded
        made.pop(later)
    # fields added since, at their defaults
    assert "emulator_train_period" not in recorded["forecast"]
    assert made["forecast"].pop("emulator_train_period") is None
    assert made == recorded


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_typed_flag_overrides_the_preset(order):
    extra = ["--days", "30", "--seeds", "4"]
    argv = [*extra, "--preset", "paper"] if order == "before" else ["--preset", "paper", *extra]
    cfg = config(*argv)
    assert cfg.cycle.days == 30.0 and cfg.seeds == (4,)
    assert cfg == config(*EXPLICIT["paper"], *extra)


def test_set_items_merge_with_a_presets(tmp_path, monkeypatch):
    """--set overrides the preset's item for the same METHOD.FIELD and adds to the others;
    a switch and a comma string are preset values too."""
    (tmp_path / "tuned.toml").write_text(
        'description = "t"\n[flags]\nmethods = "none,vaevar,diffda"\nobs-fixed = true\n'
        'set = ["vaevar.lam=4e4", "diffda.steps=300"]\n')
    monkeypatch.setenv("ASSIMBENCH_PRESETS", str(tmp_path))
    cfg = config("--preset", "tuned", "--set", "vaevar.lam=400", "--set", "vaevar.widths=[8]")
    assert cfg.methods == ("none", "vaevar", "diffda") and cfg.observations.redraw is False
    assert cfg.method_settings == {"vaevar": {"lam": 400, "widths": [8]},
                                   "diffda": {"steps": 300}}


def test_unknown_preset_is_one_line_exit_2_and_nothing_written(tmp_path, capsys,
                                                                 isolated_cache):
    out = tmp_path / "run"
    err = refused(capsys, "run", "--preset", "papr", "--out", str(out), "-q")
    assert err.startswith("error: --preset papr: expected one of paper-regimes, paper, "
                          "quick"), err
    assert not out.exists() and not isolated_cache.exists()


@pytest.mark.parametrize("text,expected", [
    ('[flags]\nout = "x"\n', "'out' is not a config flag of run"),
    ('[flags]\ndays = true\n', "days = True: expected a string, a number"),
    ('[flags]\nobs-fixed = 1\n', "obs-fixed = 1: expected true or false"),
    ('[flags]\nset = "vaevar.lam=1"\n', "expected a list of METHOD.FIELD=VALUE"),
    ('name = "bad"\n[flags]\ndays = 3\n', "unknown key(s) name"),
    ('description = "empty"\n', "expected a [flags] table"),
])
def test_a_bad_preset_file_is_one_line(tmp_path, monkeypatch, capsys, text, expected):
    (tmp_path / "bad.toml").write_text(text)
    monkeypatch.setenv("ASSIMBENCH_PRESETS", str(tmp_path))
    assert expected in refused(capsys, "run", "--preset", "bad", "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_a_bad_value_names_the_flag_and_its_preset(tmp_path, capsys, isolated_cache):
    out = tmp_path / "run"
    err = refused(capsys, "run", "--preset", "quick", "--days", "0.5", "--out", str(out))
    assert "--spinup-cycles 2 (--preset quick), with --days 0.5: expected fewer" in err, err
    assert not out.exists() and not isolated_cache.exists()
    args = parse_command_line(["run", "--preset", "quick"])
    assert flag_message(ConfigError("cycle.days", 3.0, "x"), args) == \
        "--days 3 (--preset quick): expected x"
    args = parse_command_line(["run", "--preset", "quick", "--days", "4"])
    assert flag_message(ConfigError("cycle.days", 4.0, "x"), args) == "--days 4: expected x"


def test_presets_command_and_run_help_list_presets_with_their_flags(capsys):
    assert main(["presets"]) == 0
    listed = capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    help_ = " ".join(capsys.readouterr().out.split())
    for name, argv in EXPLICIT.items():
        assert f"{name}: " in listed
        lines = listed.splitlines()  # each preset's flags on the line after its name
        line = lines[next(i for i, ln in enumerate(lines) if ln.startswith(f"{name}: ")) + 1]
        assert sorted(line.split()[1:]) == sorted(argv), line
        assert f"{name} = {argv[0]} {argv[1]}" in help_
