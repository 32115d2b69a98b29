"""A run: every (method, density, seed) cell of a grid through the same cycles, resumable.

Layout of the run directory (DESIGN.md §6):

    config.json          the resolved RunConfig (a resumed run must match it)
    cells/<m>__<d>__<s>.nc   one finished cell each, written atomically when the cell ends
    metrics.nc           all cells merged (dims method, density, seed, cycle, phase, channel)
    timing.csv           one row per analysis: method, density, seed, cycle, seconds, peak bytes
    tables/ figures/     made from metrics.nc only (bench/report/tables.py, bench/report/plots.py)
    log.txt              what happened, one line per event

An interrupted run (Ctrl-C, SIGKILL) loses at most the cells in progress; ``resume=True``
skips the finished ones. Because cycles are deterministic for a seed, a resumed run gives the
metrics an uninterrupted one would have.

Cells run in this process by default; ``executor=`` (bench/dask_executor.py) spreads them over a
Dask cluster. A cell is the unit of work either way (``run_cell``), and the run directory and
metrics.nc are the same.

Selecting a method in metrics.nc: ``ds.sel({"method": "3dvar"})`` — ``ds.sel(method=…)`` would
pass ``method`` as xarray's interpolation-method argument.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from bench import cache, store
from bench.config import ObservationSettings, RunConfig, differences
from bench.cycle import (
    PHASES,
    CellResult,
    FirstBackground,
    TruthWindow,
    first_background,
    run_cycles,
)
from bench.timing import device_name
from methods import get_method
from methods.base import TrainingContext

CLIMATOLOGY_FRAMES = 128


class RunError(ValueError):
    """A run cannot start as asked (config mismatch on resume, unusable output folder)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def build_method(cfg: RunConfig, name: str, seed: int = 0):
    """The registered method ``name`` with the run's settings for it (``--set``) and ``seed``.

    Raises ValueError naming the setting when a field does not exist or its value is invalid.
    """
    cls = get_method(name)
    settings = dict(cfg.method_settings.get(name, {}))
    fields = {f.name for f in dataclasses.fields(cls)} - {"seed"}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"--set {name}.{unknown[0]}: {cls.__name__} has no field "
                         f"{unknown[0]!r}; its fields are {', '.join(sorted(fields))}")
    try:
        return cls(seed=seed, **settings)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--set {name}: {err}") from None


def cell_name(method: str, density: float, seed: int) -> str:
    return f"{method}__{density:g}__{seed}"


# ----------------------------------------------------------------------------- preparation
@dataclasses.dataclass
class Setup:
    """Everything the cells share."""

    world: object
    model: object
    model_key: str
    truth: TruthWindow
    start: FirstBackground
    climatology: torch.Tensor
    device: torch.device
    #: wall seconds of each setup stage (world, forecast model, first background), for log.txt
    stage_seconds: dict = dataclasses.field(default_factory=dict)


def load_model(cfg: RunConfig, world, device: torch.device, progress: bool):
    """The forecast model and a key identifying its weights (for caches of samples/methods)."""
    if cfg.forecast.kind == "fengwu":
        from bench.forecast.fengwu import FengWu

        f = cfg.forecast
        model = FengWu(world.spec, f.fengwu_onnx, f.fengwu_mean, f.fengwu_std, device=device)
        stat = Path(f.fengwu_onnx).stat()
        key = cache.config_hash({"onnx": str(Path(f.fengwu_onnx).resolve()),
                                 "size": stat.st_size, "mtime": stat.st_mtime_ns})
        return model, f"fengwu-{key}"
    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import emulator_entry, load_or_train

    emulator_cfg = EmulatorConfig()
    if cfg.forecast.emulator_steps is not None:
        emulator_cfg = dataclasses.replace(emulator_cfg, steps=cfg.forecast.emulator_steps)
    model, _ = load_or_train(world, emulator_cfg, device=device, progress=progress)
    return model, emulator_entry(world, emulator_cfg).name


