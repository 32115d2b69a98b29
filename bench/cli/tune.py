"""``python -m bench tune`` and ``run --tuned FILE``: the command-line side of the tuning
protocol (bench/experiments/tune.py).

``tune`` takes ``run``'s flags except ``--period`` (it always cycles the validation period),
plus ``--grid FILE`` (bench/experiments/tuning_grid.py), ``--budget N`` (candidate settings
per method, the default included), ``--refit`` (allow grid fields that change the fit),
``--out``, ``--resume``. ``run --tuned OUT/tuned.toml`` applies the chosen settings per
density. Every bad input is one line and exit code 2 before anything is built.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench.cli.flags import RUN, UsageError, bad_input, config_from_args
from bench.config import RunConfig, differences
from bench.tuned import density_key, protocol, read_toml
from bench.validation import ConfigError

#: candidate settings per method, the default included (``--budget``)
DEFAULT_BUDGET = 8
#: ``tune``'s config flags: ``run``'s but ``--period`` (the validation period, always)
TUNE_FLAGS = tuple(f for f in RUN if f.field != "cycle.period")


def add_flags(name: str, p: argparse.ArgumentParser) -> None:
    """``tune``'s plain flags, and ``run``'s ``--tuned``."""
    if name == "run":
        p.add_argument("--tuned", default=None, metavar="FILE",
                       help="tuned.toml of `python -m bench tune`: each listed method's "
                            "settings per density (every density of the run needs one)")
    if name != "tune":
        return
    p.add_argument("--grid", default=None, metavar="FILE",
                   help="TOML, one [method] table of field = [values] per method; replaces "
                        "that method's declared grid (bench/experiments/tuning_grid.py)")
    p.add_argument("--budget", default=str(DEFAULT_BUDGET), metavar="N",
                   help="candidate settings per method, the default included; a larger grid "
                        f"is refused (default: {DEFAULT_BUDGET})")
    p.add_argument("--refit", action="store_true",
                   help="allow grid fields outside a method's analysis_fields (each value "
                        "refits the method)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted tuning")


def _budget(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--budget {text}: expected an integer >= 1 (candidate settings per "
                         "method, the default included)")
    return value


def _check_out(out: Path, cfg: RunConfig, resume: bool) -> None:
    """Refuse to mix tunings: an existing one needs --resume (whose candidate runs must then
    have the same config, bench/runner.py), and --out must be writable."""
    from bench import runner

    if not resume and ((out / "tuned.toml").exists() or (out / "candidates").exists()):
        raise UsageError(f"--out {out} already holds a tuning; pass --resume to continue it "
                         "or choose another --out")
    runner.check_output(out, cfg, resume)


def cmd_tune(args: argparse.Namespace) -> int:
    """Check everything (flags, methods, --set, grids, budget, world, --out), then cycle every
    candidate on the validation period and write OUT/tuned.toml and OUT/tuning.*."""
    cfg = config_from_args(args)
    budget = _budget(args.budget)

    from bench import runner
    from bench.experiments.tune import (
        run_candidates,
        tuning_config,
        write_outputs,
    )
    from bench.experiments.tuning_grid import plan
    from bench.setup import resolved_config
    from bench.store import command_line

    command = command_line()
    with bad_input():
        runner.preflight(cfg)
        grids = plan(cfg.methods, cfg.method_settings, args.grid, budget, args.refit)
        if not any(g.tunes for g in grids):
            raise UsageError(f"--methods {','.join(cfg.methods)}: nothing to tune (no method "
                             "has a grid, declared or in --grid)")
        cfg = resolved_config(tuning_config(cfg))
        _check_out(Path(args.out), cfg, args.resume)
    try:
        table = run_candidates(cfg, grids, args.out, resume=args.resume,
                               progress=not args.quiet, command=command)
    except ConfigError:
        raise  # main names its flag
    except ValueError as err:  # bad input found while setting up (ERA5 store, FengWu graph)
        raise UsageError(str(err)) from None
    paths = write_outputs(cfg, grids, table, args.out, command, budget)
    print(summary(table))
    print("wrote", ", ".join(map(str, paths)))
    return 0


def summary(table) -> str:
    """Per method and density: the chosen candidate, its score and the default's."""
    if table.empty:
        return "nothing to tune: no method of --methods has a grid"
    lines = ["chosen on the validation period (score: channel-mean normalised analysis RMSE)"]
    for (method, density), rows in table.groupby(["method", "density"], sort=False):
        best = rows[rows["chosen"]].iloc[0]
        default = rows[rows["candidate"] == 0].iloc[0]
        lines.append(f"  {method} at {density:g}: {best['settings']} (score {best['score']:.4g};"
                     f" default {default['score']:.4g}; {len(rows)} candidates)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run --tuned
def read_tuned(path: str | Path) -> dict:
    """tuned.toml as a dict; UsageError (naming ``--tuned``) when it is not one."""
    where = f"--tuned {path}"
    doc = read_toml(path, "--tuned", UsageError)
    if not (isinstance(doc.get("methods"), dict) and isinstance(doc.get("protocol"), dict)):
        raise UsageError(f"{where}: not a tuned.toml of `python -m bench tune` (it needs its "
                         "[methods] and [protocol] tables)")
    return doc


def apply_tuned(cfg: RunConfig, path: str | Path) -> RunConfig:
    """``cfg`` with the tuned settings of ``path`` for every method of the run it lists, at
    every density of the run (recorded in config.json as ``tuned``). Refused (UsageError,
    before any work): a file tuned under another protocol (world, model, observations), one
    that tunes none of the run's methods or lacks one of the run's densities for a method it
    tunes, a --set of a field it tunes, settings the method refuses."""
    from bench.setup import build_method

    where = f"--tuned {path}"
    doc = read_tuned(path)
    diff = differences(doc["protocol"], protocol(cfg))
    if diff:
        raise UsageError(f"{where}: tuned under another protocol than this run's: "
                         f"{'; '.join(diff)}; tune again with this run's flags")
    methods = doc["methods"]
    names = [m for m in cfg.methods if m in methods]
    if not names:
        raise UsageError(f"{where}: tunes {', '.join(methods) or 'no method'}, none of this "
                         f"run's methods ({', '.join(cfg.methods)})")
    tuned = {}
    for name in names:
        try:
            by_density = {density_key(float(k)): v for k, v in methods[name].items()}
        except (TypeError, ValueError, AttributeError):
            raise UsageError(f"{where}: [methods.{name}] must hold one table per density, "
                             "e.g. [methods.NAME.\"0.01\"]") from None
        missing = [f"{d:g}" for d in cfg.densities if density_key(d) not in by_density]
        if missing:
            tuned_at = ", ".join(f"{float(k):g}" for k in by_density) or "no density"
            raise UsageError(f"{where}: {name} was tuned at {tuned_at}, not at "
                             f"{', '.join(missing)} of this run; tune at those densities or "
                             f"leave {name} out")
        tuned[name] = {density_key(d): by_density[density_key(d)] for d in cfg.densities}
        clash = sorted({f for s in tuned[name].values() for f in s}
                       & set(cfg.method_settings.get(name, {})))
        if clash:
            raise UsageError(f"{where}: --set {name}.{clash[0]} sets a field it tunes; leave "
                             "the --set out (tuned values include the --set values they were "
                             "tuned with)")
    out = dataclasses.replace(cfg, tuned=tuned)
    with bad_input(f"{where}: "):
        try:
            for name in names:
                for density in cfg.densities:
                    build_method(out, name, 0, density)
        except ConfigError as err:
            raise ValueError(str(err)) from None
    return out
