"""ERA5 in WeatherBench2's layout, read lazily into the StateSpec layout.

Source (a WeatherBench2 ERA5 store, e.g. ``gs://weatherbench2/datasets/era5/
1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr``, or a local copy of one; zarr, one
netCDF file, or a folder of netCDF files split along time):

    geopotential, specific_humidity, u_component_of_wind, v_component_of_wind, temperature
        dims (time, level, latitude, longitude), level in hPa
    10m_u_component_of_wind, 10m_v_component_of_wind, 2m_temperature, mean_sea_level_pressure
        dims (time, latitude, longitude)

Units are already SI (geopotential in m² s⁻², msl in Pa), so values are copied, never converted.
WeatherBench2's 0.25° stores run latitude south -> north; some coarser ones store (longitude,
latitude) instead of (latitude, longitude). Grids (era5_grid.py): with both poles (0.25°, 1.5°)
as stored; without the poles (5.625°, "64x32_equiangular") regridded on read to the Gaussian
latitudes of the same number, where spherical-harmonic transforms are exact. ``open()`` returns
the World layout: one float32 variable per channel (``u10 … t1000``), dims ``(time, lat, lon)``,
lat north -> south, lon 0 -> 360, every array a lazy dask array, so a 0.25° store (≈ 287 MB per
6-hourly frame of 69 channels) is only read frame by frame when values are asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from bench.state import FENGWU_CHANNELS, Channel, StateSpec, floor_std_per_variable
from bench.worlds.base import World

#: Environment variable naming the store; wins over the card, loses to an explicit ``path``.
ENV_VAR = "ASSIMBENCH_ERA5"

#: WeatherBench2 variable name of each StateSpec variable.
SOURCE_NAMES: dict[str, str] = {
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "t2m": "2m_temperature",
    "msl": "mean_sea_level_pressure",
    "z": "geopotential",
    "q": "specific_humidity",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "t": "temperature",
}

#: Named channel layouts a card's ``[channels] layout`` may choose.
LAYOUTS: dict[str, tuple[str, ...]] = {"fengwu-69": FENGWU_CHANNELS}

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
#: netCDF files are often stored contiguously (one HDF5 chunk per variable): chunking by one frame
#: keeps a whole year of 0.25° fields from being read at once.
NETCDF_CHUNKS = {"time": 1}
#: std floor relative to the largest std of the same variable (as for the nature run): q at
#: 50 hPa is nearly constant, and normalising by its tiny std would amplify round-off.
STD_FLOOR_FRACTION = 0.01
FIX_HINT = (
    "point --era5-path (or the environment variable ASSIMBENCH_ERA5, or the card's [source] path) "
    "at a WeatherBench2 ERA5 store"
)


class ERA5Error(ValueError):
    """The ERA5 store cannot serve the card: a variable, level, grid or time is missing."""


class ERA5PathError(ERA5Error, FileNotFoundError):
    """No store is configured, or nothing exists at the configured path."""


def resolve_path(path: str | os.PathLike | None, card: dict) -> str:
    """The store location: ``path`` if given, else ``$ASSIMBENCH_ERA5``, else the card's
    ``[source] path``; "" when none is set."""
    if path:
        return str(path)
    return os.environ.get(ENV_VAR) or str(card.get("source", {}).get("path", "") or "")


def open_store(path: str) -> xr.Dataset:
    """Open a store lazily in its own layout: zarr (folder or URL), a netCDF file, or a folder of
    netCDF files concatenated along time."""
    if not path:
        raise ERA5PathError(
            "no ERA5 store is configured: set `path` in the card's [source] table, pass path= "
            f"(CLI: --era5-path) or set {ENV_VAR} to a local copy of a WeatherBench2 ERA5 store"
        )
    if "://" in path:  # remote zarr (gs://, https://): existence is the file system's business
        return _open(xr.open_zarr, path, chunks={})
    p = Path(path).expanduser()
    if not p.exists():
        raise ERA5PathError(
            f"no ERA5 store at {p}: set `path` in the card's [source] table, pass path= "
            f"(CLI: --era5-path) or set {ENV_VAR} to where your WeatherBench2 ERA5 copy lives"
        )
    if p.is_file() and p.suffix in NETCDF_SUFFIXES:
        return _open(xr.open_dataset, p, chunks=NETCDF_CHUNKS)
    is_zarr = any((p / f).exists() for f in (".zgroup", ".zmetadata", "zarr.json"))
    if p.is_dir() and not is_zarr:
        files = sorted(f for f in p.iterdir() if f.suffix in NETCDF_SUFFIXES)
        if not files:
            raise ERA5PathError(
                f"{p} is neither a zarr store nor a netCDF file nor a folder of netCDF files; "
                f"{FIX_HINT}"
            )
        return _open(
            xr.open_mfdataset, files, chunks=NETCDF_CHUNKS, combine="by_coords",
            data_vars="minimal", coords="minimal", compat="override", join="exact",
        )
    return _open(xr.open_zarr, p, chunks={})


def _open(opener, path, **kwargs) -> xr.Dataset:
    """``opener(path, **kwargs)``; any failure (bad metadata, no zarr group, a remote store
    without its file system package) is an ERA5Error naming the store: one line for the CLI."""
    try:
        return opener(path, **kwargs)
    except Exception as err:  # noqa: BLE001 - xarray, zarr, fsspec and netCDF raise many kinds
        where = path if isinstance(path, str | Path) else f"{path[0].parent} ({len(path)} files)"
        first = " ".join(str(err).split())[:300]
        raise ERA5Error(f"cannot open the ERA5 store {where}: {type(err).__name__}: {first}; "
                        f"{FIX_HINT}") from None


def check_contents(src: xr.Dataset, channels: tuple[Channel, ...], path: str) -> None:
    """Raise ERA5Error naming every variable and pressure level the channels need but ``src``
    lacks, what the store has instead, and how to fix it."""
    missing_vars: dict[str, list[str]] = {}
    missing_levels: dict[int, list[str]] = {}
    for ch in channels:
        source = SOURCE_NAMES[ch.variable]
        if source not in src.data_vars:
            missing_vars.setdefault(source, []).append(ch.name)
        elif ch.level is not None:
            if "level" not in src[source].dims:
                raise ERA5Error(
                    f"ERA5 store {path}: {source} has dims {src[source].dims}, without the "
                    f"'level' dimension that channel {ch.name} needs; {FIX_HINT}"
                )
            if ch.level not in set(src["level"].values.tolist()):
                missing_levels.setdefault(ch.level, []).append(ch.name)
    if missing_vars:
        needed = "; ".join(f"{v} (for {', '.join(names)})" for v, names in missing_vars.items())
        raise ERA5Error(
            f"ERA5 store {path} lacks the variable(s) {needed}. It has: "
            f"{', '.join(sorted(map(str, src.data_vars)))}. Drop those channels from the card's "
            f"[channels], or {FIX_HINT} that has {', '.join(missing_vars)}"
        )
    if missing_levels:
        levels = sorted(missing_levels)
        names = [n for lev in levels for n in missing_levels[lev]]
        raise ERA5Error(
            f"ERA5 store {path} lacks the pressure level(s) {levels} hPa (for channels "
            f"{', '.join(names)}); it has levels {src['level'].values.tolist()}. {FIX_HINT} "
            f"that has level{'s' if len(levels) > 1 else ''} {', '.join(map(str, levels))} "
            f"(WeatherBench2's 13-level 'wb13' stores have 50-1000 hPa)"
        )


def to_state_layout(src: xr.Dataset, spec: StateSpec) -> xr.Dataset:
    """Select, rename and reorder ``src`` (standard grid, contents checked) into one float32
    variable per channel of ``spec``, dims (time, lat, lon), with StateSpec.to_dataset's attrs."""
    data = {}
    for ch in spec.channels:
        da = src[SOURCE_NAMES[ch.variable]]
        if ch.level is not None:
            da = da.sel(level=ch.level)
        # reset_coords drops the scalar `level` left by .sel, which would clash between channels
        da = da.transpose("time", "lat", "lon").reset_coords(drop=True).astype(np.float32)
        da.attrs = {"units": ch.units, "long_name": ch.long_name}
        if ch.level is not None:
            da.attrs["level_hPa"] = ch.level
        data[ch.name] = da
    ds = xr.Dataset(data, attrs={"grid": spec.grid})
    return ds.assign_coords(spec.coords())


