"""What the cells of a run share, built once: the world, the forecast model, the truth window,
the first background, the climatology; and the methods, fitted through the runner's cache.

    s = setup(cfg)                                  world, model, truth, first background
    method = build_method(cfg, name, seed, d)       the frozen hyper-parameters (--set, tuned)
    analyser = fit_and_load(s, method)              fit (cached atomically, bench/cache.py) → load
    start = initial_ensemble(s, cfg, seed, N)       an ensemble method's first members

A method's fitted state is cached under ``methods/<class>-<world>-<hash>`` keyed by its
``cache_config()`` (hyper-parameters less the analysis-only ones), the world's card and the
forecast model's key; only methods whose ``fit`` is overridden are cached.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from bench import cache
from bench.config import RunConfig
from bench.cycle import FirstBackground, TruthWindow, first_background
from bench.peak_memory import Stage
from bench.tuned import density_key, settings_at
from bench.validation import ConfigError, check_method_setting
from methods import METHODS, get_method
from methods.base import Analyser, Assimilator, TrainingContext

#: Frames of the training period averaged into the climatology (evenly spaced).
CLIMATOLOGY_FRAMES = 128


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda when torch sees one, else cpu; ConfigError for cuda without CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto: torch sees no CUDA device here")
    return torch.device(name)


def build_method(cfg: RunConfig, name: str, seed: int = 0, density: float | None = None
                 ) -> Assimilator:
    """The registered method ``name`` with the run's settings for it (``--set``), at
    ``density`` its tuned settings too (``cfg.tuned``, bench/tuned.py), and ``seed``.

    Raises ConfigError naming ``method_settings.<name>.<field>`` (or ``tuned.<name>.<density>.
    <field>``) when a field does not exist, its value has the wrong type, or the method
    refuses it.
    """
    if name not in METHODS:
        raise ConfigError("methods", name, f"a registered method: {', '.join(METHODS)} "
                                           "(unknown method; see `python -m bench methods`)")
    cls = get_method(name)
    sources = {f"method_settings.{name}": cfg.method_settings.get(name, {})}
    tuned = None if density is None else settings_at(cfg.tuned, name, density)
    if tuned is not None:
        sources[f"tuned.{name}.{density_key(density)}"] = tuned
    fields = {f.name for f in dataclasses.fields(cls)} - {"seed"}
    settings = {}
    for prefix, given in sources.items():
        for field, value in given.items():
            where = f"{prefix}.{field}"
            if field not in fields:
                raise ConfigError(where, value, f"a field of {cls.__name__}: "
                                                f"{', '.join(sorted(fields))}")
            settings[field] = check_method_setting(cls, where, field, value)
    try:
        return cls(seed=seed, **settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(next(reversed(sources)), settings, str(err)) from None


# ----------------------------------------------------------------------------- the shared part
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
    #: wall time and peak memory of each setup stage (world, forecast model, first background):
    #: {name: bench/peak_memory.Stage}, for log.txt
    stages: dict = dataclasses.field(default_factory=dict)


def load_model(cfg: RunConfig, world, device: torch.device, progress: bool):
    """The forecast model and a key identifying its weights (for caches of samples/methods)."""
    if cfg.forecast.kind == "fengwu":
        from bench.forecast.fengwu import FengWu

        f = cfg.forecast
        # onnxruntime's CPU threads follow --threads, as torch's do (on CUDA they only feed
        # the graph's few CPU nodes)
        model = FengWu(world.spec, f.fengwu_onnx, f.fengwu_mean, f.fengwu_std, device=device,
                       intra_op_threads=cfg.threads)
        stat = Path(f.fengwu_onnx).stat()
        key = cache.config_hash({"onnx": str(Path(f.fengwu_onnx).resolve()),
                                 "size": stat.st_size, "mtime": stat.st_mtime_ns})
        return model, f"fengwu-{key}"
    from bench.forecast.emulator import EmulatorConfig
    from bench.forecast.emulator_train import emulator_entry, load_or_train

    emulator_cfg = EmulatorConfig()
    if cfg.forecast.emulator_steps is not None:
        emulator_cfg = dataclasses.replace(emulator_cfg, steps=cfg.forecast.emulator_steps)
    world = emulator_world(cfg, world)
    model, _ = load_or_train(world, emulator_cfg, device=device, progress=progress)
    return model, emulator_entry(world, emulator_cfg).name


def emulator_world(cfg: RunConfig, world):
    """The world the emulator learns from: ``world`` itself, or with its training period
    replaced by ``--emulator-train-period`` (one forecast model for runs whose methods learn
    from different periods; its cache key names that period). Reads only the card."""
    period = cfg.forecast.emulator_train_period
    if period is None or period == world.period_text("train"):
        return world
    from bench.worlds import load_world

    options = {"path": cfg.era5_path} if cfg.era5_path else {}
    try:
        return load_world(cfg.world, **options, periods={**cfg.periods.given(), "train": period})
    except ConfigError as err:
        raise ConfigError("forecast.emulator_train_period", period, err.expected) from None


def climatology(world, frames: int = CLIMATOLOGY_FRAMES) -> torch.Tensor:
    """Training-period mean (C, H, W) float32, normalised, over at most ``frames`` evenly spaced
    times: a float64 sum over chunks of frames (bench/worlds/streaming.py), so memory is one
    chunk, not ``frames`` frames (128 frames at 0.25° are 37 GB, with float64 copies ~180 GB)."""
    from bench.worlds.streaming import mean_frame

    train = world.period("train")
    n = train.sizes["time"]
    idx = np.unique(np.linspace(0, n - 1, min(n, frames)).round().astype(int))
    return mean_frame(train, world.spec, idx).float()


def open_world(cfg: RunConfig):
    """The run's world (its card read and checked, with the periods of ``cfg``; nothing built
    or read). With FengWu the world normalises with FengWu's own statistics files, so the
    run's normalisation is the model's and no statistics are computed from the store."""
    from bench.worlds import load_world

    options = {"path": cfg.era5_path} if cfg.era5_path else {}
    if cfg.periods.given():
        options["periods"] = cfg.periods.given()
    world = load_world(cfg.world, **options)
    if cfg.forecast.kind == "fengwu":
        world.normalise_with(cfg.forecast.fengwu_mean, cfg.forecast.fengwu_std)
    return world


def resolved_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with what it leaves to the world's card filled in: the periods (``START..END``
    as the card writes them) and the normalisation source, so config.json records them.
    Reads only the card (idempotent)."""
    from bench.periods import PeriodSettings

    world = open_world(cfg)
    periods = PeriodSettings(**{k: world.period_text(k) for k in world.periods})
    return dataclasses.replace(cfg, periods=periods, normalisation=world.normalisation)