def climatology(world, frames: int = CLIMATOLOGY_FRAMES) -> torch.Tensor:
    """Training-period mean (C, H, W), normalised, over at most ``frames`` evenly spaced times."""
    train = world.period("train")
    n = train.sizes["time"]
    idx = np.unique(np.linspace(0, n - 1, min(n, frames)).round().astype(int))
    return world.spec.to_tensor(train.isel(time=idx)).mean(dim=0)


def setup(cfg: RunConfig, progress: bool = True) -> Setup:
    from bench.worlds import load_world

    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    overrides = {"path": cfg.era5_path} if cfg.era5_path else {}
    seconds, t0 = {}, time.perf_counter()
    world = load_world(cfg.world, **overrides)
    print(world.prepare(progress=progress))
    seconds["world"], t0 = time.perf_counter() - t0, time.perf_counter()
    model, key = load_model(cfg, world, device, progress)
    seconds["forecast model"], t0 = time.perf_counter() - t0, time.perf_counter()
    truth = TruthWindow(world.period("test"), world.spec, device)
    start = first_background(model, truth, cfg.cycle)
    clim = climatology(world).to(device)
    seconds["truth window and first background"] = time.perf_counter() - t0
    return Setup(world, model, key, truth, start, clim, device, seconds)


def training_context(s: Setup, method, progress: bool) -> TrainingContext:
    from bench.samples import SampleSettings, load_or_make_samples

    world, spec = s.world, s.world.spec

    def samples(kind: str = "nmc", **settings):
        return load_or_make_samples(world, s.model, s.model_key,
                                    SampleSettings(kind=kind, **settings), progress=progress)

    entry = cache.entry_dir("methods", f"{type(method).__name__.lower()}-{world.name}", {
        "config": method.cache_config(), "world": cache.config_hash(world.card),
        "model": s.model_key})
    return TrainingContext(
        spec=spec, model=s.model,
        train_truth=lambda: spec.to_tensor(world.period("train").load()),
        samples=samples, device=s.device, cache_dir=entry, seed=method.seed, progress=progress)


# ----------------------------------------------------------------------------- results
def cell_dataset(result: CellResult, setup_: Setup, cfg: RunConfig) -> xr.Dataset:
    """One cell's records as a Dataset with dims (cycle, phase, channel)."""
    spec, k = setup_.truth.spec, cfg.cycle.cycles
    times = setup_.truth.times[setup_.start.start_index: setup_.start.start_index + k]
    dims3 = ("cycle", "phase", "channel")
    data = {
        "rmse": (dims3, result.rmse), "bias": (dims3, result.bias), "acc": (dims3, result.acc),
        "analysis_seconds": ("cycle", result.seconds),
        "peak_memory_bytes": ("cycle", result.peak_bytes),
        "n_obs": ("cycle", result.n_obs), "n_points": ("cycle", result.n_points),
        "dropped_obs": ("cycle", result.dropped_obs),
        "status": ((), result.status), "diverged_cycle": ((), result.diverged_cycle),
        "diverged_reason": ((), result.reason),
    }
    keys = sorted({key for d in result.diagnostics for key in d})
    for key in keys:
        values = np.full(k, np.nan)
        for i, d in enumerate(result.diagnostics):
            if isinstance(d.get(key), int | float):
                values[i] = d[key]
        data[f"diag_{key}"] = ("cycle", values)
    coords = {"cycle": np.arange(k), "phase": list(PHASES), "channel": list(spec.names),
              "valid_time": ("cycle", times),
              "units": ("channel", [ch.units for ch in spec.channels])}
    if result.forecast_rmse is not None:
        data["forecast_rmse"] = (("forecast_start", "lead_hours", "channel"), result.forecast_rmse)
        coords["forecast_start"] = result.forecast_starts
        coords["lead_hours"] = 6 * np.arange(1, result.forecast_rmse.shape[1] + 1)
    return xr.Dataset(data, coords=coords)


