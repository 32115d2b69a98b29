"""Every knob of a run, as nested frozen dataclasses; the resolved RunConfig is saved as
config.json beside the results. Each default is written here once: the CLI's flags are
generated from these fields (bench/cli/flags.py).

Errors name the dotted field (``cycle.days``), the value and what was expected
(``ConfigError``, bench/validation.py); only the CLI translates a field into its flag.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing

import numpy as np

from bench.obs_regime import DensityRequest
from bench.periods import PERIOD_EXPECTED, PeriodSettings, is_period
from bench.state import StateSpec
from bench.tuned import check_tuned
from bench.validation import check, check_list, is_int, is_number, nested

#: CycleSettings.history_update choices
HISTORY_UPDATES = ("increment", "replace")
#: CycleSettings.period choices: the periods that may be cycled (never the training period)
CYCLED_PERIODS = ("test", "valid")
#: ObservationSettings.sampling choices
SAMPLING_MODES: tuple[str, ...] = ("columns", "elements")
FORECAST_KINDS = ("emulator", "fengwu")
DEVICES = ("auto", "cpu", "cuda")
#: Hours between the frames of every world and between forecast-model steps.
STEP_HOURS = 6
#: config.json's key of the observed columns and spacing of each density (RunConfig.to_json)
REGIMES_KEY = "observation_regimes"


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class ForecastSettings:
    """Which forecast model cycles the states.

    Attributes:
        kind: "emulator" (the built-in model, trained on the world) or "fengwu" (ONNX release).
        fengwu_onnx, fengwu_mean, fengwu_std: the release's files (kind "fengwu" only).
        emulator_steps: optimiser steps of the emulator (None: its default).
        emulator_train_period: ``START..END`` the emulator learns from (None: the run's training
            period): one forecast model while the methods' training period varies.
    """

    kind: str = "emulator"
    fengwu_onnx: str | None = None
    fengwu_mean: str | None = None
    fengwu_std: str | None = None
    emulator_steps: int | None = None
    emulator_train_period: str | None = None

    def __post_init__(self):
        check("kind", self.kind, self.kind in FORECAST_KINDS, f"one of {', '.join(FORECAST_KINDS)}")
        if self.emulator_steps is not None:
            check("emulator_steps", self.emulator_steps,
                  is_int(self.emulator_steps) and self.emulator_steps >= 1, "an integer >= 1")
        if self.emulator_train_period is not None:
            check("emulator_train_period", self.emulator_train_period,
                  is_period(self.emulator_train_period), PERIOD_EXPECTED)
            check("emulator_train_period", self.emulator_train_period, self.kind == "emulator",
                  "no period: it sets the built-in emulator's, not a release's",
                  {"kind": self.kind})
        if self.kind == "fengwu":
            for name in ("fengwu_onnx", "fengwu_mean", "fengwu_std"):
                check(name, getattr(self, name), bool(getattr(self, name)),
                      "a file of FengWu's release (needed with the fengwu model)",
                      {"kind": self.kind})


@dataclasses.dataclass(frozen=True)
class ObservationSettings:
    """How observations are drawn each cycle (bench/observations.py); recorded with results.

    Attributes:
        density: fraction of grid points observed, in (0, 1]. With ``columns`` the number of
            points is max(1, round(density · H · W)); with ``elements`` the number of observed
            (channel, point) elements is max(1, round(density · C' · H · W)), C' the number of
            observed channels. (An exact count, not a Bernoulli draw per element, so every cycle
            and every seed has the same number of observations.) In a RunConfig each cell sets
            it from ``RunConfig.densities``.
        sampling: "columns" (all observed channels at each chosen point) or "elements" (each
            (channel, point) element chosen independently).
        noise_fraction: observation error std per channel as a fraction of the channel's
            climatological std: σ_o,c = noise_fraction · clim_std_c (physical units), i.e.
            noise_fraction · clim_std_c / spec.std_c normalised. 0 is the noise-free protocol
            (σ_o = 0, nothing added). R matches the noise actually added.
        redraw: new locations every cycle (True) or cycle 0's locations at every cycle (False;
            the noise is still drawn per cycle).
        seed: run seed, a non-negative integer (in a RunConfig each cell sets it).
        channels: names of the observed channels, None for all. The order given does not matter:
            observations are ordered by the spec's channel order.
        window_every_hours: hours between observation times inside a 4D method's window
            (methods/base ObservationWindow): times 0, every, 2·every, … ≤ window_hours after
            the analysis. A multiple of the worlds' 6-hour frames.
    """

    density: float = 0.01
    sampling: str = "columns"
    noise_fraction: float = 0.01
    redraw: bool = True
    seed: int = 0
    channels: tuple[str, ...] | None = None
    window_every_hours: int = 6

    def __post_init__(self):
        check("density", self.density, is_number(self.density) and 0 < self.density <= 1,
              "a fraction of grid points in (0, 1], e.g. 0.01")
        object.__setattr__(self, "density", float(self.density))
        check("sampling", self.sampling, self.sampling in SAMPLING_MODES,
              f"one of {', '.join(SAMPLING_MODES)}")
        check("noise_fraction", self.noise_fraction,
              is_number(self.noise_fraction) and self.noise_fraction >= 0,
              "a finite number >= 0 (0 = noise-free)")
        object.__setattr__(self, "noise_fraction", float(self.noise_fraction))
        check("redraw", self.redraw, isinstance(self.redraw, bool), "true or false")
        check("seed", self.seed, is_int(self.seed) and self.seed >= 0,
              "a non-negative integer")
        object.__setattr__(self, "seed", int(self.seed))
        check("window_every_hours", self.window_every_hours,
              is_int(self.window_every_hours) and self.window_every_hours >= STEP_HOURS
              and self.window_every_hours % STEP_HOURS == 0,
              f"a positive multiple of {STEP_HOURS} h (the worlds' frames are 6-hourly)")
        if self.channels is not None:
            check("channels", self.channels, not isinstance(self.channels, str),
                  "a sequence of channel names, not one string")
            names = tuple(self.channels)
            check("channels", names, bool(names), "at least one channel name (None = all)")
            check("channels", names, len(set(names)) == len(names), "no duplicates")
            object.__setattr__(self, "channels", names)

    def channel_indices(self, spec: StateSpec) -> np.ndarray:
        """Spec indices of the observed channels, ascending, (C',) int64."""
        if self.channels is None:
            return np.arange(len(spec.channels), dtype=np.int64)
        return np.array(sorted(spec.indices(self.channels)), dtype=np.int64)

    def error_std(self, spec: StateSpec, clim_std: np.ndarray | None = None) -> np.ndarray:
        """σ_o per channel, normalised, (C,) float64: noise_fraction · clim_std_c / spec.std_c.

        Args:
            clim_std: (C,) climatological std per channel in physical units, > 0; None uses
                spec.std (then σ_o = noise_fraction for every channel).
        """
        if clim_std is None:
            return np.full(len(spec.channels), self.noise_fraction)
        clim = np.asarray(clim_std, dtype=np.float64)
        if clim.shape != (len(spec.channels),):
            raise ValueError(
                f"clim_std must have one value per channel, shape ({len(spec.channels)},), "
                f"got {clim.shape}")
        if not np.all(np.isfinite(clim) & (clim > 0)):
            raise ValueError("clim_std must be finite and strictly positive")
        return self.noise_fraction * clim / spec.std

    def window_offsets(self, window_hours: int) -> tuple[int, ...]:
        """Observation times (hours after the analysis) of a ``window_hours`` window."""
        return tuple(range(0, int(window_hours) + 1, self.window_every_hours))


@dataclasses.dataclass(frozen=True)
class CycleSettings:
    """The cycling protocol (DESIGN.md §4).

    Attributes:
        period: the world's period that is cycled: "test" (every result) or "valid" (choosing
            a setting — inflation, λ, a mask width — on cycles that never touch the test
            period; the training period is never cycled).
        days: length of the cycled window; 4 six-hourly cycles a day.
        first_lead_hours: lead of the time-lagged first background (forecast from truth).
        start: valid time of the first analysis (ISO); None = the test period's start plus
            ``first_lead_hours`` and one frame (the model's two input frames must lie inside it).
        spinup_cycles: cycles left out of the skill tables (mean ± 1σ over the rest); fewer
            than the run's cycles.
        divergence_factor: a cell is "diverged" when its analysis RMSE, averaged over channels in
            normalised units, exceeds this multiple of the climatology's RMSE (or is NaN/Inf).
        forecast_every: free forecasts from the analysis every N cycles (0 = none).
        forecast_hours: their length.
        history_update: how the analysis enters the forecast model's input frames (FengWu and
            the emulator take two: t − 6 h and t). "increment" adds the analysis increment
            x_a − x_b to every frame, so the model sees the background's own 6-h tendency;
            "replace" puts x_a in the last frame only (the earlier frame stays the previous
            analysis), so the tendency the model sees contains the difference of two
            consecutive increments. Measured on the built-in world (3DVar, 1 % density, 5 days,
            z500 analysis RMSE after spin-up): "increment" 501, "replace" 940, no assimilation
            764 m² s⁻² — the two-frame emulator extrapolates the jump between frames and the
            errors grow cycle after cycle.
    """

    period: str = "test"
    days: float = 15.0
    first_lead_hours: int = 48
    start: str | None = None
    spinup_cycles: int = 8
    divergence_factor: float = 3.0
    forecast_every: int = 0
    forecast_hours: int = 120
    history_update: str = "increment"

    def __post_init__(self):
        check("period", self.period, self.period in CYCLED_PERIODS,
              f"one of {', '.join(CYCLED_PERIODS)} (the training period is never cycled)")
        check("days", self.days, is_number(self.days) and self.days > 0 and self.cycles >= 1,
              "a positive number of days giving at least one 6-hourly cycle (>= 0.25)")
        check("first_lead_hours", self.first_lead_hours,
              is_int(self.first_lead_hours) and self.first_lead_hours >= STEP_HOURS
              and self.first_lead_hours % STEP_HOURS == 0, f"a positive multiple of {STEP_HOURS}")
        check("spinup_cycles", self.spinup_cycles,
              is_int(self.spinup_cycles) and self.spinup_cycles >= 0, "an integer >= 0")
        # Refused here, before anything is built: such a run would cycle to the end and only
        # then find no cycle left for the skill tables.
        check("spinup_cycles", self.spinup_cycles, self.spinup_cycles < self.cycles,
              f"fewer than the run's {self.cycles} cycles, so some are left for the skill "
              f"tables: run at least {self.spinup_cycles / 4 + 0.25:g} days or shorten the "
              "spin-up",
              {"days": self.days})
        check("divergence_factor", self.divergence_factor,
              is_number(self.divergence_factor) and self.divergence_factor > 0, "a number > 0")
        check("forecast_every", self.forecast_every,
              is_int(self.forecast_every) and self.forecast_every >= 0, "an integer >= 0")
        check("forecast_hours", self.forecast_hours,
              is_int(self.forecast_hours) and self.forecast_hours >= STEP_HOURS
              and self.forecast_hours % STEP_HOURS == 0, f"a positive multiple of {STEP_HOURS}")
        check("history_update", self.history_update, self.history_update in HISTORY_UPDATES,
              f"one of {', '.join(HISTORY_UPDATES)}")

    @property
    def cycles(self) -> int:
        return int(round(self.days * 4)) if is_number(self.days) else 0


@dataclasses.dataclass(frozen=True)
class EnsembleSettings:
    """The initial ensemble of ensemble methods (DESIGN.md §4), identical for all of a run's.

    Member i's first history is the shared first background's plus ε_i on every frame, with
    ε_i = scale · (s_{j_i} − mean_i s_{j_i}): training-period NMC samples s_j (bench/samples.py)
    drawn without replacement by a generator seeded by (run seed, "ensemble"), centred so the
    ensemble mean is the shared first background.

    Attributes:
        perturbation_scale: ``scale`` above (1 = the NMC samples' own size).
        forecast_batch: members forecast per model call (None: the model's ``max_batch``).
    """

    perturbation_scale: float = 1.0
    forecast_batch: int | None = None

    def __post_init__(self):
        check("perturbation_scale", self.perturbation_scale,
              is_number(self.perturbation_scale) and self.perturbation_scale >= 0,
              "a finite number >= 0")
        if self.forecast_batch is not None:
            check("forecast_batch", self.forecast_batch,
                  is_int(self.forecast_batch) and self.forecast_batch >= 1, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A grid of (method, density, seed) cells sharing one world, model and protocol.

    Attributes:
        world: dataset card name.
        era5_path: store of the era5-wb2 world (None: environment or card).
        forecast: the forecast model.
        methods: registered method names.
        densities: observation densities, fractions of grid points in (0, 1].
        density_request: the columns or spacings the densities were asked as (``--columns``,
            ``--spacing-km``; empty when they were given as densities).
        seeds: run seeds (observations, stochastic methods, the initial ensemble).
        observations: the observation protocol; each cell sets its density and seed.
        cycle: the cycling protocol.
        ensemble: the initial ensemble of ensemble methods.
        device: "auto", "cpu" or "cuda".
        threads: torch threads on CPU.
        method_settings: non-default hyper-parameters per method, {method: {field: value}}
            (``--set vaevar.lam=40000``); every cell of that method uses them.
        tuned: per-density settings of tuned methods, {method: {density: {field: value}}}
            (bench/tuned.py; ``run --tuned FILE`` from ``python -m bench tune``).
        periods: the world's train / valid / test periods (None each: the card's).
        normalisation: where the world's normalisation statistics come from (file paths, or
            the store's statistics over the training period); not a setting: a run fills it in
            (bench/setup.py ``resolved_config``) so that config.json records it.
    """

    world: str = "heldsuarez-5.625"
    era5_path: str | None = None
    forecast: ForecastSettings = ForecastSettings()
    methods: tuple[str, ...] = ("none",)
    densities: tuple[float, ...] = (0.01,)
    density_request: DensityRequest = DensityRequest()
    seeds: tuple[int, ...] = (0,)
    observations: ObservationSettings = ObservationSettings()
    cycle: CycleSettings = CycleSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    device: str = "auto"
    threads: int = 2
    method_settings: dict = dataclasses.field(default_factory=dict)
    tuned: dict = dataclasses.field(default_factory=dict)
    periods: PeriodSettings = PeriodSettings()
    normalisation: str | None = None

    def __post_init__(self):
        for name in ("methods", "densities", "seeds"):  # None (a flag left out): empty
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        check_list("methods", self.methods, lambda m: isinstance(m, str) and m.strip() != "",
              "method names, e.g. none,interp")
        check_list("densities", self.densities, lambda d: is_number(d) and 0 < d <= 1,
              "fractions of grid points in (0, 1], e.g. 0.01,0.05")
        check_list("seeds", self.seeds, lambda s: is_int(s) and s >= 0,
              "non-negative integers, e.g. 0,1,2")
        asked = self.density_request.columns or self.density_request.spacing_km
        if asked is not None:  # the CLI converts each item into one density
            check("densities", self.densities, len(asked) == len(self.densities),
                  f"one density per item of density_request ({len(asked)})")
        check("device", self.device, self.device in DEVICES, f"one of {', '.join(DEVICES)}")
        check("threads", self.threads, is_int(self.threads) and self.threads >= 1,
              "an integer >= 1")
        check("method_settings", self.method_settings, isinstance(self.method_settings, dict),
              "{method: {field: value}}")
        for name, settings in self.method_settings.items():
            check(f"method_settings.{name}", settings,
                  isinstance(settings, dict) and all(isinstance(k, str) for k in settings),
                  "{field: value}")
            check(f"method_settings.{name}", settings, name in self.methods,
                  f"settings for a method of this run ({', '.join(self.methods)})",
                  {"methods": self.methods})
        check_tuned(self.tuned, self.methods, self.densities, self.method_settings)

    def cell_observations(self, density: float, seed: int) -> ObservationSettings:
        """The observation settings of one cell."""
        return dataclasses.replace(self.observations, density=density, seed=seed)

    # ----------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for per_cell in ("density", "seed"):  # set per cell from densities and seeds
            d["observations"].pop(per_cell)
        if not self.density_request.asked:  # densities typed as such: config.json as before
            d.pop("density_request")
        if not self.tuned:  # no tuned method: config.json as before
            d.pop("tuned")
        return d

    def to_json(self, regimes: list[dict] | None = None) -> str:
        """The config as JSON; ``regimes`` (bench/obs_regime.regimes: per density, its observed
        columns and mean spacing on the world's grid) is added as ``observation_regimes`` for
        the reader: it is derived from the grid, so ``from_dict`` drops it."""
        d = self.to_dict()
        if regimes is not None:
            d[REGIMES_KEY] = regimes
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config of a config.json, including the flat layout of earlier versions (their
        obs_sampling / obs_noise / obs_redraw fields become ``observations``)."""
        d = dict(d)
        d.pop(REGIMES_KEY, None)  # derived from the grid (to_json), not a setting
        obs = dict(d.pop("observations", {}))
        for old, new in (("obs_sampling", "sampling"), ("obs_noise", "noise_fraction"),
                         ("obs_redraw", "redraw")):
            if old in d:
                obs[new] = d.pop(old)
        d["observations"] = obs
        return build(cls, d)


def build(cls: type, values: dict):
    """``cls(**values)``, nested settings given as dicts built first (``{"cycle": {"days":
    2}}``), so an error names the dotted field. An unknown key is an error too: a typo in a
    config.json or a flag table must not be dropped silently. The CLI and ``from_dict`` both
    build configs this way."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        check(key, value, key in names, f"a field of {cls.__name__} ({', '.join(sorted(names))})")
        hint = hints[key]
        if isinstance(value, dict) and dataclasses.is_dataclass(hint):
            value = nested(key, functools.partial(build, hint, value))
        kwargs[key] = value
    return cls(**kwargs)


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} ({va!r} -> {vb!r})")
    return out
