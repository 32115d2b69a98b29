"""The built-in world: a Held–Suarez nature run with dinosaur, cached as zarr.

Generation (``python -m bench prepare --world heldsuarez-5.625``):
    1. spin up from an isothermal rest atmosphere (seeded perturbation) for ``spinup_days``;
       these frames are discarded;
    2. integrate the train, valid and test periods back to back, diagnosing FengWu's 69 channels
       every 6 hours on the 32×64 Gaussian output grid (heldsuarez_model.py);
    3. append each chunk to ``world.zarr`` in the cache entry keyed by a hash of every setting;
       per-channel checksums and training-period normalisation statistics go into the entry's
       ``complete.json`` marker, written last.
A valid cache is never regenerated. An entry without its marker (an interrupted run) or whose
contents disagree with the marker (frames missing, checksum mismatch) is reported as such.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from bench import cache
from bench.periods import PERIOD_SEPARATOR
from bench.state import FENGWU_CHANNELS, StateSpec, floor_std_per_variable
from bench.validation import ConfigError
from bench.worlds.base import PERIODS, World

FRAMES_PER_DAY = 4
CHUNK_DAYS = 10
#: std floor relative to the largest std of the same variable (state.floor_std_per_variable).
STD_FLOOR_FRACTION = 0.01


@dataclasses.dataclass(frozen=True)
class NatureRunSettings:
    """Everything that determines the world's contents (the cache key).

    Attributes:
        model: ModelSettings fields as a dict (truncation, sigma_levels, dt_minutes, seed, …).
        spinup_days: days integrated and discarded before the first kept frame.
        period_days: lengths of the train, valid and test periods in days.
        start: nominal valid time of the first kept frame (the run has no calendar: perpetual
            equinox; dates only label frames).
    """

    model: dict
    spinup_days: int
    period_days: dict
    start: str

    @classmethod
    def from_card(cls, card: dict) -> NatureRunSettings:
        gen = card["generator"]
        return cls(
            model=dict(gen["model"]),
            spinup_days=int(gen["spinup_days"]),
            period_days={k: int(card["periods"][k]["days"]) for k in PERIODS},
            start=card["periods"]["train"]["start"],
        )

    @property
    def kept_days(self) -> int:
        return sum(self.period_days.values())

    def times(self) -> np.ndarray:
        n = self.kept_days * FRAMES_PER_DAY
        return np.datetime64(self.start, "ns") + np.arange(n) * np.timedelta64(6, "h")


def generate(settings: NatureRunSettings, store_path, progress: bool = True) -> dict:
    """Run the nature run and write it to ``store_path`` (zarr). Returns the marker contents.

    Memory stays bounded: one chunk of CHUNK_DAYS is held at a time.
    """
    from bench.worlds.heldsuarez_model import HeldSuarezModel, ModelSettings

    model = HeldSuarezModel(ModelSettings(**settings.model))
    lat, lon = model.latitudes(), model.longitudes()
    times = settings.times()
    train_frames = settings.period_days["train"] * FRAMES_PER_DAY
    total_days = settings.spinup_days + settings.kept_days
    state = model.initial_state()

    n_channels = len(FENGWU_CHANNELS)
    checksum = np.zeros(n_channels)
    train_sum = np.zeros(n_channels)
    train_sumsq = np.zeros(n_channels)
    written = 0
    day = 0
    started = time.perf_counter()
    bar = tqdm(total=total_days, unit="day", desc="nature run (spin-up)", disable=not progress)
    while day < total_days:
        days = min(CHUNK_DAYS, total_days - day)
        if day < settings.spinup_days:  # never let a chunk straddle the end of spin-up
            days = min(days, settings.spinup_days - day)
        state, frames = model.run_chunk(state, days * FRAMES_PER_DAY)
        frames = np.asarray(frames, dtype=np.float32)  # waits for JAX: keeps the bar honest
        day += days
        bar.update(days)
        if day <= settings.spinup_days:
            continue
        bar.set_description("nature run")
        values = frames
        if not np.all(np.isfinite(values)):
            finite = np.isfinite(values).all(axis=(0, 2, 3))
            bad = [name for name, ok in zip(FENGWU_CHANNELS, finite, strict=True) if not ok]
            raise FloatingPointError(
                f"nature run produced NaN/Inf at day {day} in channels {bad}; "
                f"the settings {settings.model} are unstable (try a smaller dt_minutes)"
            )
        chunk_times = times[written: written + len(values)]
        _append(store_path, values, chunk_times, lat, lon, first=written == 0)
        checksum += values.astype(np.float64).sum(axis=(0, 2, 3))
        in_train = values[: max(0, train_frames - written)].astype(np.float64)
        train_sum += in_train.sum(axis=(0, 2, 3))
        train_sumsq += (in_train**2).sum(axis=(0, 2, 3))
        written += len(values)
    bar.close()

    count = train_frames * lat.size * lon.size
    mean = train_sum / count
    std = np.sqrt(np.maximum(train_sumsq / count - mean**2, 0.0))
    std = floor_std_per_variable(FENGWU_CHANNELS, std, STD_FLOOR_FRACTION)
    return {
        "settings": dataclasses.asdict(settings),
        "frames": written,
        "channels": list(FENGWU_CHANNELS),
        "checksum": checksum.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "lat": lat.tolist(),
        "lon": lon.tolist(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _append(store_path, values, times, lat, lon, first: bool) -> None:
    spec = StateSpec.create(FENGWU_CHANNELS, lat, lon, "legendre-gauss")
    ds = spec.to_dataset(values, time=times, normalised=False)
    if first:
        encoding = {name: {"chunks": (len(times), lat.size, lon.size)} for name in ds.data_vars}
        ds.to_zarr(store_path, mode="w", encoding=encoding, consolidated=True, zarr_format=2)
    else:
        ds.to_zarr(store_path, append_dim="time", consolidated=True, zarr_format=2)


class NatureWorld(World):
    """The Held–Suarez nature run described by a card of kind ``nature-run``.

    The run integrates exactly its card's periods (the generation settings and the cache entry
    come from the card alone). A run may set other periods inside the generated frames
    (``--train-period 2001-01-01..2003-01-01`` on a five-year world: learn from its first two
    years); the normalisation stays the generated training period's, so every such run shares
    one normalised space, one emulator and one world cache.
    """

    STORE = "world.zarr"
    settable_periods = True

    def __init__(self, name: str, card: dict, periods: dict[str, str] | None = None):
        super().__init__(name, card, periods)
        self.settings = NatureRunSettings.from_card(card)  # the card's, whatever periods are set
        train = card["periods"]["train"]
        self.generated_train = f"{train['start']}{PERIOD_SEPARATOR}{train['end']}"
        self.entry = cache.entry_dir("worlds", name, dataclasses.asdict(self.settings))
        self._marker: dict | None = None
        self._check_inside_generated()

    def _check_inside_generated(self) -> None:
        """A period set by the user must lie inside the frames the card generates."""
        times = self.settings.times()
        first, end = times[0], times[-1] + np.timedelta64(6, "h")
        for key in self.period_overrides:
            p = self.periods[key]
            if p.start < first or p.end > end:
                raise ConfigError(
                    f"periods.{key}", self.period_text(key),
                    f"a period inside the frames world {self.name!r} generates "
                    f"({np.datetime_as_string(first, 'm')}..{np.datetime_as_string(end, 'm')}); "
                    f"a longer period needs a card that generates it")

    @property
    def normalisation(self) -> str:
        return f"the world's statistics over its training period {self.generated_train}"

    # ----------------------------------------------------------------------------- cache
    def status(self, verify_checksums: bool = False) -> tuple[str, str]:
        """(state, message): state is 'missing', 'incomplete', 'corrupt' or 'valid'."""
        if not self.entry.exists():
            return "missing", f"no cache at {self.entry}"
        try:
            marker = cache.read_marker(self.entry)
        except cache.CacheError as err:
            return "corrupt", str(err)
        if marker is None:
            return "incomplete", (
                f"cache {self.entry} has no completion marker: its generation was interrupted")
        expected = len(self.settings.times())
        try:
            ds = xr.open_zarr(self.entry / self.STORE, consolidated=True)
        except Exception as err:  # noqa: BLE001 - any failure to open means the store is damaged
            return "corrupt", f"cache {self.entry} cannot be opened: {err}"
        missing = [n for n in FENGWU_CHANNELS if n not in ds.data_vars]
        if missing:
            return "corrupt", f"cache {self.entry} lacks channels {missing}"
        if ds.sizes.get("time") != expected or marker.get("frames") != expected:
            return "corrupt", (
                f"cache {self.entry} holds {ds.sizes.get('time')} frames, expected {expected} "
                f"(truncated)")
        if verify_checksums:
            try:
                sums = [float(ds[n].astype("float64").sum().compute()) for n in FENGWU_CHANNELS]
            except Exception as err:  # noqa: BLE001 - unreadable chunks are corruption
                return "corrupt", f"cache {self.entry} has unreadable data: {err}"
            for name, got, want in zip(FENGWU_CHANNELS, sums, marker["checksum"], strict=True):
                if not np.isclose(got, want, rtol=1e-6, atol=1e-6):
                    return "corrupt", (
                        f"cache {self.entry}: channel {name} sums to {got:.6g}, the marker says "
                        f"{want:.6g} (data changed or truncated after writing)")
        self._marker = marker
        return "valid", f"valid cache at {self.entry} ({expected} frames)"

    def prepare(self, progress: bool = True) -> str:
        state, message = self.status(verify_checksums=True)
        if state == "valid":
            return f"{self.name}: {message}; nothing to do"
        if state != "missing":
            print(f"{self.name}: {message}; regenerating it")
            cache.clear(self.entry)
        marker = cache.build_entry(
            self.entry, lambda directory: generate(self.settings, directory / self.STORE,
                                                   progress=progress))
        self._marker = marker
        return (f"{self.name}: generated {marker['frames']} frames in {marker['seconds']} s "
                f"at {self.entry}")

    def _require(self) -> dict:
        if self._marker is None:
            state, message = self.status()
            if state != "valid":
                raise cache.CacheError(
                    f"world {self.name!r}: {message}. "
                    f"Run `python -m bench prepare --world {self.name}` first."
                )
        return self._marker

    # ----------------------------------------------------------------------------- World API
    def open(self) -> xr.Dataset:
        self._require()
        return xr.open_zarr(self.entry / self.STORE, consolidated=True)

    @property
    def spec(self) -> StateSpec:
        marker = self._require()
        return StateSpec.create(
            marker["channels"], np.asarray(marker["lat"]), np.asarray(marker["lon"]),
            "legendre-gauss", np.asarray(marker["mean"]), np.asarray(marker["std"]),
        )
