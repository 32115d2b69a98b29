"""A run: every (method, density, seed) cell of a grid through the same cycles, resumable.

Layout of the run directory (DESIGN.md §6):

    config.json          the resolved RunConfig (a resumed run must match it)
    cells/<m>__<d>__<s>.nc   one finished cell each, written atomically when the cell ends
    metrics.nc           all cells merged (bench/scorer.py documents every variable)
    timing.csv           one row per analysis: method, density, seed, cycle, seconds, peak bytes
    tables/ figures/     made from metrics.nc only (bench/report/)
    log.txt              what happened, one line per event

An interrupted run (Ctrl-C, SIGKILL) loses at most the cells in progress; ``resume=True``
skips the finished ones. Because cycles are deterministic for a seed, a resumed run gives the
metrics an uninterrupted one would have.

Cells run in this process by default; ``executor=`` (bench/dask_executor.py) spreads them over a
Dask cluster. A cell is the unit of work either way (``run_cell``), and the run directory and
metrics.nc are the same. What the cells share (world, model, fitted methods) is built by
bench/setup.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np
import xarray as xr

from bench import memory_check, obs_regime, scorer, store
from bench.config import STEP_HOURS, RunConfig, differences
from bench.cycle import first_cycle_index, run_cycles
from bench.obs_regime import ObservationGrid
from bench.peak_memory import Stage
from bench.scorer import CellScores
from bench.setup import (
    Setup,
    build_method,
    emulator_world,
    fit_and_load,
    initial_ensemble,
    open_world,
    resolve_device,
    resolved_config,
    setup,
)
from bench.state import FENGWU_CHANNELS, StateSpec
from bench.timing import device_name
from bench.validation import ConfigError
from bench.worlds import UnknownWorldError, card_grid

CellKey = tuple[str, float, int]


class RunError(ValueError):
    """A run cannot start as asked (config mismatch on resume, unusable output folder)."""


def cell_name(method: str, density: float, seed: int) -> str:
    return f"{method}__{density:g}__{seed}"


def grid(cfg: RunConfig) -> list[CellKey]:
    """Every (method, density, seed) cell, in the order the local executor runs them."""
    return [(m, d, s) for m in cfg.methods for d in cfg.densities for s in cfg.seeds]


def cell_path(out: str | Path, key: CellKey) -> Path:
    return Path(out) / "cells" / f"{cell_name(*key)}.nc"


# ----------------------------------------------------------------------------- before starting
def preflight(cfg: RunConfig) -> None:
    """Every check that needs no computation, so bad input fails before anything is written
    or built: the methods and their settings, FengWu's files, the world's card and the
    metadata of its data (an ERA5 store: variables, levels, grid, the periods), then whether
    each method fits in the memory available (``check_memory``)."""
    for name in cfg.methods:
        for density in cfg.densities:  # tuned settings differ per density
            for seed in cfg.seeds:
                build_method(cfg, name, seed, density)
    if cfg.forecast.kind == "fengwu":  # before the world, which normalises with two of them
        for field in ("fengwu_onnx", "fengwu_mean", "fengwu_std"):
            value = getattr(cfg.forecast, field)
            if not Path(value).is_file():
                raise ConfigError(f"forecast.{field}", value,
                                  "an existing file of FengWu's release; point it at the release")
    world = open_world(cfg)
    world.check()
    emulator_world(cfg, world).check()
    check_memory(cfg, world_layout(world))
    check_cycles_fit(cfg, world)


def check_cycles_fit(cfg: RunConfig, world) -> None:
    """The first background's forecast, the cycles and the longest 4D observation window of
    the run's methods lie inside the cycled period (``first_cycle_index`` on the period's
    6-hourly times: the card's or the flags'; ``world.check`` has checked that an ERA5 store
    holds them), so ``--days`` too long is refused before the forecast model is trained."""
    if cfg.forecast.kind == "fengwu":
        from bench.forecast.fengwu import HISTORY as history
    else:
        from bench.forecast.emulator import EmulatorConfig

        history = EmulatorConfig().history
    period = world.periods[cfg.cycle.period]
    times = np.arange(period.start, period.end, np.timedelta64(STEP_HOURS, "h"))
    window_hours = max(build_method(cfg, name, cfg.seeds[0], density).window_hours
                       for name in cfg.methods for density in cfg.densities)
    window_steps = (cfg.observations.window_offsets(window_hours)[-1] // STEP_HOURS
                    if window_hours else 0)
    first_cycle_index(times, history, cfg.cycle, window_steps)


def world_layout(world) -> StateSpec:
    """The channels and grid of ``world`` (no statistics), with nothing built or generated:
    the world's own ``layout`` where it has one (an ERA5 store's metadata, after ``check``: the
    grid it serves, which may be coarser than its card's), else its card's ``[grid]`` and
    ``[channels]`` (a generated world is written on its card's grid; its spec would need the
    generated cache); a world without a card grid (tests' toy worlds) gives its spec."""
    if hasattr(type(world), "layout"):
        return world.layout
    if "grid" not in world.card:  # a world whose card has no grid serves its spec at once
        return world.spec
    grid, channels = world.card["grid"], world.card.get("channels", {})
    nlat, nlon = int(grid["nlat"]), int(grid["nlon"])
    lat = obs_regime.grid_latitudes(nlat, str(grid["type"]))
    return StateSpec.create(tuple(channels.get("names", FENGWU_CHANNELS)), lat,
                            np.arange(nlon) * 360.0 / nlon, str(grid["type"]))


def check_memory(cfg: RunConfig, spec: StateSpec) -> None:
    """ConfigError naming ``methods`` when a method would not fit: its estimated peak
    (bench/memory_check.py: its ``memory_estimate`` with the run's settings, at each density's
    observation count, plus the harness's states) above the bytes the run's device has
    available now. Cells run one after another, so each method must fit on its own; the largest
    density counts (more observations, more memory)."""
    device = resolve_device(cfg.device)
    _, h, w = spec.shape
    observed = len(cfg.observations.channels or spec.channels)
    needed: dict[str, float] = {}
    for name in cfg.methods:
        for density in cfg.densities:  # tuned settings (members, sizes) differ per density
            method = build_method(cfg, name, cfg.seeds[0], density)
            # a 4D method holds the observations of every time of its window
            times = len(cfg.observations.window_offsets(method.window_hours))
            n_obs = times * memory_check.observation_count(cfg.observations.sampling, observed,
                                                           h * w, density)
            _, total = memory_check.needed_bytes(method, spec, n_obs)
            needed[name] = max(needed.get(name, 0.0), total)
    available = memory_check.available_bytes(device)
    too_big = memory_check.exceeding(needed, available)
    if too_big:
        short = memory_check.shortfall(too_big, available, device)
        raise ConfigError(
            "methods", tuple(too_big),
            f"methods that fit in memory: estimated peak {short} on {device.type} at {h}x{w} "
            f"{spec.grid} with {len(spec.channels)} channels; leave them out, use a world with a "
            "smaller grid, or run where more memory is free (another machine or --device)")


def check_output(out: Path, cfg: RunConfig, resume: bool) -> None:
    """Refuse to mix runs: an existing run needs --resume and the same config."""
    saved = Path(out) / "config.json"
    if saved.exists():
        if not resume:
            raise RunError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out")
        old = _recorded(RunConfig.from_dict(json.loads(saved.read_text())), cfg).to_dict()
        diff = differences(old, cfg.to_dict())
        if diff:
            raise RunError(f"cannot resume {out}: the config differs in {'; '.join(diff)}")
    existing = Path(out)
    while not existing.exists():  # check writability without creating anything yet
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to --out {out} ({existing} is not a writable folder); "
                       f"choose another folder")