def merge_cells(cells: dict[tuple[str, float, int], xr.Dataset], cfg: RunConfig, attrs: dict):
    """Cells -> metrics.nc layout: dims (method, density, seed, cycle, phase, channel)."""
    rows = []
    for method in cfg.methods:
        dens = []
        for density in cfg.densities:
            seeds = [cells[(method, density, seed)] for seed in cfg.seeds]
            dens.append(xr.concat(seeds, dim=xr.DataArray(list(cfg.seeds), dims="seed")))
        rows.append(xr.concat(dens, dim=xr.DataArray(list(cfg.densities), dims="density")))
    ds = xr.concat(rows, dim=xr.DataArray(list(cfg.methods), dims="method"))
    ds = ds.rename({"concat_dim": "method"}) if "concat_dim" in ds.dims else ds
    ds.attrs.update(attrs)
    return ds


# ----------------------------------------------------------------------------- the grid
def check_output(out: Path, cfg: RunConfig, resume: bool) -> None:
    """Refuse to mix runs: an existing run needs --resume and the same config."""
    saved = out / "config.json"
    if saved.exists():
        if not resume:
            raise RunError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out")
        diff = differences(json.loads(saved.read_text()), json.loads(cfg.to_json()))
        if diff:
            raise RunError(f"cannot resume {out}: the config differs in {'; '.join(diff)}")
    existing = out
    while not existing.exists():  # check writability without creating anything yet
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to --out {out} ({existing} is not a writable folder); "
                       f"choose another folder")


def preflight(cfg: RunConfig) -> None:
    """Every check that needs no computation, so bad input fails before anything is written."""
    from bench.worlds import load_world

    cfg.validate()
    for name in cfg.methods:
        build_method(cfg, name)
    load_world(cfg.world, **({"path": cfg.era5_path} if cfg.era5_path else {}))
    if cfg.forecast.kind == "fengwu":
        for flag, value in (("--fengwu-onnx", cfg.forecast.fengwu_onnx),
                            ("--fengwu-mean", cfg.forecast.fengwu_mean),
                            ("--fengwu-std", cfg.forecast.fengwu_std)):
            if not Path(value).is_file():
                raise RunError(f"{flag} {value}: no such file; point it at the FengWu release")


def run(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True,
        command: str = "", prepared: Setup | None = None, executor=None) -> xr.Dataset:
    """Run (or resume) the grid and write the run directory. Returns metrics.nc's Dataset.

    ``prepared`` replaces world and model loading (tests, or a driver that shares one Setup).
    ``executor`` runs the unfinished cells elsewhere (bench/dask_executor.DaskExecutor: its
    ``start`` returns ``describe()`` of a worker's Setup, its ``run_cells`` writes each cell's
    file and returns the cells and the devices they ran on); by default they run here, one
    after another. Either way this process merges the cell files into metrics.nc.
    """
    if prepared is None and getattr(executor, "factory", None) in (None, setup):
        preflight(cfg)
    else:
        cfg.validate()
        for name in cfg.methods:
            build_method(cfg, name)
    out = Path(out)
    check_output(out, cfg, resume)
    log = out / "log.txt"
    if executor is None:
        s = prepared or setup(cfg, progress)
        info = describe(s)
    else:
        info = executor.start(cfg, progress)
    store.write_json(out / "config.json", cfg.to_json())
    store.append_log(log, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} start: {command}")
    if executor is None and s.stage_seconds:
        store.append_log(log, "setup: " + ", ".join(
            f"{stage} {sec:.1f} s" for stage, sec in s.stage_seconds.items()))
    cells: dict[tuple[str, float, int], xr.Dataset] = {}
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
        "spinup_cycles": cfg.cycle.spinup_cycles, "command": command, "config": cfg.to_json(),
        "peak_memory_kind": ("increase of torch.cuda.max_memory_allocated during analyse()"
                             if info["device_type"] == "cuda" else
                             "increase of the process RSS during analyse(), sampled every 1 ms"),
    }
    ds = merge_cells(cells, cfg, attrs)
    store.write_dataset(ds, out / "metrics.nc")
    store.write_csv(timing_frame(ds), out / "timing.csv", command)
    store.append_log(log, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} done: {len(cells)} cells")
    return ds


