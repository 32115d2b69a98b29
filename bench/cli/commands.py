"""The command line: ``python -m bench <command> …``.

Only bench/cli/ reads arguments (DESIGN.md §2). Every command returns an exit code: 0 on
success, 2 for bad input (one line on stderr naming the flag and the value, nothing written,
nothing built), 1 for a failure while working. Bad input is found before any work: each
command reads its settings from the flags (bench/cli/flags.py), then runs ``preflight`` once.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from bench.cli.experiments import cmd_check, cmd_single_obs
from bench.cli.flags import (
    UsageError,
    bad_input,
    config_from_args,
    flag_message,
    settings_from_args,
)
from bench.cli.parser import parse_command_line, samples_flags
from bench.cli.tune import apply_tuned, cmd_tune
from bench.report.tables import HEADLINE
from bench.validation import ConfigError


def _cmd_worlds(args: argparse.Namespace) -> int:
    from bench.worlds import list_cards

    for name, card in list_cards().items():
        grid = card.get("grid", {})
        periods = card.get("periods", {})
        span = ", ".join(
            f"{k} {v.get('start', '?')[:10]}..{v.get('end', '?')[:10]}" for k, v in periods.items()
        )
        print(f"{name}  [{card.get('kind')}]  {grid.get('type')} "
              f"{grid.get('nlat')}x{grid.get('nlon')}  {card.get('channels', {}).get('layout')}")
        if span:
            print(f"    periods: {span}")
        description = " ".join(card.get("description", "").split())
        if args.verbose and description:
            print(textwrap.indent(textwrap.fill(description, 92), "    "))
        how = card.get("source", {}).get("how")
        if how:
            print(f"    get it: {' '.join(how.split())}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    """Build (the nature run) or validate (an ERA5 store: metadata, the periods, a sample of
    each variable read back) the world. Bad input, and a store that cannot serve the card, is
    one line and exit code 2, found before anything is generated or written."""
    cfg = config_from_args(args)

    from bench.setup import open_world

    with bad_input():
        world = open_world(cfg)
        world.check()
        # an ERA5 store's prepare only validates (ERA5Error: a ValueError, bad input); the
        # nature run's generates, and a failure there (RuntimeError) stays a failure, exit 1
        status = world.prepare(progress=not args.quiet)
    print(status)
    return 0


def _train_method(args: argparse.Namespace) -> int:
    """`train <method>`: fit a registered method into the runner's cache, exactly as `run`
    would (same world, model and --set values), so a later run starts at once."""
    import time

    if args.steps is not None:
        raise UsageError(f"--steps applies to the emulator only; {args.what}'s training "
                         f"settings are fields of the method (see `python -m bench methods`)")
    for item in args.set or []:
        if item.partition(".")[0] != args.what:
            raise UsageError(f"--set {item}: `train {args.what}` takes settings of "
                             f"{args.what} only (--set {args.what}.FIELD=VALUE)")
    cfg = config_from_args(args, methods=(args.what,))

    from bench import runner
    from bench.setup import build_method, fit_and_load, fit_entry, setup

    with bad_input(f"cannot train {args.what!r}: "):
        runner.preflight(cfg)
    s = setup(cfg, progress=not args.quiet)
    method = build_method(cfg, args.what)
    start = time.perf_counter()
    fit_and_load(s, method, progress=not args.quiet, refit=args.retrain)
    print(f"{args.what}: fitted (or loaded) in {time.perf_counter() - start:.1f} s; cached in "
          f"{fit_entry(s, method)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.what != "emulator":
        return _train_method(args)
    if args.set:
        raise UsageError(f"--set {args.set[0]}: --set sets a method's fields; the emulator's "
                         "training length is --steps")
    cfg = config_from_args(args)

    from bench.setup import emulator_world, open_world

    with bad_input():
        world = emulator_world(cfg, open_world(cfg))
    return _train_emulator(args, cfg, world)


def _train_emulator(args: argparse.Namespace, cfg, world) -> int:
    """Train (or load) the emulator, print its validation skill by lead time, and optionally
    write it as a table."""
    import dataclasses

    import torch

    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import load_or_train, load_period
    from bench.forecast.skill import lead_time_rmse
    from bench.store import command_line, write_table
    from bench.training_truth import mapped_period

    emulator = EmulatorConfig()
    if cfg.forecast.emulator_steps is not None:
        emulator = dataclasses.replace(emulator, steps=cfg.forecast.emulator_steps)
    torch.set_num_threads(cfg.threads)
    model, log = load_or_train(world, emulator, progress=not args.quiet, retrain=args.retrain)
    print(f"emulator: {log['parameters']} parameters, trained in {log['seconds']} s "
          f"({emulator.steps} steps); final loss {log['losses'][-1][1]:.4f}")
    climatology = mapped_period(world, "train").mean(dim=0)
    table = lead_time_rmse(model, load_period(world, "valid"), climatology, channels=HEADLINE)
    wide = table.pivot(index="channel", columns="lead_hours", values="model").loc[list(HEADLINE)]
    print("latitude-weighted RMSE on the validation period (model):")
    print(wide.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.results:
        notes = (f"Latitude-weighted RMSE (physical units) of the built-in emulator on the "
                 f"validation period of `{world.name}`, daily starts, next to persistence and "
                 f"the training-period climatology. Emulator: {log['parameters']} parameters, "
                 f"{emulator.steps} steps, trained in {log['seconds']} s.")
        paths = write_table(table, args.results, "skill", "Emulator skill by lead time",
                            command_line(), notes)
        print("wrote", ", ".join(map(str, paths)))
    return 0


def _cmd_samples(args: argparse.Namespace) -> int:
    from bench.samples import SampleSettings

    cfg = config_from_args(args)
    try:
        settings = settings_from_args(args, SampleSettings)
    except (ValueError, TypeError) as err:  # SampleSettings: "field=value must be ..."
        flags = {flag.field: flag.name for flag in samples_flags()}
        field = str(err).split("=", 1)[0]
        raise UsageError(f"{flags[field]}: {err}" if field in flags else str(err)) from None

    import torch

    from bench.forecast.emulator_train import emulator_entry, load_or_train
    from bench.samples import load_or_make_samples
    from bench.samples_forecast import window
    from bench.setup import emulator_world, open_world
    from methods.common.moments import channel_std

    with bad_input():
        world = open_world(cfg)
        model_world = emulator_world(cfg, world)
    if settings.kind != "known_prior":  # before the emulator is trained or loaded
        with bad_input("--sample-period: "):
            window(world.period("train").time.values, settings)
    torch.set_num_threads(cfg.threads)
    model, _ = load_or_train(model_world, progress=not args.quiet)
    key = emulator_entry(model_world, model.config).name
    samples = load_or_make_samples(world, model, key, settings, progress=not args.quiet)
    spec = world.spec
    std = channel_std(samples) * torch.tensor(spec.std)
    print(f"{samples.shape[0]} {settings.kind} samples of shape {tuple(samples.shape[1:])} "
          f"from the training period of {world.name}")
    for name in HEADLINE:
        i = spec.index(name)
        print(f"  {name:>5}: std {float(std[i]):.4g} {spec.channels[i].units}")
    return 0


def _report(ds, out, command: str) -> None:
    from bench.report.plots import write_figures
    from bench.report.tables import format_skill_for_terminal, write_tables

    paths = write_tables(ds, out, command)
    paths += write_figures(ds, out)
    print(format_skill_for_terminal(ds))
    print(f"wrote {len(paths)} tables and figures under {out}")


def _check_executor_flags(args: argparse.Namespace) -> None:
    """--scheduler/--dask-workers belong to --executor dask, which needs exactly one of them."""
    if args.executor == "dask":
        from bench.dask_executor import check_flags

        check_flags(args.scheduler, args.dask_workers)
    elif args.scheduler is not None or args.dask_workers is not None:
        raise UsageError("--scheduler and --dask-workers need --executor dask")


def _cmd_run(args: argparse.Namespace) -> int:
    """Every check first (flags, config, methods and --set values, world card, FengWu files,
    --out, executor flags: ``preflight`` once), then the grid."""
    cfg = config_from_args(args)  # before the harness is imported: the flags alone first
    if args.tuned is not None:  # per-density settings of `bench tune` (bench/cli/tune.py)
        cfg = apply_tuned(cfg, args.tuned)

    from bench import runner
    from bench.setup import resolved_config
    from bench.store import command_line

    command = command_line()
    with bad_input():
        _check_executor_flags(args)
        runner.preflight(cfg)
        cfg = resolved_config(cfg)  # the card's periods and the normalisation, for config.json
        runner.check_output(Path(args.out), cfg, args.resume)
    executor = None
    if args.executor == "dask":
        from bench.dask_executor import connect

        with bad_input():
            executor = connect(args.scheduler, args.dask_workers, cfg.device)
    try:
        ds = runner.run(cfg, args.out, resume=args.resume, progress=not args.quiet,
                        command=command, executor=executor)
    except ConfigError:
        raise  # main names its flag
    except ValueError as err:  # bad input found while setting up (ERA5 store, FengWu graph)
        raise UsageError(str(err)) from None
    finally:
        if executor is not None:
            executor.close()
    _report(ds, Path(args.out), command)
    # A diverged method is a result of the benchmark; a cell that raised is a failure of the run.
    return 1 if any(str(s) == "error" for s in ds["status"].values.ravel()) else 0


def _cmd_methods(args: argparse.Namespace) -> int:
    """Each registered method, its settings (what --set may change) and what it needs."""
    from methods import METHODS

    for name, cls in METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:>8}  {cls.__name__}: {doc}")
        settings = {k: v for k, v in cls().config().items() if k != "seed"}
        print(f"{'':>10}settings: {settings}")
        if cls.tuning_grid:  # what `python -m bench tune` tries (methods/base tuning_grid)
            print(f"{'':>10}tuning grid: {dict(cls.tuning_grid)}")
        needs = [f"{k} {getattr(cls, k)}" for k in ("members", "window_hours")
                 if getattr(cls, k, 0)]
        if needs:
            print(f"{'':>10}needs: {', '.join(needs)}")
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    import xarray as xr

    from bench.store import command_line

    path = Path(args.run) / "metrics.nc"
    if not path.exists():
        raise UsageError(f"{path} does not exist; give the folder of a finished run "
                         f"(python -m bench run … --out FOLDER)")
    ds = xr.load_dataset(path)
    _report(ds, Path(args.run), ds.attrs.get("command", command_line()))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Several runs (a settings sweep) -> one table of skill and time per analysis."""
    from bench.report.compare import compare_runs, write_comparison
    from bench.store import command_line

    try:
        paths = write_comparison(args.runs, args.out, command_line())
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(compare_runs(args.runs).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("wrote", ", ".join(map(str, paths)))
    return 0


def _cmd_timing(args: argparse.Namespace) -> int:
    """One analysis per method at any grid with random weights: time, memory, kernel rates."""
    import torch

    from bench.cli.densities import density_flag
    from bench.config import RunConfig
    from bench.experiments.timing import TimingSettings, format_for_terminal, run_timing
    from bench.store import command_line

    density_flag(args)  # one of --density, --columns, --spacing-km
    settings = settings_from_args(args, TimingSettings)
    threads = next(f for f in args.flags if f.name == "--threads").value(args)
    if threads is not None:
        RunConfig(threads=threads)  # the run's rule for --threads (ConfigError names it)
        torch.set_num_threads(threads)
    with bad_input():
        settings = settings.resolved()  # --columns, --spacing-km: the density on the grid
        settings.check()
    try:
        table, paths = run_timing(settings, args.out, command_line(),
                                  progress=None if args.quiet else print)
    except ConfigError:
        raise
    except ValueError as err:  # a grid that would not fit in memory
        raise UsageError(str(err)) from None
    print(format_for_terminal(table))
    print("wrote", ", ".join(map(str, paths)))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    """Each preset of ``run --preset`` and the flags it stands for."""
    from bench.cli.flags import RUN
    from bench.cli.presets import list_presets, presets_dir

    presets = list_presets(RUN)
    print(f"presets of `python -m bench run --preset NAME` ({presets_dir()}); a flag given on "
          "the command line overrides the preset's value:")
    for preset in presets.values():
        print(f"{preset.name}: {preset.description}")
        print(f"    = {preset.command_line()}")
    return 0


#: handler name (cli/parser.py's ``handler=…``) -> the function that runs it
COMMANDS = {
    "worlds": _cmd_worlds, "prepare": _cmd_prepare, "train": _cmd_train,
    "samples": _cmd_samples, "run": _cmd_run, "single_obs": cmd_single_obs,
    "tables": _cmd_tables, "compare": _cmd_compare, "timing": _cmd_timing,
    "methods": _cmd_methods, "check": cmd_check, "presets": _cmd_presets, "tune": cmd_tune,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_command_line(argv)
    except SystemExit as done:  # --help, or argparse's own one-line error: an exit code too
        return int(done.code or 0)
    except UsageError as err:  # an unknown preset, or a bad preset file
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.handler](args)
    except ConfigError as err:  # raised anywhere (config, runner, cycle): named as its flag
        print(f"error: {flag_message(err, args)}", file=sys.stderr)
    except UsageError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2
