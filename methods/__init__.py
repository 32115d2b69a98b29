"""Assimilation methods behind one interface (methods/base.py) and their registry.

``METHODS`` maps the CLI name (also the ``method`` coordinate of the results) to the class.
Adding a method: write ``methods/<name>.py`` (or a package) with a frozen dataclass subclassing
``methods.base.Assimilator`` (``fit`` → ``load`` → ``analyse``, DESIGN.md §3) and add one line
here; it must pass tests/test_method_contract.py.
"""

from __future__ import annotations

from methods.base import Assimilator
from methods.diffda import DiffDA
from methods.envar import EnVar
from methods.fourdvar import FourDVar
from methods.interp import Interpolation
from methods.letkf import LETKF
from methods.none import NoAssimilation
from methods.none_ensemble import NoAssimilationEnsemble
from methods.threedvar import ThreeDVar
from methods.vaevar import VAEVar

METHODS: dict[str, type[Assimilator]] = {
    "none": NoAssimilation,
    "none-ensemble": NoAssimilationEnsemble,
    "interp": Interpolation,
    "3dvar": ThreeDVar,
    "4dvar": FourDVar,
    "vaevar": VAEVar,
    "diffda": DiffDA,
    "letkf": LETKF,
    "envar": EnVar,
}


class UnknownMethodError(ValueError):
    """The requested method is not registered."""


def get_method(name: str) -> type[Assimilator]:
    """The class registered as ``name``; an error listing the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; valid methods are: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "UnknownMethodError", "get_method"]
