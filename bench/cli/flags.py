"""Flags as a table over the config dataclasses: each flag names the dotted field it sets
(``--days`` -> ``cycle.days``), and its default, type and the check of its value come from that
field, so a default is written once (bench/config.py) and a new field is one row here.

Reading a command line has two steps. argparse only collects the text (no ``type=``), so every
bad value is reported the same way by this module, not half by argparse. ``Flag.value`` turns
the text into the field's type and refuses what no field could hold (NaN, ±inf, an empty or
repeated item of a list); building the dataclasses (``config.build``) then checks ranges and
cross-field rules and raises ``ConfigError`` naming the dotted field. ``flag_message``
translates such an error, wherever it was raised (config, runner, cycle), back into the flag
the user typed: ``cycle.days`` -> ``--days inf: expected …``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable

from bench.cli.fields import (  # noqa: F401 - field_hint, leaf_fields: this module's API too
    _metavar,
    field_default,
    field_hint,
    leaf_fields,
    parse_text,
    show,
)
from bench.config import (
    DEVICES,
    FORECAST_KINDS,
    HISTORY_UPDATES,
    SAMPLING_MODES,
    RunConfig,
    build,
)
from bench.validation import ConfigError


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


@contextlib.contextmanager
def bad_input(prefix: str = ""):
    """Around checks of the user's input (preflight): an unknown world or method, a world
    loader refusing an option, become a UsageError (one line, exit code 2). A ConfigError
    passes through untouched, for main to name its flag."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise UsageError(f"{prefix}{err}") from None


