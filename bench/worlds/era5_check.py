"""Checks of an ERA5 store against its card, before any work (bench/worlds/era5.py).

``check_periods`` reads only the time coordinate: every period of the card (or of the flags)
inside the store, every 6-hourly frame of it present. ``check_samples`` reads a little data: the
first and last frame of each period of one level per variable (6 frames of one 721 × 1440 field
per variable at 0.25°, 4 MB each, though a chunk holding every level of a frame is read whole),
enough to catch a store written without its data (metadata only: every read gives the fill value,
NaN), a chunk that was never copied, or one that cannot be decoded, without reading the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from bench.config import STEP_HOURS
from bench.periods import PERIOD_SEPARATOR
from bench.state import FENGWU_CHANNELS, Channel
from bench.validation import ConfigError
from bench.worlds.era5 import FIX_HINT, SOURCE_NAMES, ERA5Error, ERA5PathError


def _t(time) -> str:
    """A time as the cards write it: 2018-01-01T00:00."""
    return str(np.datetime64(time, "m"))


def check_periods(world, times: np.ndarray) -> None:
    """Raise unless each period of ``world`` (an ERA5World) lies inside the store and the store
    has every 6-hourly frame of it.

    Args:
        times: the store's time coordinate, (T,) datetime64, ascending.
    Raises:
        ConfigError ``periods.<key>``: a period set on the command line (``--test-period``) that
            the store does not cover (the CLI names the flag).
        ERA5Error: the same for a period of the card, or a store that is not 6-hourly.
    """
    step = np.timedelta64(STEP_HOURS, "h")
    if times.size > 1:
        store_step = np.median(np.diff(times))
        if store_step != step:
            hours = store_step / np.timedelta64(1, "h")
            raise ERA5Error(
                f"the ERA5 store {world.path} has a frame every {hours:g} h; the suite's worlds "
                f"are {STEP_HOURS}-hourly: use a 6-hourly WeatherBench2 store ('...-6h-...')")
    covers = f"{_t(times[0])}{PERIOD_SEPARATOR}{_t(times[-1] + step)}"
    for key, period in world.periods.items():
        # the 6-hourly frames of [start, end) on the store's own grid of times
        k0 = int(np.ceil((period.start - times[0]) / step))
        k1 = int(np.ceil((period.end - times[0]) / step))
        expected = times[0] + np.arange(k0, k1) * step
        present = np.isin(expected, times)
        if expected.size and present.all():
            continue
        if period.start < times[0] or period.end - step > times[-1]:
            problem = f"covers only {covers}"
        else:
            missing = expected[~present]
            problem = (f"lacks {missing.size} of its {expected.size} 6-hourly frames (the first "
                       f"at {_t(missing[0])})")
        if key in world.period_overrides:
            raise ConfigError(f"periods.{key}", world.period_overrides[key],
                              f"a {key} period that the ERA5 store {world.path} holds (the store "
                              f"{problem}): choose one inside {covers}")
        raise ERA5Error(
            f"the {key} period {world.period_text(key)} of card {world.name!r} is not inside the "
            f"ERA5 store {world.path}, which {problem}: pass --{key}-period START{PERIOD_SEPARATOR}"
            f"END inside {covers}, or edit [periods.{key}] in the card (or a copy of it in a "
            f"folder named by ASSIMBENCH_DATASETS), or {FIX_HINT} that covers it")


def sample_channels(channels: tuple[Channel, ...]) -> list[Channel]:
    """One channel per source variable: for an upper-air variable the middle one of its levels
    (in the card's order), so each variable of the store is read once."""
    by_variable: dict[str, list[Channel]] = {}
    for ch in channels:
        by_variable.setdefault(ch.variable, []).append(ch)
    return [chs[len(chs) // 2] for chs in by_variable.values()]


def check_samples(ds: xr.Dataset, channels: tuple[Channel, ...], periods: dict,
                  path: str) -> int:
    """Read the first and last frame of each period of one level per variable; raise ERA5Error
    for a read that fails, a frame with NaN values, or a frame with one value everywhere (a
    missing chunk reads as the array's fill value). Returns the number of frames read per
    variable.

    Args:
        ds: the world layout (``ERA5World.open()``): channels (time, lat, lon), lazy.
        channels: the world's channels (StateSpec.channels).
        periods: {name: Period} of the world.
    """
    times = ds["time"].values
    idx = set()
    for period in periods.values():
        inside = np.flatnonzero((times >= period.start) & (times < period.end))
        if inside.size:
            idx |= {int(inside[0]), int(inside[-1])}
    idx = sorted(idx)
    fix = ("copy those data again from WeatherBench2, or " + FIX_HINT + " that holds them")
    for ch in sample_channels(channels):
        what = SOURCE_NAMES[ch.variable] + (f" at {ch.level} hPa" if ch.level is not None else "")
        try:
            values = np.asarray(ds[ch.name].isel(time=idx).values)
        except Exception as err:  # noqa: BLE001 - any failure to read is a damaged store
            first = " ".join(str(err).split())[:300]
            raise ERA5Error(
                f"ERA5 store {path}: cannot read {what} (channel {ch.name}) at "
                f"{', '.join(_t(times[i]) for i in idx)}: {type(err).__name__}: {first}; "
                f"{fix}") from None
        for frame, i in zip(values, idx, strict=True):
            finite = np.isfinite(frame)
            where = f"ERA5 store {path}: {what} (channel {ch.name}) at {_t(times[i])}"
            if not finite.any():
                raise ERA5Error(
                    f"{where} is all NaN: the store holds no data there (written without its "
                    f"data, metadata only, or a chunk never copied); {fix}")
            if not finite.all():
                raise ERA5Error(f"{where} has {int((~finite).sum())} NaN values of "
                                f"{frame.size}; {fix}")
            if frame.min() == frame.max():
                raise ERA5Error(
                    f"{where} is {float(frame.flat[0]):g} everywhere: no data there (a missing "
                    f"chunk reads as the array's fill value); {fix}")
    return len(idx)


def statistics_files(world) -> tuple[np.ndarray, np.ndarray]:
    """FengWu's release statistics for ``world`` (an ERA5World): its ``stats_files`` (mean,
    std), else ``data_mean.npy`` / ``data_std.npy`` in its ``stats_path``. Valid only for
    FengWu's own 69 channels in its order.

    Returns:
        mean, std: (69,) float64, physical units; std > 0.
    Raises:
        ERA5PathError: a file is missing. ERA5Error: the card's channels are not FengWu's, or
            a file does not hold 69 finite numbers (std: > 0).
    """
    if world.stats_files:
        files = [Path(f).expanduser() for f in world.stats_files]
        how = "--fengwu-mean / --fengwu-std (FengWu's data_mean.npy and data_std.npy)"
    else:
        folder = Path(world.stats_path).expanduser()
        files = [folder / "data_mean.npy", folder / "data_std.npy"]
        how = ("the card's [stats] fengwu_dir (or stats_path=) at the folder of FengWu's release "
               "that holds data_mean.npy and data_std.npy")
    if tuple(world.channel_names) != FENGWU_CHANNELS:
        raise ERA5Error(
            f"FengWu statistics {files[0]} describe the fengwu-69 layout; card {world.name!r} "
            f"has {len(world.channel_names)} other channels. Drop the statistics files")
    out = []
    for file, positive in zip(files, (False, True), strict=True):
        if not file.is_file():
            raise ERA5PathError(f"no statistics file {file}: point {how} at it")
        try:
            values = np.load(file, allow_pickle=False).astype(np.float64).reshape(-1)
        except (OSError, ValueError, TypeError) as err:
            raise ERA5Error(f"{file} is not a .npy array of numbers ({err}); point {how} at "
                            "FengWu's files") from None
        ok = values.size == len(FENGWU_CHANNELS) and np.all(np.isfinite(values))
        if not ok or (positive and not np.all(values > 0)):
            need = "finite values > 0" if positive else "finite values"
            raise ERA5Error(f"{file} holds {values.size} values; expected 69 {need}, one per "
                            f"FengWu channel in FengWu's order; point {how} at FengWu's files")
        out.append(values)
    return out[0], out[1]
