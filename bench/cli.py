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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
