"""Worlds: truth sources described by dataset cards in ``datasets/``.

``WORLD_KINDS`` maps a card's ``kind`` to its loader; ``load_world(name)`` reads
``datasets/<name>.toml`` and returns the World. An unknown name is an error listing the valid ones.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

from bench.worlds.base import PERIODS, Period, World

#: card kind -> "module:class" of its loader, imported on use so that listing worlds stays fast.
WORLD_KINDS: dict[str, str] = {
    "nature-run": "bench.worlds.nature:NatureWorld",
    "era5-wb2": "bench.worlds.era5:ERA5World",
}

__all__ = ["PERIODS", "Period", "World", "WORLD_KINDS", "card_grid", "cards_dir", "list_cards",
           "load_world"]


class UnknownWorldError(ValueError):
    """The requested world has no card."""


def cards_dir() -> Path:
    """``$ASSIMBENCH_DATASETS`` if set, else the repository's ``datasets/`` folder."""
    env = os.environ.get("ASSIMBENCH_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets"


def list_cards() -> dict[str, dict]:
    """All dataset cards by name."""
    folder = cards_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no dataset cards folder at {folder}; install assimbench from a checkout "
            f"(pip install -e .) or set ASSIMBENCH_DATASETS to the datasets/ folder"
        )
    cards = {}
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as f:
            card = tomllib.load(f)
        if card.get("name") != path.stem:
            raise ValueError(
                f"card {path} has name {card.get('name')!r}; it must equal {path.stem!r}")
        cards[path.stem] = card
    return cards


def card_grid(name: str):
    """The observation geometry (bench/obs_regime.ObservationGrid) of the grid on world
    ``name``'s card, read without building the world (``--columns``, ``--spacing-km``, the
    tables of metrics.nc files without ``obs_columns``). UnknownWorldError for an unknown name."""
    from bench.obs_regime import ObservationGrid

    cards = list_cards()
    if name not in cards:
        raise UnknownWorldError(
            f"unknown world {name!r}; valid worlds are: {', '.join(sorted(cards))}")
    grid = cards[name].get("grid", {})
    return ObservationGrid.from_shape(int(grid["nlat"]), int(grid["nlon"]), str(grid["type"]))


def load_world(name: str, **overrides) -> World:
    """The World named ``name``; ``overrides`` are passed to its loader (e.g. ``path=``)."""
    cards = list_cards()
    if name not in cards:
        raise UnknownWorldError(
            f"unknown world {name!r}; valid worlds are: {', '.join(sorted(cards))}"
        )
    card = cards[name]
    kind = card.get("kind")
    if kind not in WORLD_KINDS:
        raise ValueError(
            f"card {name!r} has kind {kind!r}; known kinds are {sorted(WORLD_KINDS)}"
        )
    module, cls = WORLD_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(name, card, **overrides)
