"""The argument parser of ``python -m bench``: every command and its flags.

Flags that set a config field come from the tables of bench/cli/flags.py (their defaults,
types and checks from the dataclasses); the few that are not config — where to write, whether
to resume, how quiet to be — are plain argparse flags here. Each subparser names its handler
(``handler=…``) and its table (``flags=…``), which the commands read their settings from and
errors are translated with.

``run --preset NAME`` (and ``tune --preset NAME``; bench/cli/presets.py) is read in two
passes (``parse_command_line``): the first finds the name, the second parses again with the
preset's flags as the defaults, so a flag on the command line overrides the preset's value.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from bench.cli.experiments import CheckSettings, SingleObsSettings
from bench.cli.flags import (
    COLUMNS,
    DENSITY,
    DEVICE,
    EMULATOR_PERIOD,
    ERA5_PATH,
    METHODS,
    OBS_NOISE,
    PERIODS,
    RUN,
    SET,
    SPACING,
    THREADS,
    WORLD,
    Flag,
    UsageError,
)
from bench.cli.presets import PRESET_FLAG, Preset, list_presets, load_preset, merge_set
from bench.cli.tune import TUNE_FLAGS
from bench.cli.tune import add_flags as add_tune_flags


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the problem (no usage dump), exit code 2."""

    def error(self, message: str):
        if message.endswith("expected one argument"):
            message += " (a value that starts with '-' is written --flag=VALUE)"
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _timing_flags() -> tuple[Flag, ...]:
    """``timing``'s flags: fields of TimingSettings (imported only when the command runs: it
    pulls in every method)."""
    from bench.experiments.timing import TimingSettings as T

    return (
        METHODS.with_(root=T),
        Flag("--grid", "grid", "latitudes x longitudes, e.g. 32x64, 181x360, 721x1440 (odd: "
                               "with poles)", root=T),
        Flag("--channels", "channels", "channels, 1..69 (FengWu's first ones)", root=T),
        Flag("--density", "density", "observed fraction of grid points in (0, 1]", root=T),
        Flag("--columns", "columns", "instead of --density: observed columns (1 to the grid's)",
             root=T),
        Flag("--spacing-km", "spacing_km", "instead of --density: mean spacing (km) of the "
                                           "observed columns (bench/obs_regime.py)", root=T),
        Flag("--repeats", "repeats", "timed analyses per method", root=T),
        DEVICE.with_(root=T),
        THREADS.with_(default=None, help="torch threads (default: torch's own choice)"),
        Flag("--seed", "seed", "seeds the random weights, states and observations", root=T),
    )


def samples_flags() -> tuple[Flag, ...]:
    from bench.samples import KINDS, SampleSettings

    return (WORLD, ERA5_PATH, *PERIODS, EMULATOR_PERIOD, THREADS,
            Flag("--kind", "kind", f"{', '.join(KINDS)} (48 h - 24 h forecasts or truth - "
                                   "forecast)", root=SampleSettings),
            Flag("--lead-hours", "lead_hours", "lead of truth - forecast samples",
                 root=SampleSettings),
            Flag("--count", "count", "number of known_prior draws (U w from 3DVar's B)",
                 root=SampleSettings),
            Flag("--start-stride", "start_stride", "frames between forecast starts (4 = daily)",
                 root=SampleSettings),
            Flag("--batch-size", "batch_size", "starts forecast together: the unit of memory "
                 "and of resumption after a kill", root=SampleSettings),
            Flag("--sample-period", "period", "START..END inside the training period the "
                 "samples come from (default: the training period)", root=SampleSettings),
            Flag("--sample-days", "days", "only the last N days of that window (0: all of it)",
                 root=SampleSettings),
            Flag("--max-samples", "max_samples", "at most N starts, evenly spread (0: no cap)",
                 root=SampleSettings))


#: command -> (help, handler, its config flags: a tuple or a function that makes one)
SUBCOMMANDS: dict[str, tuple[str, str, Sequence[Flag] | Callable[[], Sequence[Flag]]]] = {
    "worlds": ("list the worlds (dataset cards) and how to get them", "worlds", ()),
    "prepare": ("build or validate a world's local data", "prepare",
                (WORLD, ERA5_PATH, *PERIODS)),
    "train": ("train (or reload from cache) the emulator or a method", "train", (
        WORLD, ERA5_PATH, *PERIODS, EMULATOR_PERIOD,
        Flag("--steps", "forecast.emulator_steps",
             "emulator optimiser steps (default: the emulator's own)"),
        DEVICE, THREADS,
        SET.with_(help="a method hyper-parameter (repeatable), e.g. --set vaevar.epochs=30; "
                       "trains the configuration `run --set ...` would use"))),
    "samples": ("build background-error samples from the training period", "samples",
                samples_flags),
    "run": ("cycle methods through identical forecast cycles", "run", RUN),
    "tune": ("choose each method's settings per density on the validation period (equal "
             "budget per method), for run --tuned", "tune", TUNE_FLAGS),
    "single-obs": ("increments from one observation, per method", "single_obs", (
        METHODS.with_(default=None, help="comma list of methods to compare (required)"),
        WORLD, ERA5_PATH, *PERIODS, EMULATOR_PERIOD,
        *(Flag(f"--{f.replace('_', '-')}", f, h, root=SingleObsSettings)
          for f, h in SingleObsSettings.HELP.items()),
        DEVICE, THREADS)),
    "check": ("one analysis per method against a known background error (held-out forecasts, "
              "NMC differences or draws from a known B): error ratio per channel", "check", (
        METHODS.with_(default=None, help="comma list of methods to check (required)"),
        DENSITY.with_(default=(0.01, 0.05)), COLUMNS, SPACING, WORLD,
        ERA5_PATH, *PERIODS, EMULATOR_PERIOD, OBS_NOISE,
        *(Flag(f"--{f.replace('_', '-')}", f, h, root=CheckSettings)
          for f, h in CheckSettings.HELP.items()),
        SET.with_(help="a method hyper-parameter (repeatable), as for `run`"),
        DEVICE, THREADS)),
    "tables": ("regenerate tables and figures from a run's metrics.nc", "tables", ()),
    "compare": ("one skill/time table from several runs (a sweep)", "compare", ()),
    "timing": ("time one analysis per method (random weights, any grid)", "timing",
               _timing_flags),
    "methods": ("list the registered methods and their settings", "methods", ()),
    "presets": ("list the presets of `run --preset` (named groups of flags) and their flags",
                "presets", ()),
}