def _recorded(old: RunConfig, new: RunConfig) -> RunConfig:
    """``old`` with what a config.json of an earlier version did not record (the periods, the
    normalisation: None) taken from ``new``, so such a run can still be resumed."""
    periods = {k: v if v is not None else getattr(new.periods, k)
               for k, v in dataclasses.asdict(old.periods).items()}
    return dataclasses.replace(old, periods=dataclasses.replace(old.periods, **periods),
                               normalisation=old.normalisation or new.normalisation)


def _regimes(cfg: RunConfig, info: dict[str, str]) -> list[dict] | None:
    """Each density's observed columns and mean spacing (bench/obs_regime.py) on the world's
    grid: the Setup's (``describe``'s ``obs_grid``, wherever it ran), else the card's; None
    when neither is known."""
    if "obs_grid" in info:
        lat, nlon = json.loads(info["obs_grid"])
        grid = ObservationGrid(np.asarray(lat), nlon, cfg.world)
    else:
        try:
            grid = card_grid(cfg.world)
        except ValueError:
            return None
    return obs_regime.regimes(grid, cfg.densities, cfg.observations.sampling)


def describe(s: Setup) -> dict[str, str]:
    """What metrics.nc's attributes say about where the cells ran (plain strings: picklable),
    and the world's grid as JSON [lat, nlon] (``obs_grid``: the observation regimes)."""
    spec = s.world.spec
    return {"device": device_name(s.device), "device_type": s.device.type, "model": s.model_key,
            "obs_grid": json.dumps([[float(v) for v in spec.lat], int(spec.lon.size)])}


