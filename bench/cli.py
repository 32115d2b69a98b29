"""The command line: ``python -m bench <command> …``.

Only this module parses arguments (DESIGN.md §2). Every command returns an exit code: 0 on
success, 2 for bad input (one clear line on stderr, nothing written), 1 for a failure while
working.
"""

from __future__ import annotations

import argparse
import sys
import textwrap


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


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


HEADLINE = ("z500", "t850", "u850", "t2m", "q700", "msl", "u10")


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import load_or_train, load_period
    from bench.forecast.skill import lead_time_rmse
    from bench.store import command_line, write_table
    from bench.worlds import UnknownWorldError, load_world

    if args.what != "emulator":
        raise UsageError(f"cannot train {args.what!r} yet; valid: emulator")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    p = sub.add_parser("train", help="train (or reload from cache) a network: emulator")
    p.add_argument("what", help="what to train: emulator")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
