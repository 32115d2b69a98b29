"""What the flag table reads from the config dataclasses, and how a flag's text becomes a
field's value: field types and defaults by dotted name (``cycle.days``), the leaf fields of a
dataclass, and the parsing and display of values (bench/cli/flags.py builds the flags on them)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing


# ----------------------------------------------------------------------------- field reflection
def _unwrap_optional(hint):
    """``X | None`` -> X; anything else unchanged."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def field_hint(root: type, dotted: str):
    """The annotation of a dotted field (``X | None`` read as X: None is never typed)."""
    cls, *path, last = [root, *dotted.split(".")]
    for name in path:
        cls = typing.get_type_hints(cls)[name]
    return _unwrap_optional(typing.get_type_hints(cls)[last])


def field_default(root: type, dotted: str):
    """The default of a dotted field, read from the dataclasses (never repeated here)."""
    first, *rest = dotted.split(".")
    f = next(f for f in dataclasses.fields(root) if f.name == first)
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for name in rest:  # nested settings: the attribute of the default instance
        value = getattr(value, name)
    return value


def leaf_fields(root: type, prefix: str = "") -> list[str]:
    """Every dotted field of ``root`` that holds a value (nested settings opened up)."""
    out = []
    for f in dataclasses.fields(root):
        hint = typing.get_type_hints(root)[f.name]
        if dataclasses.is_dataclass(hint):
            out += leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


# ----------------------------------------------------------------------------- text -> value
_NOUNS = {int: ("an integer", "integers"), float: ("a finite number", "numbers"),
          str: ("a name", "names")}


def parse_text(text: str, hint):
    """``text`` as a value of ``hint``: int, float (finite), str, or ``tuple[X, ...]`` written
    as a comma list without empty or repeated items. ValueError: what was expected."""
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        items = [t.strip() for t in text.split(",")]
        plural = _NOUNS.get(item, ("", "values"))[1]
        if not all(items):
            raise ValueError(f"a comma list of {plural} without empty items")
        values = [parse_text(t, item) for t in items]
        for i, v in enumerate(values):
            if v in values[:i]:
                raise ValueError(f"a comma list of {plural} without repeats ({items[i]} "
                                 "appears twice)")
        return tuple(values)
    if hint is str:
        return text
    noun = _NOUNS.get(hint, (getattr(hint, "__name__", str(hint)),))[0]
    try:
        value = hint(text.strip())
    except (TypeError, ValueError):
        raise ValueError(noun) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(noun)
    return value


def show(value) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(show(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    text = str(value)
    return text if text and not any(c.isspace() for c in text) else repr(text)


def _metavar(hint) -> str:
    if typing.get_origin(hint) is tuple:
        return "A,B,…"
    return {int: "N", float: "X"}.get(hint, "TEXT")