def grid(cfg: RunConfig) -> list[tuple[str, float, int]]:
    """Every (method, density, seed) cell, in the order the local executor runs them."""
    return [(m, d, s) for m in cfg.methods for d in cfg.densities for s in cfg.seeds]


def cell_path(out: str | Path, key: tuple[str, float, int]) -> Path:
    return Path(out) / "cells" / f"{cell_name(*key)}.nc"


def describe(s: Setup) -> dict[str, str]:
    """What metrics.nc's attributes say about where the cells ran (plain strings: picklable)."""
    return {"device": device_name(s.device), "device_type": s.device.type, "model": s.model_key}


def run_cell(cfg: RunConfig, s: Setup, out: str | Path, key: tuple[str, float, int],
             progress: bool = False) -> xr.Dataset:
    """Run one cell from its first cycle and write ``cells/<m>__<d>__<s>.nc`` atomically.

    This is the whole unit of work of every executor: a cell has no checkpoint within its
    cycles, so a cell interrupted anywhere restarts from cycle 0 (deterministic for its seed,
    so the rerun gives the same metrics), and a rerun simply replaces the file.
    """
    ds = _run_cell(cfg, s, key, progress, Path(out) / "log.txt")
    store.write_dataset(ds, cell_path(out, key))
    return ds


def _run_cell(cfg: RunConfig, s: Setup, key, progress: bool, log: Path) -> xr.Dataset:
    method_name, density, seed = key
    method = build_method(cfg, method_name, seed)
    label = cell_name(*key)
    t0 = time.perf_counter()
    try:
        method.prepare(training_context(s, method, progress))
        t_prepare, t0 = time.perf_counter() - t0, time.perf_counter()
        obs = ObservationSettings(density=density, sampling=cfg.obs_sampling,
                                  noise_fraction=cfg.obs_noise, redraw=cfg.obs_redraw, seed=seed)
        result = run_cycles(method, s.model, s.truth, s.start, obs, cfg.cycle, s.climatology,
                            progress=progress, label=label)
        stages = f" (prepare {t_prepare:.1f} s, cycles {time.perf_counter() - t0:.1f} s)"
    except Exception as err:  # noqa: BLE001 - one failing cell must not stop the grid
        result = CellResult.empty(cfg.cycle.cycles, len(s.truth.spec.channels))
        result.status, result.diverged_cycle = "error", 0
        result.reason = f"{type(err).__name__}: {err}"
        store.append_log(log, f"cell {label}: ERROR {result.reason}\n{traceback.format_exc()}")
        print(f"cell {label} failed: {result.reason} (details in {log})")
    else:
        if result.status != "ok":
            store.append_log(log, f"cell {label}: {result.status} at cycle "
                                  f"{result.diverged_cycle}: {result.reason}{stages}")
            print(f"cell {label} {result.status} at cycle {result.diverged_cycle}: "
                  f"{result.reason}")
        else:
            store.append_log(log, f"cell {label}: ok{stages}")
    return cell_dataset(result, s, cfg)


def timing_frame(ds: xr.Dataset):
    """One row per analysis (method, density, seed, cycle, seconds, peak bytes)."""
    frame = ds[["analysis_seconds", "peak_memory_bytes"]].to_dataframe().reset_index()
    frame = frame[["method", "density", "seed", "cycle", "analysis_seconds", "peak_memory_bytes"]]
    frame["device"] = ds.attrs.get("device", "")
    return frame.dropna(subset=["analysis_seconds"])