_FROM_FIELD = object()  # Flag.default: use the field's default


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a command and the field it sets.

    Attributes:
        name: the flag, e.g. "--days".
        field: dotted field of ``root`` it sets, e.g. "cycle.days".
        help: what it does (the default is appended from the field).
        root: the dataclass the field belongs to (RunConfig, or a command's own settings).
        invert: a bool field set to False by the flag (``--obs-fixed`` -> redraw False).
        default: a command's own default, when it differs from the field's (``check`` analyses
            at two densities); by default the field's.
        parse: reads the argparse value instead of the type rules (``--set``, repeatable).
    """

    name: str
    field: str
    help: str
    root: type = RunConfig
    invert: bool = False
    default: object = _FROM_FIELD
    parse: Callable[[object], object] | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    @property
    def hint(self):
        return field_hint(self.root, self.field)

    @property
    def field_default(self):
        return field_default(self.root, self.field)

    @property
    def parser_default(self):
        """The argparse default: the command's own, else the field's (negated if inverted)."""
        if self.default is not _FROM_FIELD:
            return self.default
        return (not self.field_default) if self.invert else self.field_default

    def with_(self, **changes) -> Flag:
        """This flag with another default or help for one command."""
        return dataclasses.replace(self, **changes)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.hint is bool:
            parser.add_argument(self.name, action="store_true", default=self.parser_default,
                                help=self.help)
        elif self.parse is not None:
            parser.add_argument(self.name, action="append", metavar="METHOD.FIELD=VALUE",
                                help=self.help)
        else:
            default = self.parser_default  # unset (None): the help says what that means
            shown = "" if default is None else f" (default: {show(default)})"
            parser.add_argument(self.name, default=default, metavar=_metavar(self.hint),
                                help=self.help + shown)

    def value(self, args: argparse.Namespace):
        """The typed value of this flag in ``args``; UsageError for text no field could hold."""
        raw = getattr(args, self.dest)
        if self.parse is not None:
            return self.parse(raw)
        if self.hint is bool:
            return not raw if self.invert else raw
        if not isinstance(raw, str):  # a default, already typed
            return raw
        try:
            return parse_text(raw, self.hint)
        except ValueError as err:
            raise UsageError(f"{self.name} {show(raw)}: expected {err}") from None


# ----------------------------------------------------------------------------- --set
def method_settings(items: Iterable[str] | None) -> dict[str, dict]:
    """``--set METHOD.FIELD=VALUE`` items -> {method: {field: value}}. VALUE is read as JSON
    (numbers, true/false, null, lists) and otherwise kept as a string; whether it fits the
    field is checked against the method's annotation (validation.check_method_setting)."""
    out: dict[str, dict] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        name, dot, field = key.partition(".")
        if not (sep and dot and name.strip() and field.strip()):
            raise UsageError(f"--set {show(item)}: expected METHOD.FIELD=VALUE, "
                             "e.g. --set vaevar.lam=4e4")
        if field in out.get(name, {}):
            raise UsageError(f"--set {item}: {name}.{field} is set twice; give it once")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(name, {})[field] = value
    return out


# ----------------------------------------------------------------------------- args -> config
def settings_from_args(args: argparse.Namespace, root: type, **overrides):
    """The ``root`` dataclass a command line describes: every flag of the command whose root
    is ``root`` (``args.flags``, set by bench/cli/parser.py), plus ``overrides`` (dotted field
    -> value, e.g. ``methods=("none",)``). Raises UsageError for unreadable text and
    ConfigError (dotted field) for values the dataclasses refuse."""
    values = {f.field: f.value(args) for f in args.flags if f.root is root}
    values.update(overrides)
    tree: dict = {}
    for dotted, value in values.items():
        *path, last = dotted.split(".")
        node = tree
        for name in path:
            node = node.setdefault(name, {})
        node[last] = value
    return build(root, tree)


def config_from_args(args: argparse.Namespace, **overrides) -> RunConfig:
    """The RunConfig of a command line; fields without a flag in this command keep their
    defaults. Densities asked as ``--columns`` or ``--spacing-km`` become densities on the
    world's grid (bench/cli/densities.py)."""
    from bench.cli.densities import density_choice

    return settings_from_args(args, RunConfig, **(density_choice(args) | overrides))


# ----------------------------------------------------------------------------- errors -> flags
#: Fields set per cell from a list flag's field: an error there is that flag's.
PER_CELL = {"observations.density": "densities", "observations.seed": "seeds"}


def _typed(field: str, value, args: argparse.Namespace) -> str:
    """``--flag value`` for a dotted field, as the user would have typed it."""
    if field.startswith("method_settings"):
        return _typed_set(field, value, args)
    field = PER_CELL.get(field, field)
    for flag in getattr(args, "flags", ()):
        if flag.field == field:
            text = flag.name if flag.hint is bool else f"{flag.name} {show(value)}"
            return text + _from_preset(flag, args)
    return f"{field} {show(value)}"  # no flag of this command sets it: the dotted field


def _from_preset(flag: Flag, args: argparse.Namespace) -> str:
    """`` (--preset NAME)`` when the flag's value is the preset's (bench/cli/presets.py)."""
    preset = getattr(args, "preset_values", None) or {}
    if flag.dest in preset and getattr(args, flag.dest, None) == preset[flag.dest]:
        return f" (--preset {args.preset})"
    return ""


def _typed_set(field: str, value, args: argparse.Namespace) -> str:
    """``--set vaevar.lam=abc`` from ``method_settings.vaevar.lam``: the items as typed."""
    parts = field.split(".", 2)
    items = getattr(args, "set", None) or []
    if len(parts) == 3:
        key = f"{parts[1]}.{parts[2]}"
        typed = [i for i in items if i.partition("=")[0] == key]
        return f"--set {typed[0] if typed else f'{key}={json.dumps(value)}'}"
    if len(parts) == 2:
        typed = [i for i in items if i.partition(".")[0] == parts[1]]
        return " ".join(f"--set {i}" for i in typed) or f"--set {parts[1]}.…"
    return "--set"


def flag_message(err: ConfigError, args: argparse.Namespace) -> str:
    """One line naming the flag(s) and value(s) of a ConfigError raised anywhere:
    ``--spinup-cycles 8, with --days 1: expected fewer spin-up cycles than …``."""
    text = _typed(err.field, err.value, args)
    text += "".join(f", with {_typed(f, v, args)}" for f, v in err.related.items())
    return " ".join(f"{text}: expected {err.expected}".split())


# ----------------------------------------------------------------------------- the flag table
def _choices(options: Iterable[str]) -> str:
    return ", ".join(options)


WORLD = Flag("--world", "world", "world name (see `python -m bench worlds`)")
ERA5_PATH = Flag("--era5-path", "era5_path", "ERA5 store in WeatherBench2's layout (default: "
                                              "the environment or the world's card)")
METHODS = Flag("--methods", "methods", "comma list of methods (see `python -m bench methods`)")
DENSITY = Flag("--density", "densities", "comma list of observed fractions of grid points, "
                                          "each in (0, 1]")
COLUMNS = Flag("--columns", "density_request.columns",
               "instead of --density: comma list of observed columns per cycle, each from 1 to "
               "the grid's columns (converted to densities on the world's grid)")
SPACING = Flag("--spacing-km", "density_request.spacing_km",
               "instead of --density: comma list of mean spacings (km) of the observed columns "
               "(bench/obs_regime.py; converted to whole columns, then densities)")
#: the three ways of choosing the observation densities, one at a time
DENSITY_FLAGS = (DENSITY, COLUMNS, SPACING)
OBS_NOISE = Flag("--obs-noise", "observations.noise_fraction",
                 "observation error std / the channel's climatological std (0 = noise-free)")
DEVICE = Flag("--device", "device", _choices(DEVICES))
THREADS = Flag("--threads", "threads", "torch threads on CPU")
#: The world's periods (ERA5: any years the store holds; a generated world: inside its frames).
PERIODS = tuple(
    Flag(f"--{key}-period", f"periods.{key}", f"{key} period START..END (ISO dates or times, END "
         "excluded, e.g. 1979-01-01..2016-01-01; default: the world's card)")
    for key in ("train", "valid", "test"))
EMULATOR_PERIOD = Flag(
    "--emulator-train-period", "forecast.emulator_train_period",
    "START..END the emulator learns from (default: --train-period): one forecast model for "
    "runs whose methods learn from different years")
SET = Flag("--set", "method_settings", "a method hyper-parameter for this run (repeatable), e.g. "
           "--set vaevar.lam=40000 --set diffda.steps=300", parse=method_settings)

#: ``run``: every field of RunConfig that a user sets (tests/test_cli.py checks the coverage).
RUN = (
    METHODS, DENSITY, COLUMNS, SPACING,
    Flag("--seeds", "seeds", "comma list of seeds (observations, stochastic methods, the "
                             "initial ensemble), each >= 0"),
    Flag("--days", "cycle.days", "days of 6-hourly cycles"),
    WORLD, ERA5_PATH, *PERIODS,
    Flag("--model", "forecast.kind", f"forecast model: {_choices(FORECAST_KINDS)}"),
    Flag("--fengwu-onnx", "forecast.fengwu_onnx", "FengWu release: the .onnx graph"),
    Flag("--fengwu-mean", "forecast.fengwu_mean", "FengWu release: data_mean.npy"),
    Flag("--fengwu-std", "forecast.fengwu_std", "FengWu release: data_std.npy"),
    Flag("--emulator-steps", "forecast.emulator_steps",
         "emulator training steps (default: the emulator's own)"),
    EMULATOR_PERIOD,
    Flag("--obs-sampling", "observations.sampling", _choices(SAMPLING_MODES)),
    OBS_NOISE,
    Flag("--obs-fixed", "observations.redraw", "same observation locations every cycle",
         invert=True),
    Flag("--window-every", "observations.window_every_hours",
         "hours between observation times inside a 4D method's window"),
    Flag("--period", "cycle.period", "the world's period cycled: test (results) or valid "
                                     "(to choose settings without looking at the test period)"),
    Flag("--first-lead", "cycle.first_lead_hours", "lead (h) of the first background"),
    Flag("--start", "cycle.start", "valid time of the first analysis (ISO; default: the cycled "
                                   "period's start + the first lead + 6 h)"),
    Flag("--spinup-cycles", "cycle.spinup_cycles", "cycles left out of the skill tables"),
    Flag("--divergence-factor", "cycle.divergence_factor",
         "diverged when the analysis RMSE exceeds this multiple of climatology's"),
    Flag("--forecast-every", "cycle.forecast_every",
         "free forecasts from the analysis every N cycles (0: none)"),
    Flag("--forecast-hours", "cycle.forecast_hours", "length (h) of the free forecasts"),
    Flag("--history-update", "cycle.history_update",
         f"how the analysis enters the model's input frames: {_choices(HISTORY_UPDATES)} "
         "(increment adds x_a - x_b to every frame; replace puts x_a in the last)"),
    Flag("--ensemble-scale", "ensemble.perturbation_scale",
         "initial ensemble: scale of the NMC-sample perturbations"),
    Flag("--ensemble-batch", "ensemble.forecast_batch",
         "ensemble members forecast per model call (default: the model's maximum)"),
    DEVICE, THREADS, SET,
)

#: RunConfig fields that ``run`` deliberately sets without a flag of their own, and why.
FLAGLESS = {
    "observations.density": "set per cell from --density (or --columns, --spacing-km)",
    "observations.seed": "set per cell from --seeds",
    "observations.channels": "observed channels: no flag until preflight checks the names "
                             "against the world's channels",
    "normalisation": "filled in by the run from the world and the model (recorded, not set)",
    "tuned": "per-density method settings, read from --tuned FILE (bench/cli/tune.py)",
}