class ERA5World(World):
    """ERA5 from a WeatherBench2 store, described by a card of kind ``era5-wb2``.

    Args:
        name: the card's name.
        card: the parsed card (``[grid] type`` and ``regrid``, ``[channels]``, ``[periods.*]``,
            ``[stats]``, ``[source] path``).
        path: the store; overrides ``$ASSIMBENCH_ERA5`` and the card's ``[source] path``.
        stats_path: a folder with FengWu's ``data_mean.npy`` / ``data_std.npy`` (69 values each);
            overrides the card's ``[stats] fengwu_dir``. Without either, statistics are computed.
        periods: {period: "START..END"} replacing the card's (World).
        stats_files: (mean, std) .npy files of 69 values each, physical units; override
            ``stats_path`` (``normalise_with``: a FengWu run normalises with FengWu's files).

    Nothing is opened until ``prepare``, ``open`` or ``spec`` is used, so listing worlds never
    needs the store.
    """

    settable_periods = True

    def __init__(self, name: str, card: dict, path: str | None = None,
                 stats_path: str | None = None, periods: dict[str, str] | None = None,
                 stats_files: tuple[str, str] | None = None):
        super().__init__(name, card, periods)
        self.path = resolve_path(path, card)
        stats = card.get("stats", {})
        self.stats_path = str(stats_path or stats.get("fengwu_dir", "") or "")
        self.stats_files: tuple[str, str] | None = None
        self.grid = card.get("grid", {}).get("type", "equiangular")
        self.regrid = card.get("grid", {}).get("regrid", "fourier")
        # the store is part of what caches key on (the card), so an emulator or method fitted on
        # one store (a synthetic rehearsal) is never reused on another with the same periods
        self.card = {**self.card, "source": {**self.card.get("source", {}), "path": self.path}}
        channels = card.get("channels", {})
        if "names" in channels:
            self.channel_names = tuple(channels["names"])
        else:
            layout = channels.get("layout", "fengwu-69")
            if layout not in LAYOUTS:
                raise ValueError(
                    f"card {name!r}: unknown channel layout {layout!r}; known layouts are "
                    f"{sorted(LAYOUTS)}, or give [channels] names = [...]"
                )
            self.channel_names = LAYOUTS[layout]
        self._ds: xr.Dataset | None = None
        self._spec: StateSpec | None = None
        if stats_files:
            self.normalise_with(*stats_files)

    # ----------------------------------------------------------------------------- World API
    def open(self) -> xr.Dataset:
        """All times in the StateSpec layout, lazily: float32 dask arrays, dims (time, lat, lon),
        lat north -> south (H,), lon 0 -> 360 (W,), SI units. Opened once per instance."""
        if self._ds is None:
            from bench.worlds.era5_grid import standard_grid, to_card_grid

            src = standard_grid(open_store(self.path), self.grid)
            layout = StateSpec.create(
                self.channel_names, src["lat"].values, src["lon"].values, self.grid)
            check_contents(src, layout.channels, self.path)
            # a store without poles is regridded to Gaussian latitudes here (era5_grid.py)
            self._ds = to_card_grid(to_state_layout(src, layout), self.grid, self.regrid)
        return self._ds

    @property
    def layout(self) -> StateSpec:
        """The spec without statistics (mean 0, std 1): channels and grid, no data read."""
        ds = self.open()
        return StateSpec.create(self.channel_names, ds["lat"].values, ds["lon"].values, self.grid)

    @property
    def spec(self) -> StateSpec:
        """Channels, grid and normalisation statistics, computed once per instance."""
        if self._spec is None:
            layout = self.layout
            if self.stats_files or self.stats_path:
                mean, std = self._fengwu_statistics()
            else:
                mean, std = self.compute_statistics()
            self._spec = layout.with_statistics(mean, std)
        return self._spec

    def check(self) -> None:
        """Variables, levels, grid and periods against the store's metadata (no data read), and
        the statistics files when given; ERA5Error, or ConfigError for a period of the flags."""
        from bench.worlds.era5_check import check_periods

        check_periods(self, self.open()["time"].values)
        if self.stats_files or self.stats_path:
            self._fengwu_statistics()

    def prepare(self, progress: bool = True) -> str:
        """``check``, then read the first and last frame of each period of one level per
        variable (era5_check.check_samples: a metadata-only store, a missing or unreadable
        chunk, NaN fields); nothing is written. ``progress``: the World interface's."""
        from bench.worlds.era5_check import check_samples

        self.check()
        ds = self.open()
        frames = check_samples(ds, self.layout.channels, self.periods, self.path)
        times = ds["time"].values
        periods = ", ".join(f"{k} {self.period_text(k)}" for k in self.periods)
        return (
            f"{self.name}: ERA5 store {self.path} is valid: {len(ds.data_vars)} channels on a "
            f"{ds.sizes['lat']}x{ds.sizes['lon']} {self.grid} grid"
            + (f" (regridded from {ds.attrs['regridded_from']})" if "regridded_from" in ds.attrs
               else "")
            + f", {times.size} times from "
            f"{str(times[0])[:16]} to {str(times[-1])[:16]}; periods covered ({periods}), "
            f"{frames} frames of one level per variable read back; normalisation: "
            f"{self.normalisation}"
        )

    @property
    def normalisation(self) -> str:
        """Where the spec's statistics come from: the files, or the store over ``stats_times``."""
        if self.stats_files:
            return f"files {self.stats_files[0]} and {self.stats_files[1]}"
        if self.stats_path:
            return f"FengWu's data_mean.npy and data_std.npy in {self.stats_path}"
        stats = self.card.get("stats", {})
        cap = int(stats.get("max_times", 0))
        return (f"store statistics over the train period {self.period_text('train')} (one "
                f"frame in {int(stats.get('time_stride', 1))}"
                + (f", at most {cap} frames)" if cap else ")"))

    def normalise_with(self, mean_path: str, std_path: str) -> None:
        """Normalise with these files (World.normalise_with): the spec is FengWu's own. The
        files enter the card, which caches key on: samples and fitted methods are normalised."""
        self.stats_files = (str(mean_path), str(std_path))
        self.card = {**self.card, "stats": {**self.card.get("stats", {}),
                                            "files": list(self.stats_files)}}
        self._spec = None

    # ----------------------------------------------------------------------------- statistics
    def stats_times(self) -> np.ndarray:
        """Indices into ``open().time`` of the frames the statistics use: every
        ``[stats] time_stride``-th frame of the training period, thinned evenly to at most
        ``[stats] max_times`` frames (0 or absent: no cap)."""
        stats = self.card.get("stats", {})
        stride = int(stats.get("time_stride", 1))
        max_times = int(stats.get("max_times", 0))
        train = self.periods["train"]
        times = self.open()["time"].values
        idx = np.flatnonzero((times >= train.start) & (times < train.end))[::stride]
        if idx.size == 0:
            raise ERA5Error(
                f"no frames of the training period {train.start} .. {train.end} in the ERA5 store "
                f"{self.path} (it covers {times[0]} .. {times[-1]}); statistics need them"
            )
        if max_times and idx.size > max_times:
            idx = idx[np.linspace(0, idx.size - 1, max_times).round().astype(int)]
        return idx

    def compute_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (physical units, shape (C,)) over the frames of
        ``stats_times`` and all grid points (plain, not area-weighted, means), std floored at
        ``[stats] std_floor_fraction`` of the largest std of the same variable. Read in chunks
        of frames into float64 accumulators (streaming.channel_moments): memory O(chunk)."""
        from bench.worlds.streaming import channel_moments

        mean, std = channel_moments(self.open(), self.channel_names, self.stats_times())
        fraction = float(self.card.get("stats", {}).get("std_floor_fraction", STD_FLOOR_FRACTION))
        std = floor_std_per_variable(self.channel_names, std, fraction)
        if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
            bad = [n for n, m, s in zip(self.channel_names, mean, std, strict=True)
                   if not (np.isfinite(m) and s > 0)]
            raise ERA5Error(
                f"ERA5 store {self.path}: channels {bad} have NaN values or zero spread in the "
                f"frames used for statistics; check the store's training period"
            )
        return mean, std

    def _fengwu_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The statistics files' mean and std, (69,) float64 each (era5_check)."""
        from bench.worlds.era5_check import statistics_files

        return statistics_files(self)
