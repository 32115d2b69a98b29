"""Errors that name a dotted field, and the checks that raise them: the ground floor of the
settings (bench/config.py) and of every other check of user input (the CLI's experiments, the
runner, ``--set`` values checked against a method's dataclass).

``ConfigError`` names the dotted field (``cycle.days``), the value and what was expected; only the
CLI translates a field into its flag (bench/cli/flags.py). This module imports nothing of the
project's: bench/config.py builds on it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable

import numpy as np


class ConfigError(ValueError):
    """A bad setting: ``field`` (dotted, e.g. "cycle.days"), the ``value`` and what was
    ``expected`` (a noun phrase: "a number > 0"; a leading "expected " is dropped). ``related``
    names the other fields a cross-field check depends on ({"days": 2.0} for a spin-up longer
    than the run), so a message can show them too. The CLI rewrites every field as its flag
    (bench/cli/flags.py); elsewhere the dotted names are the message.
    """

    def __init__(self, field: str, value, expected: str, related: dict | None = None):
        expected = str(expected)
        if expected.startswith("expected "):
            expected = expected[len("expected "):]
        self.field, self.value, self.expected = field, value, expected
        self.related = dict(related or {})
        with_ = "".join(f", with {k} = {v!r}" for k, v in self.related.items())
        super().__init__(f"{field} = {value!r}{with_}: expected {expected}")

    def __reduce__(self):  # picklable (a Dask worker raises it in another process)
        return type(self), (self.field, self.value, self.expected, self.related)

    def within(self, prefix: str) -> ConfigError:
        """The same error for a field nested under ``prefix`` ("cycle" -> "cycle.days")."""
        return ConfigError(f"{prefix}.{self.field}", self.value, self.expected,
                           {f"{prefix}.{k}": v for k, v in self.related.items()})


def check(field: str, value, ok: bool, expected: str, related: dict | None = None) -> None:
    if not ok:
        raise ConfigError(field, value, expected, related)


def is_number(value) -> bool:
    """A finite real number (bools are not numbers here)."""
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(float(value)))


def is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_list(field: str, values: Iterable, ok: Callable[[object], bool],
               expected: str) -> None:
    """A list setting: not empty, every item valid, no duplicates."""
    values = tuple(values)
    check(field, values, bool(values), f"at least one value: {expected}")
    for v in values:
        check(field, v, ok(v), expected)
    seen = set()
    for v in values:
        check(field, values, v not in seen, f"no duplicates ({v!r} appears twice)")
        seen.add(v)


def nested(prefix: str, make: Callable[[], object]):
    """``make()``, with a ConfigError's field put under ``prefix`` (for nested settings)."""
    try:
        return make()
    except ConfigError as err:
        raise err.within(prefix) from None


# ----------------------------------------------------------------------------- --set values
def check_method_setting(cls: type, where: str, field: str, value):
    """``value`` for the field ``field`` of the method dataclass ``cls``, checked against the
    field's annotation (``--set vaevar.lam=abc`` would otherwise fail deep inside the method
    with an operator error). Values come from JSON, so the rules are JSON's: int, float (an
    int is accepted and converted), bool (true/false), str, None for an Optional, a JSON list
    for ``tuple[int, ...]`` / ``tuple[str, ...]`` (returned as a tuple), Literal choices.
    Other annotations pass through: the method's own ``__post_init__`` checks its ranges and
    choices.

    Args:
        cls: the method's dataclass (taken as an argument: the settings import no method).
        where: the dotted field errors name, ``method_settings.<method>.<field>``; a bare
            method name is accepted and completed.
    Raises:
        ConfigError(where, value, expected): an unknown field, or a value of the wrong type.
    """
    if "." not in where:
        where = f"method_settings.{where}.{field}"
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "seed"}
    check(where, value, field in fields,
          f"a field of {cls.__name__} ({', '.join(sorted(fields))})")
    try:
        hint = typing.get_type_hints(cls)[field]
    except Exception:  # an annotation that cannot be evaluated here: the method checks it
        return value
    ok, converted = _coerce(hint, value)
    check(where, value, ok, _describe(hint))
    return converted


def _coerce(hint, value) -> tuple[bool, object]:
    """(whether ``value`` fits ``hint``, the value converted: int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, converted = _coerce(arg, value)
                if ok:
                    return True, converted
        return False, value
    if origin is typing.Literal:
        return value in args, value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None:  # fixed-length tuple[int, str]: one hint per item
            if len(args) != len(value):
                return False, value
            pairs = list(zip(args, value, strict=True))
        else:
            pairs = [(item, v) for v in value]
        checked = [_coerce(h, v) for h, v in pairs]
        return all(ok for ok, _ in checked), tuple(v for _, v in checked)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        if is_number(value) and float(value).is_integer():  # 3e2 from JSON is 300.0
            return True, int(value)
        return False, value
    if hint is float:
        return (True, float(value)) if is_number(value) else (False, value)
    if hint is str:
        return isinstance(value, str), value
    return True, value  # anything else: the method's own checks


def _describe(hint) -> str:
    """What a value of ``hint`` looks like on the command line (JSON)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        items = {int: "integers, e.g. [32,64]", float: "numbers, e.g. [0.5,1]",
                 str: 'strings, e.g. ["z500","t850"]', bool: "true/false values"}
        if len(args) == 2 and args[1] is Ellipsis and args[0] in items:
            return f"a JSON list of {items[args[0]]}"
        return f"a JSON list of {len(args)} items ({', '.join(map(_describe, args))})" \
            if Ellipsis not in args else "a JSON list"
    return {bool: "true or false", int: "an integer", str: "a string",
            float: "a finite number (an integer is accepted)"}.get(
                hint, getattr(hint, "__name__", str(hint)))
