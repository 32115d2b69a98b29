"""Every knob of a run, as frozen dataclasses. The resolved RunConfig is saved as config.json
beside the results, and each CLI flag of ``python -m bench run`` maps to one field here.
"""

from __future__ import annotations

import dataclasses
import json
import math

#: CycleSettings.history_update choices
HISTORY_UPDATES = ("increment", "replace")


@dataclasses.dataclass(frozen=True)
class ForecastSettings:
    """Which forecast model cycles the states.

    Attributes:
        kind: "emulator" (the built-in model, trained on the world) or "fengwu" (ONNX release).
        fengwu_onnx, fengwu_mean, fengwu_std: the release's files (kind "fengwu" only).
        emulator_steps: optimiser steps of the emulator (None: its default).
    """

    kind: str = "emulator"
    fengwu_onnx: str | None = None
    fengwu_mean: str | None = None
    fengwu_std: str | None = None
    emulator_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class CycleSettings:
    """The cycling protocol (DESIGN.md §4).

    Attributes:
        days: length of the cycled window; 4 six-hourly cycles a day.
        first_lead_hours: lead of the time-lagged first background (forecast from truth).
        start: valid time of the first analysis (ISO); None = the test period's start plus
            ``first_lead_hours`` and one frame (the model's two input frames must lie inside it).
        spinup_cycles: cycles left out of the skill tables (mean ± 1σ over the rest).
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

    days: float = 15.0
    first_lead_hours: int = 48
    start: str | None = None
    spinup_cycles: int = 8
    divergence_factor: float = 3.0
    forecast_every: int = 0
    forecast_hours: int = 120
    history_update: str = "increment"

    @property
    def cycles(self) -> int:
        return int(round(self.days * 4))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A grid of (method, density, seed) cells sharing one world, model and protocol.

    Attributes:
        world: dataset card name.
        era5_path: store of the era5-wb2 world (None: environment or card).
        forecast: the forecast model.
        methods: registered method names.
        densities: observation densities, fractions of grid points in (0, 1].
        seeds: run seeds (observations, stochastic methods).
        obs_sampling: "columns" or "elements".
        obs_noise: observation error std as a fraction of each channel's climatological std
            (0 = the noise-free protocol).
        obs_redraw: new observation locations every cycle (False: fixed network).
        cycle: the cycling protocol.
        device: "auto", "cpu" or "cuda".
        threads: torch threads on CPU.
        method_settings: non-default hyper-parameters per method, {method: {field: value}}
            (``--set vaevar.lam=40000``); every cell of that method uses them.
    """

    world: str = "heldsuarez-5.625"
    era5_path: str | None = None
    forecast: ForecastSettings = ForecastSettings()
    methods: tuple[str, ...] = ("none",)
    densities: tuple[float, ...] = (0.01,)
    seeds: tuple[int, ...] = (0,)
    obs_sampling: str = "columns"
    obs_noise: float = 0.01
    obs_redraw: bool = True
    cycle: CycleSettings = CycleSettings()
    device: str = "auto"
    threads: int = 2
    method_settings: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError with the offending value and the fix for any bad setting."""
        if not self.methods:
            raise ValueError("--methods is empty; give at least one method, e.g. --methods none")
        for d in self.densities:
            if not (isinstance(d, float | int) and math.isfinite(d) and 0 < d <= 1):
                raise ValueError(
                    f"density {d!r} is outside (0, 1]: it is the fraction of grid points "
                    f"observed, e.g. --density 0.01,0.05")
        if len(set(self.densities)) != len(self.densities):
            raise ValueError(f"--density has duplicates: {self.densities}")
        if self.cycle.days <= 0 or self.cycle.cycles < 1:
            raise ValueError(f"--days {self.cycle.days} gives no cycle; use --days 1 or more")
        if self.cycle.first_lead_hours < 6 or self.cycle.first_lead_hours % 6:
            raise ValueError(
                f"--first-lead {self.cycle.first_lead_hours} must be a positive multiple of 6 h")
        if self.cycle.history_update not in HISTORY_UPDATES:
            raise ValueError(f"--history-update {self.cycle.history_update!r} must be one of "
                             f"{', '.join(HISTORY_UPDATES)}")
        if self.obs_noise < 0 or not math.isfinite(self.obs_noise):
            raise ValueError(f"--obs-noise {self.obs_noise} must be >= 0 (0 = noise-free)")
        if self.obs_sampling not in ("columns", "elements"):
            raise ValueError(
                f"--obs-sampling {self.obs_sampling!r} must be 'columns' or 'elements'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device {self.device!r} must be auto, cpu or cuda")
        if self.forecast.kind not in ("emulator", "fengwu"):
            raise ValueError(f"--model {self.forecast.kind!r} must be emulator or fengwu")
        if self.forecast.kind == "fengwu":
            missing = [flag for flag, value in (
                ("--fengwu-onnx", self.forecast.fengwu_onnx),
                ("--fengwu-mean", self.forecast.fengwu_mean),
                ("--fengwu-std", self.forecast.fengwu_std)) if not value]
            if missing:
                raise ValueError(f"--model fengwu needs {', '.join(missing)}")
        if self.threads < 1:
            raise ValueError(f"--threads {self.threads} must be >= 1")
        for name in self.method_settings:
            if name not in self.methods:
                raise ValueError(f"--set {name}.…: {name!r} is not in --methods "
                                 f"{','.join(self.methods)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["forecast"] = ForecastSettings(**d["forecast"])
        d["cycle"] = CycleSettings(**d["cycle"])
        for key in ("methods", "densities", "seeds"):
            d[key] = tuple(d[key])
        return cls(**d)


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
