"""The argument parser of ``python -m bench``: every command and flag, ``--set`` parsing, and
the UsageError (one line, exit code 2) that every handler raises for bad input.

bench/cli/ (and bench/cli/experiments.py) run the commands; each subparser names its handler
with ``handler=…``.
"""

from __future__ import annotations

import argparse
import json


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the problem (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


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


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    """--device and --threads, as every command that analyses reads them."""
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m bench",
        description="assimbench: compare data-assimilation methods on identical forecast cycles.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worlds", help="list the worlds (dataset cards) and how to get them")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    p.set_defaults(handler="worlds")

    p = sub.add_parser("prepare", help="build or validate a world's local data")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--era5-path", default=None, help="ERA5 store in WeatherBench2 layout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="prepare")

    p = sub.add_parser("train", help="train (or reload from cache) the emulator or a method")
    p.add_argument("what", help="emulator, or a method that learns (vaevar, diffda, 3dvar)")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: config)")
    p.add_argument("--retrain", action="store_true", help="ignore the cache and train again")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--results", default=None, help="write the skill table to this folder")
    p.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                   help="a method hyper-parameter (repeatable), e.g. --set vaevar.epochs=30; "
                        "trains the configuration `run --set ...` would use")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="train")

    p = sub.add_parser("samples", help="build background-error samples from the training period")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--kind", default="nmc", help="nmc (48 h − 24 h) or truth_minus_forecast")
    p.add_argument("--lead-hours", type=int, default=24, help="lead of truth − forecast samples")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="samples")

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
    p.set_defaults(handler="run")

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
    _add_device_flags(p)
    p.add_argument("--out", default="results/single-obs", help="folder for the figure")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler="single_obs")

    p = sub.add_parser("check", help="one analysis per method against a known background "
                       "error (held-out forecasts or NMC differences): error ratio per channel")
    p.add_argument("--methods", type=_comma_list(str, "--methods"), default=("3dvar",),
                   help="comma list of methods")
    p.add_argument("--density", type=_comma_list(float, "--density"), default=(0.01, 0.05),
                   help="comma list of observation densities")
    p.add_argument("--errors", default="forecast", help="forecast (truth − forecast) or nmc")
    p.add_argument("--lead-hours", type=int, default=48, help="forecast lead of x_b (forecast)")
    p.add_argument("--starts", type=int, default=8, help="start times in the validation period")
    p.add_argument("--world", default="heldsuarez-5.625", help="world name (see `worlds`)")
    p.add_argument("--obs-noise", type=float, default=0.01,
                   help="observation error std, fraction of the climatological std")
    p.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                   help="a method hyper-parameter (repeatable), as for `run`")
    _add_device_flags(p)
    p.add_argument("--out", default="results/analysis-check", help="folder for the tables")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler="check")

    p = sub.add_parser("tables", help="regenerate tables and figures from a run's metrics.nc")
    p.add_argument("run", help="the run folder")
    p.set_defaults(handler="tables")

    p = sub.add_parser("compare", help="one skill/time table from several runs (a sweep)")
    p.add_argument("runs", nargs="+", help="run folders, e.g. made with different --set values")
    p.add_argument("--out", required=True, help="folder for comparison.{md,csv,tex}")
    p.set_defaults(handler="compare")

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
    p.set_defaults(handler="timing")

    p = sub.add_parser("methods", help="list the registered methods and their settings")
    p.set_defaults(handler="methods")
    return parser
