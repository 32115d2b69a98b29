"""The command line: ``python -m bench <command> …``.

Only this module parses arguments (DESIGN.md §2). Every command returns an exit code: 0 on
success, 2 for bad input (one clear line on stderr, nothing written), 1 for a failure while
working.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from bench.tables import HEADLINE


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the problem (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


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
    from methods import UnknownMethodError, get_method

    try:
        method = get_method(args.what)()
        cfg = RunConfig(world=args.world, methods=(args.what,), cycle=CycleSettings(days=1),
                        threads=args.threads)
        runner.preflight(cfg)
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


def _comma_list(kind, flag):
    def parse(text: str):
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes a comma list of {kind.__name__}s, e.g. {flag} "
                f"{'0.01,0.05' if kind is float else '0,1' if kind is int else 'none,interp'}; "
                f"got {text!r}") from None
        return values
    return parse


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


def method_settings(items: list[str] | None) -> dict[str, dict]:
    """``--set METHOD.FIELD=VALUE`` items -> {method: {field: value}}. VALUE is read as JSON
    (numbers, true/false, lists) and otherwise kept as a string."""
    out: dict[str, dict] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        name, dot, field = key.partition(".")
        if not (sep and dot and name and field):
            raise UsageError(f"--set {item!r} is not METHOD.FIELD=VALUE, e.g. --set vaevar.lam=4e4")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(name, {})[field] = value
    return out


def _report(ds, out, command: str) -> None:
    from bench.plots import write_figures
    from bench.tables import format_skill_for_terminal, write_tables

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


def _cmd_single_obs(args: argparse.Namespace) -> int:
    """One observation of one channel, every method's increment side by side (VAE-Var paper)."""
    from bench import runner
    from bench.config import CycleSettings, RunConfig
    from bench.single_obs import figure, single_observation_increments
    from bench.store import command_line, write_figure, write_text
    from bench.worlds import UnknownWorldError
    from methods import UnknownMethodError, get_method

    cfg = RunConfig(world=args.world, methods=args.methods, cycle=CycleSettings(days=1),
                    device=args.device, threads=args.threads)
    try:
        runner.preflight(cfg)
        if not -90 <= args.lat <= 90:
            raise ValueError(f"--lat {args.lat} must lie in [-90, 90]")
    except (ValueError, UnknownWorldError, UnknownMethodError) as err:
        raise UsageError(str(err)) from None
    s = runner.setup(cfg, progress=not args.quiet)
    spec = s.world.spec
    try:
        spec.index(args.channel)
    except ValueError as err:
        raise UsageError(str(err)) from None
    x_b = s.start.history[-1]  # a real state of the test period: non-linear methods need one
    increments = {}
    for name in args.methods:
        method = get_method(name)()
        method.prepare(runner.training_context(s, method, progress=not args.quiet))
        increments[name] = single_observation_increments(
            method, spec, args.channel, args.lat, args.lon, args.innovation,
            physical=True, error_std=args.error_std, x_b=x_b).cpu()
    level = int(args.channel[1:]) if args.channel[1:].isdigit() else None
    fig = figure(increments, spec, args.channel, level, obs_location=(args.lat, args.lon))
    out = Path(args.out)
    stem = f"single_obs_{args.channel}_{args.lat:g}N_{args.lon:g}E"
    path = write_figure(fig, out / f"{stem}.png")
    write_text(out / f"{stem}.md",
               f"# Single observation: {args.channel} at {args.lat:g}N {args.lon:g}E\n\n"
               f"Made by:\n\n```bash\n{command_line()}\n```\n\n"
               f"Innovation {args.innovation:g} {spec.channels[spec.index(args.channel)].units}, "
               f"observation error {args.error_std:g} (normalised); methods: "
               f"{', '.join(args.methods)}.\n\n![increments]({path.name})\n")
    print(f"wrote {path}")
    return 0


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
    from bench.compare import compare_runs, write_comparison
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

    from bench.store import command_line
    from bench.timing_table import TimingSettings, format_for_terminal, run_timing

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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m bench",
        description="assimbench: compare data-assimilation methods on identical forecast cycles.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worlds", help="list the worlds (dataset cards) and how to get them")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    p.set_defaults(func=_cmd_worlds)

    p = sub.add_parser("prepare", help="build or validate a world's local data")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--era5-path", default=None, help="ERA5 store in WeatherBench2 layout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train (or reload from cache) the emulator or a method")
    p.add_argument("what", help="emulator, or a method that learns (vaevar, diffda, 3dvar)")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: config)")
    p.add_argument("--retrain", action="store_true", help="ignore the cache and train again")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--results", default=None, help="write the skill table to this folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("samples", help="build background-error samples from the training period")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--kind", default="nmc", help="nmc (48 h − 24 h) or truth_minus_forecast")
    p.add_argument("--lead-hours", type=int, default=24, help="lead of truth − forecast samples")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_samples)

    p = sub.add_parser("run", help="cycle methods through identical forecast cycles")
    p.add_argument("--methods", type=_comma_list(str, "--methods"), default=("none",),
                   help="comma list of methods (see `methods`), e.g. none,interp")
    p.add_argument("--density", type=_comma_list(float, "--density"), default=(0.01,),
                   help="comma list of observed fractions of grid points in (0, 1]")
    p.add_argument("--seeds", type=_comma_list(int, "--seeds"), default=(0,),
                   help="comma list of seeds (observations, stochastic methods)")
    p.add_argument("--days", type=float, default=15.0, help="days of 6-hourly cycles")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--era5-path", default=None, help="ERA5 store in WeatherBench2 layout")
    p.add_argument("--model", default="emulator", help="forecast model: emulator or fengwu")
    p.add_argument("--fengwu-onnx", default=None, help="FengWu release: the .onnx graph")
    p.add_argument("--fengwu-mean", default=None, help="FengWu release: data_mean.npy")
    p.add_argument("--fengwu-std", default=None, help="FengWu release: data_std.npy")
    p.add_argument("--emulator-steps", type=int, default=None, help="emulator training steps")
    p.add_argument("--obs-sampling", default="columns", help="columns or elements")
    p.add_argument("--obs-noise", type=float, default=0.01,
                   help="obs error std / climatological std (0 = noise-free)")
    p.add_argument("--obs-fixed", action="store_true", help="same locations every cycle")
    p.add_argument("--first-lead", type=int, default=48, help="lead (h) of the first background")
    p.add_argument("--start", default=None, help="valid time of the first analysis (ISO)")
    p.add_argument("--spinup-cycles", type=int, default=8, help="cycles left out of tables")
    p.add_argument("--divergence-factor", type=float, default=3.0,
                   help="diverged when analysis RMSE > this x climatology's")
    p.add_argument("--forecast-every", type=int, default=0,
                   help="free forecasts from the analysis every N cycles (0: none)")
    p.add_argument("--forecast-hours", type=int, default=120, help="length of free forecasts")
    p.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                   help="a method hyper-parameter for this run (repeatable), e.g. "
                        "--set vaevar.lam=40000 --set diffda.steps=300")
    p.add_argument("--history-update", default="increment",
                   help="how the analysis enters the model's two input frames: increment (add "
                        "x_a - x_b to both; default) or replace (x_a replaces the last frame)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--out", default="results/run", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--executor", default="local", choices=("local", "dask"),
                   help="where cells run: local (this process) or dask (a Dask cluster)")
    p.add_argument("--scheduler", default=None,
                   help="address of a running dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--dask-workers", type=int, default=None,
                   help="start a local Dask cluster of N worker processes instead")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("single-obs", help="increments from one observation, per method")
    p.add_argument("--methods", type=_comma_list(str, "--methods"), default=("3dvar",),
                   help="comma list of methods")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--channel", default="z500", help="observed channel")
    p.add_argument("--lat", type=float, default=21.0, help="latitude of the observation (°N)")
    p.add_argument("--lon", type=float, default=129.0, help="longitude of the observation (°E)")
    p.add_argument("--innovation", type=float, default=-100.0,
                   help="y − x_b in the channel's physical units (default −100 m² s⁻²)")
    p.add_argument("--error-std", type=float, default=0.01,
                   help="observation error std, normalised (fraction of the channel's std)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--out", default="results/single-obs", help="folder for the figure")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_single_obs)

    p = sub.add_parser("tables", help="regenerate tables and figures from a run's metrics.nc")
    p.add_argument("run", help="the run folder")
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser("compare", help="one skill/time table from several runs (a sweep)")
    p.add_argument("runs", nargs="+", help="run folders, e.g. made with different --set values")
    p.add_argument("--out", required=True, help="folder for comparison.{md,csv,tex}")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("timing", help="time one analysis per method (random weights, any grid)")
    p.add_argument("--methods", type=_comma_list(str, "--methods"),
                   default=("3dvar", "vaevar", "diffda", "interp", "none"),
                   help="comma list of methods (see `methods`)")
    p.add_argument("--grid", default="32x64",
                   help="latitudes x longitudes, e.g. 32x64, 181x360, 721x1440 (odd: with poles)")
    p.add_argument("--channels", type=int, default=69, help="channels, 1..69 (FengWu's subset)")
    p.add_argument("--density", type=float, default=0.01, help="observed fraction in (0, 1]")
    p.add_argument("--repeats", type=int, default=5, help="timed analyses per method")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, states, observations")
    p.add_argument("--out", default="results/timing/run", help="folder for timing.{md,csv,tex}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_timing)

    p = sub.add_parser("methods", help="list the registered methods and their settings")
    p.set_defaults(func=_cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
