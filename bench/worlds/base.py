"""What every world provides: a StateSpec, named periods and lazily opened truth.

A world is described by a dataset card (``datasets/<name>.toml``) and read by the loader its
card's ``kind`` names. The truth is an xarray Dataset with one variable per channel, dims
``(time, lat, lon)``, physical SI units, lat north -> south and lon 0 -> 360 — exactly what
``StateSpec.to_tensor`` accepts.
"""

from __future__ import annotations

import abc
import copy
import dataclasses

import numpy as np
import xarray as xr

from bench.periods import PERIOD_SEPARATOR, parse_period
from bench.state import StateSpec
from bench.validation import ConfigError

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
        card: the parsed dataset card, with the periods a user set (``periods=``) in place of the
            card's; caches key on it, so a method fitted on other years is never reused.
        period_overrides: {period: "START..END"} of the periods set that differ from the card's
            (a check of a period against the data names its flag only for these).
    """

    #: Whether a user may set the periods (``--train-period`` …). A world generated from its
    #: card (the nature run integrates exactly the card's periods) keeps the card's.
    settable_periods = False

    def __init__(self, name: str, card: dict, periods: dict[str, str] | None = None):
        self.name = name
        self.card = card
        self.period_overrides: dict[str, str] = {}
        changed = {k: v for k, v in (periods or {}).items() if self._differs(k, v)}
        if not changed:
            return
        if not self.settable_periods:
            key, text = next(iter(changed.items()))
            raise ConfigError(f"periods.{key}", text,
                              f"the card's {key} period {self.period_text(key)}: world "
                              f"{name!r} generates its own periods (edit its card instead)")
        self.card = copy.deepcopy(card)
        for key, text in changed.items():
            start, _, end = text.partition(PERIOD_SEPARATOR)
            self.card["periods"][key] = {"start": start.strip(), "end": end.strip()}
        self.period_overrides = changed
        self._check_overlap()

    def _differs(self, key: str, text: str) -> bool:
        """Whether ``text`` (START..END, checked by PeriodSettings) is not the card's period."""
        start, end = parse_period(text)
        return (start, end) != (self.periods[key].start, self.periods[key].end)

    def _check_overlap(self) -> None:
        """The validation and test periods must not overlap the training period: methods,
        the emulator and the statistics learn from the training period only."""
        periods = self.periods
        train = periods["train"]
        for key in ("valid", "test"):
            p = periods[key]
            if p.start < train.end and train.start < p.end:
                field = key if key in self.period_overrides else "train"
                raise ConfigError(
                    f"periods.{field}", self.period_text(field),
                    f"a {key} period that does not overlap the training period "
                    f"({self.period_text(key)} and {self.period_text('train')} do; what a method "
                    f"learnt from must not be scored)")

    def period_text(self, key: str) -> str:
        """The period ``key`` as ``START..END``, written as in the card."""
        entry = self.card["periods"][key]
        return f"{entry['start']}{PERIOD_SEPARATOR}{entry['end']}"

    @property
    def normalisation(self) -> str:
        """Where the spec's normalisation statistics come from, in words (for config.json)."""
        return f"the world's statistics over its training period {self.period_text('train')}"

    def normalise_with(self, mean_path: str, std_path: str) -> None:
        """Use these per-channel mean / std files (FengWu's release: the run's normalisation is
        its model's) for the spec. A world whose statistics are fixed when it is generated
        (the nature run) keeps its own; the forecast model converts between the two."""
        return None

    def check(self) -> None:
        """Cheap checks of the world's data against its card, before any work (metadata only;
        ValueError or ConfigError naming what is wrong). Nothing to check by default."""
        return None

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
