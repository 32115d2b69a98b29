"""The command line: ``python -m bench <command> …``.

Only this module and its parser (bench/cli/parser.py) read arguments (DESIGN.md §2). Every
command returns an exit code: 0 on success, 2 for bad input (one clear line on stderr,
nothing written), 1 for a failure while working.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from bench.cli.experiments import cmd_check, cmd_single_obs
from bench.cli.parser import UsageError, build_parser, method_settings
from bench.report.tables import HEADLINE


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
    from bench.worlds import UnknownWorldError, load_world

    overrides = {"path": args.era5_path} if args.era5_path else {}
    try:
        world = load_world(args.world, **overrides)
    except (UnknownWorldError, TypeError) as err:
        raise UsageError(str(err)) from None
    print(world.prepare(progress=not args.quiet))
    return 0




def _train_method(args: argparse.Namespace) -> int:
    """`train <method>`: run a registered method's prepare() (training, statistics) into its
    cache, exactly as `run` would, so a later run starts at once."""
    import shutil
    import time

    from bench import runner
    from bench.config import CycleSettings, RunConfig
    from bench.worlds import UnknownWorldError
    from methods import UnknownMethodError

    try:
        cfg = RunConfig(world=args.world, methods=(args.what,), cycle=CycleSettings(days=1),
                        threads=args.threads, method_settings=method_settings(args.set))
        runner.preflight(cfg)
        method = runner.build_method(cfg, args.what)
    except (ValueError, UnknownWorldError, UnknownMethodError) as err:
        raise UsageError(f"cannot train {args.what!r}: {err} (valid: emulator or a method "
                         f"of `python -m bench methods`)") from None
    if args.steps is not None:
        raise UsageError(f"--steps applies to the emulator only; {args.what}'s training "
                         f"settings are fields of the method (see `python -m bench methods`)")
    s = runner.setup(cfg, progress=not args.quiet)
    ctx = runner.training_context(s, method, progress=not args.quiet)
    if args.retrain and ctx.cache_dir.exists():
        shutil.rmtree(ctx.cache_dir)
    start = time.perf_counter()
    method.prepare(ctx)
    print(f"{args.what}: prepared in {time.perf_counter() - start:.1f} s; cached in "
          f"{ctx.cache_dir}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import load_or_train, load_period
    from bench.forecast.skill import lead_time_rmse
    from bench.store import command_line, write_table
    from bench.worlds import UnknownWorldError, load_world

    if args.what != "emulator":
        return _train_method(args)
    if args.set:
        raise UsageError(f"--set {args.set[0]!r}: --set sets a method's fields; the emulator's "
                         "training length is --steps")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be a positive number of optimiser steps, got {args.steps}")
    try:
        world = load_world(args.world)
    except UnknownWorldError as err:
        raise UsageError(str(err)) from None
    cfg = EmulatorConfig()
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    torch.set_num_threads(args.threads)
    model, log = load_or_train(world, cfg, progress=not args.quiet, retrain=args.retrain)
    print(f"emulator: {log['parameters']} parameters, trained in {log['seconds']} s "
          f"({cfg.steps} steps); final loss {log['losses'][-1][1]:.4f}")
    climatology = load_period(world, "train").mean(dim=0)
    table = lead_time_rmse(model, load_period(world, "valid"), climatology, channels=HEADLINE)
    wide = table.pivot(index="channel", columns="lead_hours", values="model").loc[list(HEADLINE)]
    print("latitude-weighted RMSE on the validation period (model):")
    print(wide.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.results:
        notes = (f"Latitude-weighted RMSE (physical units) of the built-in emulator on the "
                 f"validation period of `{world.name}`, daily starts, next to persistence and "
                 f"the training-period climatology. Emulator: {log['parameters']} parameters, "
                 f"{cfg.steps} steps, trained in {log['seconds']} s.")
        paths = write_table(table, args.results, "skill", "Emulator skill by lead time",
                            command_line(), notes)
        print("wrote", ", ".join(map(str, paths)))
    return 0


def _cmd_samples(args: argparse.Namespace) -> int:
    import torch

    from bench.forecast.emulator_train import emulator_entry, load_or_train
    from bench.samples import KINDS, SampleSettings, load_or_make_samples
    from bench.worlds import UnknownWorldError, load_world

    if args.kind not in KINDS:
        raise UsageError(f"unknown sample kind {args.kind!r}; valid kinds are {', '.join(KINDS)}")
    try:
        world = load_world(args.world)
        settings = SampleSettings(kind=args.kind, lead_hours=args.lead_hours)
    except (UnknownWorldError, ValueError) as err:
        raise UsageError(str(err)) from None
    torch.set_num_threads(args.threads)
    model, _ = load_or_train(world, progress=not args.quiet)
    key = emulator_entry(world, model.config).name
    samples = load_or_make_samples(world, model, key, settings, progress=not args.quiet)
    spec = world.spec
    std = samples.std(dim=(0, 2, 3)).double() * torch.tensor(spec.std)
    print(f"{samples.shape[0]} {args.kind} samples of shape {tuple(samples.shape[1:])} "
          f"from the training period of {world.name}")
    for name in HEADLINE:
        i = spec.index(name)
        print(f"  {name:>5}: std {float(std[i]):.4g} {spec.channels[i].units}")
    return 0


def run_config(args: argparse.Namespace):
    """The RunConfig a ``run`` command line describes (every flag maps to one field)."""
    from bench.config import CycleSettings, ForecastSettings, RunConfig

    return RunConfig(
        world=args.world, era5_path=args.era5_path,
        forecast=ForecastSettings(kind=args.model, fengwu_onnx=args.fengwu_onnx,
                                  fengwu_mean=args.fengwu_mean, fengwu_std=args.fengwu_std,
                                  emulator_steps=args.emulator_steps),
        methods=args.methods, densities=args.density, seeds=args.seeds,
        obs_sampling=args.obs_sampling, obs_noise=args.obs_noise, obs_redraw=not args.obs_fixed,
        cycle=CycleSettings(days=args.days, first_lead_hours=args.first_lead, start=args.start,
                            spinup_cycles=args.spinup_cycles,
                            divergence_factor=args.divergence_factor,
                            forecast_every=args.forecast_every,
                            forecast_hours=args.forecast_hours,
                            history_update=args.history_update),
        device=args.device, threads=args.threads,
        method_settings=method_settings(args.set),
    )


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
    from bench import runner
    from bench.store import command_line
    from bench.worlds import UnknownWorldError
    from methods import UnknownMethodError

    command = command_line()
    executor = None
    try:
        cfg = run_config(args)
        _check_executor_flags(args)
        runner.preflight(cfg)
        runner.check_output(Path(args.out), cfg, args.resume)
        if args.executor == "dask":
            from bench.dask_executor import connect

            executor = connect(args.scheduler, args.dask_workers, cfg.device)
    except (ValueError, UnknownWorldError, UnknownMethodError) as err:
        raise UsageError(str(err)) from None
    try:
        ds = runner.run(cfg, args.out, resume=args.resume, progress=not args.quiet,
                        command=command, executor=executor)
    except ValueError as err:  # bad input discovered while setting up (ERA5 store, FengWu graph)
        raise UsageError(str(err)) from None
    finally:
        if executor is not None:
            executor.close()
    _report(ds, Path(args.out), command)
    # A diverged method is a result of the benchmark; a cell that raised is a failure of the run.
    return 1 if any(str(s) == "error" for s in ds["status"].values.ravel()) else 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from methods import METHODS

    for name, cls in METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:>8}  {cls.__name__}: {doc}")
        print(f"{'':>10}settings: {cls().config()}")
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

    from bench.experiments.timing import TimingSettings, format_for_terminal, run_timing
    from bench.store import command_line

    settings = TimingSettings(methods=args.methods, grid=args.grid, channels=args.channels,
                              density=args.density, repeats=args.repeats, device=args.device,
                              seed=args.seed)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    try:
        table, paths = run_timing(settings, args.out, command_line(),
                                  progress=None if args.quiet else print)
    except ValueError as err:  # bad settings, or a grid that would not fit in memory
        raise UsageError(str(err)) from None
    print(format_for_terminal(table))
    print("wrote", ", ".join(map(str, paths)))
    return 0


#: handler name (cli/parser.py's ``handler=…``) -> the function that runs it
COMMANDS = {
    "worlds": _cmd_worlds, "prepare": _cmd_prepare, "train": _cmd_train,
    "samples": _cmd_samples, "run": _cmd_run, "single_obs": cmd_single_obs,
    "tables": _cmd_tables, "compare": _cmd_compare, "timing": _cmd_timing,
    "methods": _cmd_methods, "check": cmd_check,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.handler](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
