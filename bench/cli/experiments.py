"""`single-obs` and `check`: experiments with one analysis per method, no cycling.

Their own settings (where the one observation is; which background errors) are small frozen
dataclasses here, so their flags are made, defaulted and checked like the run's
(bench/cli/flags.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import ClassVar

from bench.state import FENGWU_CHANNELS
from bench.validation import check, is_int, is_number


@dataclasses.dataclass(frozen=True)
class SingleObsSettings:
    """One observation of one channel (the VAE-Var paper's single-observation test)."""

    channel: str = "z500"
    lat: float = 21.0
    lon: float = 129.0
    innovation: float = -100.0
    error_std: float = 0.01

    HELP: ClassVar[dict[str, str]] = {
        "channel": "observed channel, e.g. z500",
        "lat": "latitude of the observation (degrees north, -90..90)",
        "lon": "longitude of the observation (degrees east)",
        "innovation": "y - x_b in the channel's physical units",
        "error_std": "observation error std, normalised (a fraction of the channel's std)",
    }

    def __post_init__(self):
        # Every world's channels are FengWu's or some of them: a typo is caught before the
        # world is built (the world's own list is checked once it is).
        check("channel", self.channel, self.channel in FENGWU_CHANNELS,
              "a channel name such as z500, t850, u10, msl")
        check("lat", self.lat, is_number(self.lat) and -90 <= self.lat <= 90,
              "a latitude in [-90, 90]")
        check("lon", self.lon, is_number(self.lon), "a finite longitude")
        check("innovation", self.innovation, is_number(self.innovation), "a finite number")
        check("error_std", self.error_std, is_number(self.error_std) and self.error_std > 0,
              "a number > 0")


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """Which known background errors ``check`` analyses (bench/experiments/check.py)."""

    errors: str = "forecast"
    lead_hours: int = 48
    starts: int = 8

    HELP: ClassVar[dict[str, str]] = {
        "errors": "forecast (truth - forecast), nmc (48 h - 24 h forecasts) or known-prior "
                  "(x_b = truth + U w from 3DVar's B: the optimum is known)",
        "lead_hours": "forecast lead of x_b (with --errors forecast; known-prior: the lead "
                      "methods are told)",
        "starts": "start times in the validation period",
    }

    def __post_init__(self):
        from bench.experiments.check import ERROR_KINDS

        check("errors", self.errors, self.errors in ERROR_KINDS,
              f"one of {', '.join(ERROR_KINDS)}")
        check("lead_hours", self.lead_hours,
              is_int(self.lead_hours) and self.lead_hours >= 6 and self.lead_hours % 6 == 0,
              "a positive multiple of 6")
        check("starts", self.starts, is_int(self.starts) and self.starts >= 1, "an integer >= 1")


def cmd_single_obs(args: argparse.Namespace) -> int:
    """One observation of one channel, every method's increment side by side (VAE-Var paper)."""
    from bench.cli.flags import bad_input, config_from_args, settings_from_args

    cfg = config_from_args(args)  # the flags alone first, before the harness is imported
    one = settings_from_args(args, SingleObsSettings)

    from bench import runner
    from bench.experiments.single_obs import figure, single_observation_increments
    from bench.setup import build_method, fit_and_load, setup
    from bench.store import command_line, write_figure, write_text

    with bad_input():
        runner.preflight(cfg)
    s = setup(cfg, progress=not args.quiet)
    spec = s.world.spec
    check("channel", one.channel, one.channel in spec.names,
          f"a channel of {cfg.world}: {', '.join(spec.names)}")
    x_b = s.start.history[-1]  # a real state of the test period: non-linear methods need one
    increments = {}
    for name in cfg.methods:
        analyser = fit_and_load(s, build_method(cfg, name), progress=not args.quiet)
        increments[name] = single_observation_increments(
            analyser, spec, one.channel, one.lat, one.lon, one.innovation,
            physical=True, error_std=one.error_std, x_b=x_b).cpu()
    level = int(one.channel[1:]) if one.channel[1:].isdigit() else None
    fig = figure(increments, spec, one.channel, level, obs_location=(one.lat, one.lon))
    out = Path(args.out)
    stem = f"single_obs_{one.channel}_{one.lat:g}N_{one.lon:g}E"
    path = write_figure(fig, out / f"{stem}.png")
    units = spec.channels[spec.index(one.channel)].units
    write_text(out / f"{stem}.md",
               f"# Single observation: {one.channel} at {one.lat:g}N {one.lon:g}E\n\n"
               f"Made by:\n\n```bash\n{command_line()}\n```\n\n"
               f"Innovation {one.innovation:g} {units}, observation error {one.error_std:g} "
               f"(normalised); methods: {', '.join(cfg.methods)}.\n\n![increments]({path.name})\n")
    print(f"wrote {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """One analysis per method against a known background error (bench/experiments/check.py)."""
    from bench.cli.flags import bad_input, config_from_args, settings_from_args

    cfg = config_from_args(args)  # the flags alone first, before the harness is imported
    known = settings_from_args(args, CheckSettings)

    from bench import runner
    from bench.experiments.check import run_check
    from bench.store import command_line

    with bad_input():
        runner.preflight(cfg)
    wide, paths = run_check(cfg, args.out, known.errors, known.lead_hours, known.starts,
                            command_line(), progress=not args.quiet)
    print(wide.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote", ", ".join(map(str, paths)))
    return 0
