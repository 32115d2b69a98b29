"""`single-obs` and `check`: experiments with one analysis per method, no cycling."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.parser import UsageError, method_settings


def cmd_single_obs(args: argparse.Namespace) -> int:
    """One observation of one channel, every method's increment side by side (VAE-Var paper)."""
    from bench import runner
    from bench.config import CycleSettings, RunConfig
    from bench.experiments.single_obs import figure, single_observation_increments
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


def cmd_check(args: argparse.Namespace) -> int:
    """One analysis per method against a known background error (bench/experiments/check.py)."""
    from bench import runner
    from bench.config import CycleSettings, RunConfig
    from bench.experiments.check import ERROR_KINDS, run_check
    from bench.store import command_line
    from bench.worlds import UnknownWorldError
    from methods import UnknownMethodError

    cfg = RunConfig(world=args.world, methods=args.methods, densities=args.density,
                    obs_noise=args.obs_noise, cycle=CycleSettings(days=1), device=args.device,
                    threads=args.threads, method_settings=method_settings(args.set))
    try:
        runner.preflight(cfg)
        if args.errors not in ERROR_KINDS:
            raise ValueError(f"--errors {args.errors!r} must be one of {', '.join(ERROR_KINDS)}")
        if args.starts < 1:
            raise ValueError(f"--starts {args.starts} must be >= 1")
        if args.lead_hours < 6 or args.lead_hours % 6:
            raise ValueError(f"--lead-hours {args.lead_hours} must be a positive multiple of 6")
    except (ValueError, UnknownWorldError, UnknownMethodError) as err:
        raise UsageError(str(err)) from None
    wide, paths = run_check(cfg, args.out, args.errors, args.lead_hours, args.starts,
                            command_line(), progress=not args.quiet)
    print(wide.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote", ", ".join(map(str, paths)))
    return 0
