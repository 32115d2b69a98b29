"""``--columns`` and ``--spacing-km``: the observation densities asked as a number of observed
columns or a mean spacing (bench/obs_regime.py), instead of ``--density``.

One of the three flags is in force: the one typed, else the one a preset set (a typed flag
overrides a preset's, as every flag does); two typed at once is one line, exit code 2. A
request is converted on the grid of the world's card — nothing is built — into one density per
item, so the run, its cells and its observation draws are those of ``--density`` with the
converted values (``--columns 20`` on the 32 x 64 grid is ``--density 0.009765625``);
config.json keeps the request (``density_request``) next to the densities it became. A count
outside 1 … the grid's columns or a spacing outside the grid's range is a ConfigError naming
the flag (bench/cli/flags.flag_message).
"""

from __future__ import annotations

import argparse

from bench.cli.flags import DENSITY, DENSITY_FLAGS, UsageError, bad_input
from bench.config import RunConfig
from bench.obs_regime import DensityRequest, resolve_densities
from bench.validation import nested


def density_flag(args: argparse.Namespace):
    """The density flag in force among a command's ``--density``, ``--columns``,
    ``--spacing-km`` and all three of them: (flag, flags); None for a command without
    ``--columns``. UsageError for two typed (or, untyped, two a preset set) at once."""
    names = {f.name for f in DENSITY_FLAGS}  # by name: a command may change a default
    flags = [f for f in getattr(args, "flags", ()) if f.name in names]
    if len(flags) < 2:
        return None
    preset = getattr(args, "preset_values", None) or {}
    # a typed or preset value is text; a flag left out holds its (already typed) default
    given = [f for f in flags if isinstance(getattr(args, f.dest), str)]
    typed = [f for f in given if preset.get(f.dest) != getattr(args, f.dest)]
    chosen = typed or given
    if len(chosen) > 1:
        shown = " and ".join(f"{f.name} {getattr(args, f.dest)}" for f in chosen)
        raise UsageError(f"{shown}: expected one of {', '.join(f.name for f in flags)} (three "
                         "ways of choosing the observation densities); give only one")
    return (chosen[0] if chosen else next(f for f in flags if f.name == DENSITY.name)), flags


def density_choice(args: argparse.Namespace) -> dict:
    """Overrides (dotted field -> value) of the densities a command line asks for: with
    ``--columns`` or ``--spacing-km`` in force, the converted ``densities`` and the request;
    the density flags not in force switched off (None). UsageError for two at once
    (``density_flag``); ConfigError (naming the flag) for a bad request."""
    found = density_flag(args)
    if found is None:
        return {}
    keep, flags = found
    out = {f.field: None for f in flags if f.name not in (DENSITY.name, keep.name)}
    if keep.name == DENSITY.name:
        return out
    values = keep.value(args)
    name = keep.field.split(".")[-1]
    request = nested("density_request", lambda: DensityRequest(**{name: values}))
    world = next((f.value(args) for f in args.flags if f.field == "world"),
                 RunConfig().world)
    from bench.worlds import card_grid  # only now: it imports the state layer (torch)

    with bad_input():  # an unknown world: one line naming it
        grid = card_grid(world)
    densities = resolve_densities(grid, request.columns, request.spacing_km)
    return out | {keep.field: values, "densities": densities}