# ----------------------------------------------------------------------------- the grid
def run(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True,
        command: str = "", prepared: Setup | None = None, executor=None) -> xr.Dataset:
    """Run (or resume) the grid and write the run directory. Returns metrics.nc's Dataset.

    The caller has run ``preflight(cfg)`` and ``check_output`` (the CLI does, once).
    ``prepared`` replaces world and model loading (tests, or a driver that shares one Setup).
    ``executor`` runs the unfinished cells elsewhere (bench/dask_executor.DaskExecutor: its
    ``start`` returns ``describe()`` of a worker's Setup, its ``run_cells`` writes each cell's
    file and returns the cells and the devices they ran on); by default they run here, one
    after another. Either way this process merges the cell files into metrics.nc.
    """
    out = Path(out)
    started = time.strftime('%Y-%m-%dT%H:%M:%S')  # logged after setup, timed from here
    if prepared is None:  # the periods and the normalisation source, recorded in config.json
        try:
            cfg = resolved_config(cfg)
        except UnknownWorldError:
            # no card: an executor's own Setup factory (a test's synthetic world); the CLI's
            # preflight has refused unknown worlds before this
            pass
    check_output(out, cfg, resume)
    log = out / "log.txt"
    if executor is None:
        s = prepared or setup(cfg, progress)
        info = describe(s)
    else:
        info = executor.start(cfg, progress)
    regimes = _regimes(cfg, info)
    store.write_json(out / "config.json", cfg.to_json(regimes))
    store.append_log(log, f"{started} start: {command}")
    if executor is None and s.stages:
        store.append_log(log, "setup: " + "; ".join(
            f"{name} {stage.describe()}" for name, stage in s.stages.items()))
    cells: dict[CellKey, xr.Dataset] = {}
    todo = []
    for key in grid(cfg):
        path = cell_path(out, key)
        if path.exists():
            cells[key] = xr.load_dataset(path)
            store.append_log(log, f"cell {cell_name(*key)}: finished earlier, reused")
        else:
            todo.append(key)
    if executor is None:
        for key in todo:
            cells[key] = run_cell(cfg, s, out, key, progress)
    elif todo:
        done, devices = executor.run_cells(cfg, out, todo, progress)
        cells.update(done)
        info["device"] = ", ".join(sorted({info["device"], *devices}))
    attrs = {
        "device": info["device"], "world": cfg.world, "model": info["model"],
        # the table captions name the years and the normalisation (report/render.provenance)
        **{k: v for k, v in (("periods", _periods_text(cfg)),
                             ("normalisation", cfg.normalisation)) if v},
        "spinup_cycles": cfg.cycle.spinup_cycles, "command": command,
        "config": cfg.to_json(regimes),
        "peak_memory_kind": ("increase of torch.cuda.max_memory_allocated during analyse()"
                             if info["device_type"] == "cuda" else
                             "increase of the process RSS during analyse(), sampled every 1 ms"),
    }
    ds = scorer.merge(cells, cfg.methods, cfg.densities, cfg.seeds, attrs, regimes)
    store.write_dataset(ds, out / "metrics.nc")
    store.write_csv(scorer.timing_frame(ds), out / "timing.csv", command)
    store.append_log(log, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} done: {len(cells)} cells")
    return ds


def _periods_text(cfg: RunConfig) -> str:
    """"train A..B, valid C..D, test E..F" of the periods recorded in ``cfg`` ("" if none)."""
    return ", ".join(f"{k} {v}" for k, v in cfg.periods.given().items())


def run_cell(cfg: RunConfig, s: Setup, out: str | Path, key: CellKey,
             progress: bool = False) -> xr.Dataset:
    """Run one cell from its first cycle and write ``cells/<m>__<d>__<s>.nc`` atomically.

    This is the whole unit of work of every executor: a cell has no checkpoint within its
    cycles, so a cell interrupted anywhere restarts from cycle 0 (deterministic for its seed,
    so the rerun gives the same metrics), and a rerun simply replaces the file.
    """
    ds = _run_cell(cfg, s, key, progress, Path(out) / "log.txt")
    store.write_dataset(ds, cell_path(out, key))
    return ds


def _run_cell(cfg: RunConfig, s: Setup, key: CellKey, progress: bool, log: Path
              ) -> xr.Dataset:
    method_name, density, seed = key
    method = build_method(cfg, method_name, seed, density)
    label = cell_name(*key)
    times = s.truth.times[s.start.start_index: s.start.start_index + cfg.cycle.cycles]
    stage = Stage.start()
    try:
        analyser = fit_and_load(s, method, progress)
        start = (initial_ensemble(s, cfg, seed, method.members, progress) if method.members
                 else s.start)
        fitted, stage = stage.stop(), Stage.start()
        result = run_cycles(analyser, s.model, s.truth, start,
                            cfg.cell_observations(density, seed), cfg.cycle, s.climatology,
                            window_hours=method.window_hours,
                            forecast_batch=cfg.ensemble.forecast_batch,
                            progress=progress, label=label)
        stages = f"; fit {fitted.describe()}; cycles {stage.stop().describe()}"
    except Exception as err:  # noqa: BLE001 - one failing cell must not stop the grid
        result = CellScores(cfg.cycle.cycles, s.truth.spec, method.members, method.window_hours)
        result.stop(0, f"{type(err).__name__}: {err}", status="error")
        store.append_log(log, f"cell {label}: ERROR {result.reason}\n{traceback.format_exc()}")
        print(f"cell {label} failed: {result.reason} (details in {log})")
    else:
        if result.status != "ok":
            store.append_log(log, f"cell {label}: {result.status} at cycle "
                                  f"{result.stopped_at}: {result.reason}{stages}")
            print(f"cell {label} {result.status} at cycle {result.stopped_at}: "
                  f"{result.reason}")
        else:
            store.append_log(log, f"cell {label}: ok{stages}")
    return result.dataset(times)