def setup(cfg: RunConfig, progress: bool = True) -> Setup:
    """Build (or load from the cache) what every cell of ``cfg`` shares."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    stages, stage = {}, Stage.start()
    world = open_world(cfg)
    print(world.prepare(progress=progress))
    stages["world"], stage = stage.stop(), Stage.start()
    model, key = load_model(cfg, world, device, progress)
    stages["forecast model"], stage = stage.stop(), Stage.start()
    truth = TruthWindow(world.period(cfg.cycle.period), world.spec, device)
    start = first_background(model, truth, cfg.cycle)
    clim = climatology(world).to(device)
    stages["truth window and first background"] = stage.stop()
    return Setup(world, model, key, truth, start, clim, device, stages)


# ----------------------------------------------------------------------------- methods
def samples(s: Setup, kind: str = "nmc", progress: bool = True, **settings) -> torch.Tensor:
    """The world's cached background-error samples (bench/samples.py) for this model."""
    from bench.samples import SampleSettings, load_or_make_samples

    sample_settings = SampleSettings(kind=kind, **settings)
    cycling = None
    if kind == "cycled_background":  # the method that cycles: registered, its defaults
        method = cycling_method(sample_settings.method)
        cycling = (lambda: fit_and_load(s, method, progress),
                   {"method": type(method).__name__, "config": method.cache_config()})
    return load_or_make_samples(s.world, s.model, s.model_key, sample_settings,
                                progress=progress, cycling=cycling)


def cycling_method(name: str) -> Assimilator:
    """The registered method ``name`` with its defaults, to cycle through the training period
    for cycled_background samples; ConfigError unless it is deterministic and 3D (an ensemble's
    members and a 4D window are not what the sample loop hands over)."""
    if name not in METHODS:
        raise ConfigError("cycled_background method", name,
                          f"a registered method: {', '.join(METHODS)}")
    method = get_method(name)()
    if method.members or method.window_hours:
        raise ConfigError("cycled_background method", name,
                          "a deterministic 3D method (no ensemble members, no 4D window)")
    return method


