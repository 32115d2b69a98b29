"""The periods of a world a run may set (``--train-period 1979-01-01..2016-01-01`` …): the text
form, its parsing and its check. Ground floor: imports only bench/validation.py."""

from __future__ import annotations

import dataclasses

import numpy as np

from bench.validation import check

#: Separator of a period's start and end on the command line (``1979-01-01..2016-01-01``), as
#: ``python -m bench worlds`` prints them; a colon would clash with the times of ISO dates.
PERIOD_SEPARATOR = ".."


def parse_period(text: str) -> tuple[np.datetime64, np.datetime64]:
    """``START..END`` (ISO dates or date-times, END excluded) -> (start, end) datetime64[ns].

    Raises ValueError when the text is not two ISO times with START before END."""
    start, sep, end = str(text).partition(PERIOD_SEPARATOR)
    if not sep or not start.strip() or not end.strip():
        raise ValueError(f"no {PERIOD_SEPARATOR!r} between start and end")
    try:
        times = np.datetime64(start.strip(), "ns"), np.datetime64(end.strip(), "ns")
    except ValueError as err:
        raise ValueError(f"not ISO dates ({err})") from None
    if not times[0] < times[1]:
        raise ValueError("the start is not before the end")
    return times


#: What a period must be, in a ConfigError's words.
PERIOD_EXPECTED = (f"START{PERIOD_SEPARATOR}END, ISO dates or date-times with START before END, "
                   f"END excluded (e.g. 1979-01-01{PERIOD_SEPARATOR}2016-01-01)")


def is_period(text) -> bool:
    """Whether ``text`` is ``START..END`` as ``parse_period`` takes it."""
    try:
        parse_period(text)
    except (TypeError, ValueError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class PeriodSettings:
    """The world's train / valid / test periods, each ``START..END`` (ISO dates or date-times,
    a half-open interval: END excluded, as the cards' ``[periods.*]``), or None for the card's.

    A run records the periods it used here (bench/setup.py ``resolved_config``), so config.json
    always says which years trained, validated and tested a method.
    """

    train: str | None = None
    valid: str | None = None
    test: str | None = None

    def __post_init__(self):
        for name in ("train", "valid", "test"):
            value = getattr(self, name)
            if value is None:
                continue
            check(name, value, is_period(value), PERIOD_EXPECTED)

    def given(self) -> dict[str, str]:
        """{period: "START..END"} of the periods set (the others are the card's)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
