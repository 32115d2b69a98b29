"""Presets of ``run``: named groups of flags, ``python -m bench run --preset paper``.

A preset is only a way of writing flags. Each lives in ``presets/<name>.toml`` (beside
``datasets/``, read at run time; ``$ASSIMBENCH_PRESETS`` points elsewhere), not in code: the
harness names no method (tests/test_new_method.py), and the paper grid's method list is written
once, in ``presets/paper.toml``. A file holds a ``description`` and a ``[flags]`` table keyed by
``run``'s flag names without the dashes, valued as TOML::

    description = "the paper grid"

    [flags]
    methods = ["none", "interp"]   # or "none,interp", as typed on the command line
    density = [0.005, 0.01]
    days = 15
    obs-fixed = true               # a switch: true sets it
    set = ["interp.scale=2"]       # --set items, as typed

The parser reads a preset's flags as the flags' defaults (bench/cli/parser.py), so every flag
given on the command line wins (``--preset paper --days 30``), each value goes through the
same text -> value -> config checks as a typed one, and ``config.json`` holds the resolved
settings like any run's. ``--set`` items override the preset's item for the same
METHOD.FIELD and add to the others. Only config flags (bench/cli/flags.py's ``RUN``) may be
preset: where to write (``--out``), ``--resume`` and the executor stay on the command line.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path

from bench.cli.flags import Flag, UsageError

#: the flag of ``run`` that names a preset
PRESET_FLAG = "--preset"


def presets_dir() -> Path:
    """``$ASSIMBENCH_PRESETS`` if set, else the repository's ``presets/`` folder (as the
    dataset cards are found, bench/worlds ``cards_dir``)."""
    env = os.environ.get("ASSIMBENCH_PRESETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "presets"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset file.

    Attributes:
        name: the file's stem, what ``--preset`` takes.
        description: one line on what it is for.
        flags: flag name (``--days``) -> the TOML value (str, int, float, bool or a list).
    """

    name: str
    description: str
    flags: dict[str, object]

    def text(self, flag: str) -> str | bool | list[str]:
        """The value of ``flag`` as argparse would hold it had it been typed: the text
        (lists as comma lists), a switch's bool, ``--set``'s list of items."""
        value = self.flags[flag]
        if isinstance(value, bool) or flag == "--set":
            return value
        return _typed(value)

    def command_line(self) -> str:
        """The flags as they would be typed, e.g. ``--methods none,interp --days 15``."""
        parts = []
        for flag, value in self.flags.items():
            if flag == "--set":
                parts += [f"--set {item}" for item in value]
            elif isinstance(value, bool):
                parts += [flag] if value else []
            else:
                parts.append(f"{flag} {_typed(value)}")
        return " ".join(parts)


def _typed(value) -> str:
    """A TOML value as typed on the command line (floats as Python writes them: no rounding)."""
    if isinstance(value, list):
        return ",".join(_typed(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _read(path: Path, flags: Sequence[Flag]) -> Preset:
    """A preset file, checked against the command's flag table. ValueError: what is wrong."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"description", "flags"}
    if unknown:
        raise ValueError(f"preset {path}: unknown key(s) {', '.join(sorted(unknown))}; a preset "
                         "holds a description and a [flags] table")
    table = data.get("flags", {})
    if not isinstance(table, dict) or not table:
        raise ValueError(f"preset {path}: expected a [flags] table of at least one flag")
    by_name = {f.name: f for f in flags}
    out: dict[str, object] = {}
    for key, value in table.items():
        flag = by_name.get(f"--{key}")
        if flag is None:
            raise ValueError(f"preset {path}: {key!r} is not a config flag of run (a preset "
                             f"sets {', '.join(n.lstrip('-') for n in by_name)})")
        if flag.parse is not None:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            expected = "a list of METHOD.FIELD=VALUE strings"
        elif flag.hint is bool:
            ok, expected = isinstance(value, bool), "true or false"
        else:
            items = value if isinstance(value, list) else [value]
            ok = bool(items) and all(isinstance(v, str | int | float) and not isinstance(v, bool)
                                     for v in items)
            expected = "a string, a number or a list of them"
        if not ok:
            raise ValueError(f"preset {path}: {key} = {value!r}: expected {expected}")
        out[flag.name] = value
    return Preset(path.stem, " ".join(str(data.get("description", "")).split()), out)


def list_presets(flags: Sequence[Flag]) -> dict[str, Preset]:
    """Every preset by name, checked against ``flags`` (``run``'s table). UsageError for a
    missing folder or a bad file."""
    folder = presets_dir()
    if not folder.is_dir():
        raise UsageError(f"no presets folder at {folder}; run from a checkout (pip install -e .) "
                         "or set ASSIMBENCH_PRESETS to the presets/ folder")
    try:
        return {p.stem: _read(p, flags) for p in sorted(folder.glob("*.toml"))}
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise UsageError(str(err)) from None


def load_preset(name: str, flags: Sequence[Flag]) -> Preset:
    """The preset ``name``; UsageError naming the flag, the value and the valid presets."""
    presets = list_presets(flags)
    if name not in presets:
        valid = ", ".join(presets) or "none found"
        raise UsageError(f"{PRESET_FLAG} {name}: expected one of {valid} "
                         f"({presets_dir()}; see `python -m bench presets`)")
    return presets[name]


def merge_set(preset: Sequence[str], typed: Sequence[str] | None) -> list[str] | None:
    """``--set`` items: the preset's, less those whose METHOD.FIELD the command line sets
    again, then the typed ones."""
    typed = list(typed or [])
    keys = {item.partition("=")[0].strip() for item in typed}
    merged = [i for i in preset if i.partition("=")[0].strip() not in keys] + typed
    return merged or None