#: commands that take ``--preset`` (``tune --preset paper-regimes``: that grid's densities)
PRESET_COMMANDS = ("run", "tune")
#: commands whose default flags differ from the config's on purpose (tests/test_cli.py)
OWN_DEFAULTS = {"single-obs": {"--methods"}, "check": {"--methods", "--density"},
                "timing": {"--threads"}}


def build_parser(command: str | None = None, preset: Preset | None = None) -> OneLineParser:
    """The parser; with ``command``, only that command's flags are built (``timing``'s table
    imports every method), the others are listed by name. None builds them all. ``preset``
    (``PRESET_COMMANDS`` only): its flags become the defaults of that command's."""
    parser = OneLineParser(
        prog="python -m bench",
        description="assimbench: compare data-assimilation methods on identical forecast cycles.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, handler, flags) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(handler=handler, flags=())
        if command not in (None, name):
            continue
        flags = tuple(flags() if callable(flags) else flags)
        for flag in flags:
            flag.add_to(p)
        p.set_defaults(flags=flags)
        _plain_flags(name, p)
        if preset is not None and name in PRESET_COMMANDS:
            p.set_defaults(**_preset_defaults(preset, flags))
    return parser


def _preset_defaults(preset: Preset, flags: Sequence[Flag]) -> dict:
    """argparse defaults (dest -> value as if typed) of a preset's flags; ``--set`` is merged
    after parsing (``parse_command_line``), item by item."""
    by_name = {f.name: f for f in flags}
    return {by_name[name].dest: preset.text(name) for name in preset.flags if name != "--set"}


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """The namespace of a command line, a preset's flags in where none was typed.

    Sets ``args.preset_values`` ({dest: the preset's value}, empty without a preset) for
    error messages to say where a value came from. Raises SystemExit (``--help``, argparse's
    own one-line errors) and UsageError (an unknown preset, a bad preset file)."""
    argv = list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    args.preset_values = {}
    name = getattr(args, "preset", None)
    if name is None:
        return args
    preset = load_preset(name, args.flags)
    args = build_parser(command, preset).parse_args(argv)
    args.preset_values = _preset_defaults(preset, args.flags)
    if "--set" in preset.flags:
        args.set = merge_set(preset.flags["--set"], args.set)
    return args


def _preset_help(flags: Sequence[Flag]) -> str:
    """``--preset``'s help: each preset and its flags (argparse's %% escaped)."""
    try:
        presets = list_presets(flags)
    except UsageError as err:
        listed = f"none readable: {err}"
    else:
        listed = "; ".join(f"{p.name} = {p.command_line()}" for p in presets.values())
    text = ("a named group of flags (presets/NAME.toml, listed by `python -m bench presets`); "
            f"a flag given here overrides the preset's value. Presets: {listed}")
    return text.replace("%", "%%")


def _plain_flags(name: str, p: argparse.ArgumentParser) -> None:
    """The flags that are not config: what to act on, where to write, how to report."""
    out = {"run": "results/run", "tune": "results/tune", "single-obs": "results/single-obs",
           "check": "results/analysis-check", "timing": "results/timing/run"}
    if name == "worlds":
        p.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    if name == "train":
        p.add_argument("what", help="emulator, or a registered method that learns "
                                    "(see `python -m bench methods`)")
        p.add_argument("--retrain", action="store_true", help="ignore the cache and train again")
        p.add_argument("--results", default=None, help="write the skill table to this folder")
    if name == "tables":
        p.add_argument("run", help="the run folder")
    if name == "compare":
        p.add_argument("runs", nargs="+", help="run folders, e.g. made with different --set")
        p.add_argument("--out", required=True, help="folder for comparison.{md,csv,tex}")
    if name in out:
        p.add_argument("--out", default=out[name], help=f"output folder (default: {out[name]})")
    if name in PRESET_COMMANDS:
        p.add_argument(PRESET_FLAG, default=None, metavar="NAME",
                       help=_preset_help(p.get_default("flags")))
    if name == "run":
        p.add_argument("--resume", action="store_true", help="continue an interrupted run")
        p.add_argument("--executor", default="local", choices=("local", "dask"),
                       help="where cells run: local (this process) or dask (a Dask cluster)")
        p.add_argument("--scheduler", default=None,
                       help="address of a running dask scheduler, e.g. tcp://host:8786")
        p.add_argument("--dask-workers", type=int, default=None,
                       help="start a local Dask cluster of N worker processes instead")
    add_tune_flags(name, p)
    if name in ("prepare", "train", "samples", "run", "tune", "single-obs", "check", "timing"):
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
