"""What every world provides: a StateSpec, named periods and lazily opened truth.

A world is described by a dataset card (``datasets/<name>.toml``) and read by the loader its
card's ``kind`` names. The truth is an xarray Dataset with one variable per channel, dims
``(time, lat, lon)``, physical SI units, lat north -> south and lon 0 -> 360 — exactly what
``StateSpec.to_tensor`` accepts.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np
import xarray as xr

from bench.state import StateSpec

PERIODS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Period:
    """A half-open time interval [start, end)."""

    start: np.datetime64
    end: np.datetime64

    def select(self, ds: xr.Dataset) -> xr.Dataset:
        times = ds["time"].values
        return ds.isel(time=(times >= self.start) & (times < self.end))


class World(abc.ABC):
    """A source of truth trajectories on one StateSpec.

    Attributes:
        name: the card's name (the CLI's ``--world``).
        card: the parsed dataset card.
    """

    def __init__(self, name: str, card: dict):
        self.name = name
        self.card = card

    @property
    def periods(self) -> dict[str, Period]:
        """train / valid / test periods from the card."""
        out = {}
        for key in PERIODS:
            entry = self.card["periods"][key]
            start, end = np.datetime64(entry["start"], "ns"), np.datetime64(entry["end"], "ns")
            out[key] = Period(start, end)
        return out

    @abc.abstractmethod
    def prepare(self, progress: bool = True) -> str:
        """Build or validate whatever the world needs locally; returns a one-line status."""

    @abc.abstractmethod
    def open(self) -> xr.Dataset:
        """The whole truth, lazily where possible (dims time, lat, lon; one var per channel)."""

    @property
    @abc.abstractmethod
    def spec(self) -> StateSpec:
        """Channels, grid and normalisation statistics (from the training period)."""

    def period(self, name: str) -> xr.Dataset:
        """The truth restricted to one of the periods ``train``, ``valid``, ``test``."""
        if name not in PERIODS:
            raise ValueError(f"unknown period {name!r}; valid periods are {PERIODS}")
        return self.periods[name].select(self.open())
