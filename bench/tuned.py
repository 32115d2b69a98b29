"""Per-density method settings: chosen by ``python -m bench tune``, applied by ``run --tuned``.

``RunConfig.tuned`` = {method: {density key: {field: value}}}: for each tuned method, the
complete non-default settings of the candidate chosen at each density (its grid values and the
``--set`` values it was tuned with). The cell (method, density) of a tuned method is built with
exactly those (bench/setup.py ``build_method``); a method the run does not tune keeps its
defaults and ``--set`` values. Settings chosen at 1 % density need not suit 50 %, hence one
entry per density, and a tuned method must have one at every density of its run.

Density keys are ``density_key(d)``, the float's repr: a density asked as ``--columns``
(N / (H·W)) round-trips exactly through config.json and tuned.toml.

Ground floor: imports bench/validation.py only.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from bench.validation import check

#: what a row built from ``RunConfig.tuned`` is called in the tables; the others are "default"
TUNED, DEFAULT = "tuned", "default"


def read_toml(path: str | Path, flag: str, error: type[Exception]) -> dict:
    """The TOML file ``path`` given by ``flag`` (--grid, --tuned) as a dict; ``error`` (one
    line naming the flag and the file) when it cannot be read or is not TOML."""
    where = f"{flag} {path}"
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise error(f"{where}: cannot read it ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"{where}: not TOML ({err})") from None


def density_key(density: float) -> str:
    """The key of ``density`` in ``RunConfig.tuned`` and tuned.toml: "0.01", "0.009765625"."""
    return repr(float(density))


def check_tuned(tuned, methods: tuple[str, ...], densities: tuple[float, ...],
                method_settings: dict) -> None:
    """ConfigError (field ``tuned.<method>``) unless ``tuned`` maps methods of the run to
    settings at every density of the run, none of them a field ``method_settings`` also sets."""
    check("tuned", tuned, isinstance(tuned, dict), "{method: {density: {field: value}}}")
    for name, by_density in tuned.items():
        where = f"tuned.{name}"
        check(where, by_density, name in methods,
              f"settings of a method of this run ({', '.join(methods)})")
        check(where, by_density, isinstance(by_density, dict) and all(
            isinstance(s, dict) for s in by_density.values()), "{density: {field: value}}")
        missing = [f"{d:g}" for d in densities if density_key(d) not in by_density]
        check(where, sorted(by_density), not missing,
              f"settings at every density of the run (none at {', '.join(missing)})")
        clash = sorted({f for s in by_density.values() for f in s}
                       & set(method_settings.get(name, {})))
        check(where, clash, not clash, "no field that --set (method_settings) also sets")


def settings_at(tuned: dict, method: str, density: float) -> dict | None:
    """The tuned settings of ``method`` at ``density`` (a copy), None if it is not tuned."""
    by_density = tuned.get(method)
    if by_density is None:
        return None
    return dict(by_density.get(density_key(density), {}))


def kind_at(tuned: dict, method: str, density: float) -> str:
    """"tuned" if the cell (method, density) used tuned settings, else "default"."""
    return TUNED if density_key(density) in tuned.get(method, {}) else DEFAULT


def protocol(cfg) -> dict[str, object]:
    """What settings tuned in one run must share with the run they are applied to: the world,
    the forecast model, the observation protocol and how analyses enter the model, as flat
    dotted keys ({"world": …, "observations.noise_fraction": 0.01, …}; unset values left out,
    tuples as lists). ``cfg``: a RunConfig (not imported: this is the ground floor)."""
    d = cfg.to_dict()
    out: dict[str, object] = {"world": d["world"],
                              "cycle.history_update": d["cycle"]["history_update"]}
    for section in ("forecast", "observations"):
        for key, value in d[section].items():
            if value is not None:
                out[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
    return out