def sample_targets(s: Setup, kind: str = "nmc", **settings) -> torch.Tensor:
    """(N,) long: the training-period frame each of ``samples(s, kind, **settings)`` is the
    truth at (bench/samples_forecast.py ``sample_targets``)."""
    from bench.samples import SampleSettings
    from bench.samples_forecast import sample_targets as targets

    times = s.world.period("train").time.values
    sample_settings = SampleSettings(kind=kind, **settings)
    if kind == "cycled_background":
        from bench.cycled_samples import cycled_targets

        return torch.from_numpy(cycled_targets(times, sample_settings, s.model.history))
    return torch.from_numpy(targets(times, sample_settings, s.model.history))


def training_context(s: Setup, method: Assimilator, progress: bool) -> TrainingContext:
    """What ``method.fit`` may learn from: the training period only (``train_truth``: the
    period's cache file, memory-mapped: bench/training_truth.py)."""
    from bench.training_truth import mapped_period

    world, spec = s.world, s.world.spec
    return TrainingContext(
        spec=spec, model=s.model,
        train_truth=lambda: mapped_period(world, "train"),
        samples=lambda kind="nmc", **kw: samples(s, kind, progress, **kw),
        sample_targets=lambda kind="nmc", **kw: sample_targets(s, kind, **kw),
        device=s.device, seed=method.seed, progress=progress)


def fit_entry(s: Setup, method: Assimilator) -> Path:
    """The cache entry of ``method``'s fitted state on this world and model."""
    return cache.entry_dir("methods", f"{type(method).__name__.lower()}-{s.world.name}", {
        "config": method.cache_config(), "world": cache.config_hash(s.world.card),
        "model": s.model_key})


def fitted_state(s: Setup, method: Assimilator, progress: bool = True, refit: bool = False
                 ) -> dict:
    """``method.fit``'s output, from the cache or fitted now and cached (one atomic write)."""
    if not method.learns:
        return {}

    def build(directory: Path) -> dict:
        start = time.perf_counter()
        state = method.fit(training_context(s, method, progress))
        cache.save_state(state, directory / cache.STATE_FILE)
        return {"method": type(method).__name__, "config": method.cache_config(),
                "world": s.world.name, "model": s.model_key,
                "fit_seconds": round(time.perf_counter() - start, 1)}

    return cache.load_or_build(fit_entry(s, method), build,
                               lambda entry, _: cache.load_state(entry / cache.STATE_FILE),
                               rebuild=refit)


def fit_and_load(s: Setup, method: Assimilator, progress: bool = True, refit: bool = False
                 ) -> Analyser:
    """The method ready to analyse on the run's device."""
    return method.load(fitted_state(s, method, progress, refit), s.world.spec, s.device)


# ----------------------------------------------------------------------------- ensembles
def ensemble_perturbations(s: Setup, cfg: RunConfig, seed: int, members: int,
                           progress: bool = True) -> torch.Tensor:
    """ε (members, C, H, W): the run's initial ensemble perturbations (``initial_ensemble``)."""
    pool = samples(s, "nmc", progress)
    if members > pool.shape[0]:
        raise ConfigError("members", members, f"at most the {pool.shape[0]} training-period NMC "
                                              "samples the initial ensemble is drawn from")
    order = np.random.default_rng([seed, int.from_bytes(b"ensemble", "little")]).permutation(
        pool.shape[0])[:members]
    eps = pool[torch.as_tensor(order)].to(s.start.history)
    return cfg.ensemble.perturbation_scale * (eps - eps.mean(dim=0, keepdim=True))


def initial_ensemble(s: Setup, cfg: RunConfig, seed: int, members: int,
                     progress: bool = True) -> FirstBackground:
    """The shared first background with ``members`` perturbed members (DESIGN.md §4).

    Member i's frames: the first background's history + ε_i on every frame, with
    ε_i = scale · (s_{j_i} − mean_i s_{j_i}), s_j the training-period NMC samples drawn without
    replacement in the order of a permutation seeded by (seed, "ensemble") — so two ensemble
    methods of a run with N and M ≥ N members share their first N draws — centred so that the
    ensemble mean is the shared first background.
    """
    eps = ensemble_perturbations(s, cfg, seed, members, progress)
    return dataclasses.replace(s.start, members=s.start.history[None] + eps[:, None])
