"""The search grids of ``python -m bench tune``: which settings of each method are tried.

A method declares its grid (``Assimilator.tuning_grid``, {field: values}); ``--grid FILE``
replaces the declared grid of each method the file names (TOML, one table per method)::

    [interp]
    length_scale_km = [250, 500, 1000]

    [3dvar]
    min_obs_error = [0.001, 0.1]
    max_iterations = [25, 100]

A method's candidates are its default setting (its defaults plus the run's ``--set`` values)
first, then every combination of its grid's values (full factorial, fields and values in the
grid's order), each setting once: a combination equal to the default is the default.

Equal budget. Every method gets at most ``budget`` candidates, the default included (the same
number of validation-period runs to choose with; a method with a bigger grid would get more
chances to fit the validation weather). A grid with more is refused, not cut.

Fields. Any field of the method except ``seed`` and those ``--set`` already fixes. A field
outside the method's ``analysis_fields`` changes what ``fit`` learns, so every value of it is a
new fit (cached like any other, but minutes to hours for a learnt model): refused unless
``refit=True`` (``--refit``). A method that learns nothing has no such field.

Errors are ``GridError`` (a ValueError), one line naming the flag (``--grid FILE``,
``--budget``) or the method's declared grid.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from bench.tuned import read_toml
from bench.validation import ConfigError, check_method_setting
from methods import METHODS, get_method
from methods.base import Assimilator


class GridError(ValueError):
    """A grid or budget that cannot be used (one line, naming the flag)."""


@dataclasses.dataclass(frozen=True)
class MethodGrid:
    """The candidates of one method.

    Attributes:
        method: the registered name.
        source: where the grid comes from: "declared" (``tuning_grid``) or "--grid FILE".
        grid: {field: values}, values converted to the fields' types.
        candidates: the non-default settings of each candidate ({field: value}, the run's
            ``--set`` values and every grid field, the default's grid fields at their default
            values); ``candidates[0]`` is the default setting.
        refits: the grid's fields that change what ``fit`` learns (each value a fit).
    """

    method: str
    source: str
    grid: dict[str, tuple]
    candidates: tuple[dict, ...]
    refits: tuple[str, ...] = ()

    @property
    def tunes(self) -> bool:
        """Whether there is anything to choose (more than the default)."""
        return len(self.candidates) > 1


def read_grid_file(path: str | Path, methods: tuple[str, ...]) -> dict[str, dict[str, list]]:
    """``--grid FILE`` as {method: {field: [values]}}; GridError for a file that is missing or
    not TOML, a table that is not a method of the run, or a field whose values are not a
    non-empty list without repeats."""
    where = f"--grid {path}"
    data = read_toml(path, "--grid", GridError)
    if not data:
        raise GridError(f"{where}: no [method] table; write one per method, e.g. "
                        "[interp] length_scale_km = [250, 500]")
    for name, table in data.items():
        if name not in methods:
            raise GridError(f"{where}: [{name}] is not a method of this tuning "
                            f"(--methods {','.join(methods)})")
        if not isinstance(table, dict) or not table:
            raise GridError(f"{where}: [{name}] must be a table of field = [values]")
        for field, values in table.items():
            if not isinstance(values, list) or not values:
                raise GridError(f"{where}: {name}.{field} = {values!r}: expected a non-empty "
                                "list of values, e.g. [250, 500]")
            for i, v in enumerate(values):
                if v in values[:i]:
                    raise GridError(f"{where}: {name}.{field} lists {v!r} twice")
    return data


def _fit_fields(cls: type[Assimilator]) -> set[str]:
    """The fields whose value changes what ``fit`` learns (none for a method that learns
    nothing)."""
    if cls.fit is Assimilator.fit:  # learns nothing (Assimilator.learns, on the class)
        return set()
    return {f.name for f in dataclasses.fields(cls)} - set(cls.analysis_fields) - {"seed"}


def method_grid(name: str, base: dict, given: dict | None, source: str, budget: int,
                refit: bool) -> MethodGrid:
    """The candidates of method ``name``.

    Args:
        base: the run's ``--set`` values of the method (the default setting's).
        given: {field: values} of ``--grid`` for this method, None: the declared grid.
        source: how errors name the grid ("--grid FILE").
        budget: the most candidates, the default included.
        refit: allow fields outside ``analysis_fields``.
    """
    cls = get_method(name)
    base = {f: check_method_setting(cls, f"method_settings.{name}.{f}", f, v)
            for f, v in base.items()}  # ConfigError: named as its --set item
    if given is None:
        given, source = dict(cls.tuning_grid), f"{name}'s declared tuning_grid"
    grid: dict[str, tuple] = {}
    refits = _fit_fields(cls)
    for field, values in given.items():
        what = f"{source}: {name}.{field}"
        if field == "seed":
            raise GridError(f"{what}: the seed is set per cell by --seeds, not tuned")
        if field in base:
            raise GridError(f"{what}: --set {name}.{field} fixes it already; tune it or set "
                            "it, not both")
        if field in refits and not refit:
            raise GridError(
                f"{what}: not an analysis field of {cls.__name__}: each value would refit it "
                f"(its analysis fields: {', '.join(cls.analysis_fields) or 'none'}); tune "
                "those, or pass --refit")
        converted = []
        for value in values:
            try:
                converted.append(check_method_setting(cls, f"{name}.{field}", field, value))
            except ConfigError as err:
                raise GridError(f"{what} = {value!r}: expected {err.expected}") from None
        grid[field] = tuple(converted)
    default = _build(cls, base, f"{name}'s default setting (--set)")
    candidates = [base | {f: getattr(default, f) for f in grid}]
    built = [default]
    for combination in itertools.product(*grid.values()):
        settings = base | dict(zip(grid, combination, strict=True))
        method = _build(cls, settings, f"{source}: {name} with {_text(settings)}")
        if method not in built:
            candidates.append(settings)
            built.append(method)
    if len(candidates) > budget:
        sizes = " × ".join(str(len(v)) for v in grid.values())
        raise GridError(f"--budget {budget}: {name} has {len(candidates)} candidate settings "
                        f"(the default and the {sizes} grid of {source}); shrink the grid to "
                        f"at most {budget} or raise --budget for every method")
    return MethodGrid(name, source, grid, tuple(candidates),
                      tuple(f for f in grid if f in refits))


def _build(cls: type[Assimilator], settings: dict, what: str) -> Assimilator:
    try:
        return cls(**settings)
    except (TypeError, ValueError) as err:
        raise GridError(f"{what}: {err}") from None


def _text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "its defaults"


def plan(methods: tuple[str, ...], method_settings: dict, grid_file: str | Path | None,
         budget: int, refit: bool = False) -> list[MethodGrid]:
    """Every method's candidates, checked (GridError) before anything runs."""
    if not (isinstance(budget, int) and budget >= 1):
        raise GridError(f"--budget {budget}: expected an integer >= 1 (candidate settings per "
                        "method, the default included)")
    for name in methods:
        if name not in METHODS:
            get_method(name)  # UnknownMethodError (a ValueError): lists the valid names
    given = read_grid_file(grid_file, methods) if grid_file is not None else {}
    source = f"--grid {grid_file}"
    return [method_grid(name, method_settings.get(name, {}), given.get(name), source, budget,
                        refit) for name in methods]
