"""Single-observation experiments: the increment a method makes from one observation.

The classic check of a background-error model (e.g. Fisher 2003; Bannister 2008): a single
observation of z500 with a negative innovation should give a negative z bump whose shape is the
column of B, and — where the method is balanced — a cyclonic wind increment around it
(counter-clockwise in the northern hemisphere, clockwise in the southern).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from bench.state import StateSpec
from methods.base import Analyser, Background, Observations, ObservationWindow


def single_observation(spec: StateSpec, x_b: torch.Tensor, channel: str, lat: float, lon: float,
                       innovation: float, error_std: float) -> Observations:
    """One grid-point observation of ``channel`` at the grid point nearest (lat, lon).

    Args:
        spec: the world's StateSpec.
        x_b: (C, H, W) normalised background; y = x_b[channel, i, j] + innovation.
        innovation, error_std: normalised units (a fraction of the channel's std).
    """
    c, h, w = spec.shape
    i = int(np.abs(spec.lat - lat).argmin())
    j = int(np.abs(((spec.lon - lon + 180.0) % 360.0) - 180.0).argmin())  # periodic distance
    k = spec.index(channel)
    dtype = x_b.dtype
    return Observations(
        values=(x_b[k, i, j] + innovation).reshape(1).to(dtype),
        error_std=torch.tensor([error_std], dtype=dtype, device=x_b.device),
        channel=torch.tensor([k], device=x_b.device),
        flat_index=torch.tensor([[i * w + j]], device=x_b.device),
        weights=torch.ones(1, 1, dtype=dtype, device=x_b.device),
        lat=np.array([spec.lat[i]]), lon=np.array([spec.lon[j]]), grid_shape=(c, h, w))


def single_observation_increments(
    method: Analyser,
    spec: StateSpec,
    channel: str = "z500",
    lat: float = 21.0,
    lon: float = 129.0,
    innovation: float = -1.0,
    physical: bool = False,
    error_std: float = 0.1,
    x_b: torch.Tensor | None = None,
    members: torch.Tensor | None = None,
    window_hours: int = 0,
) -> torch.Tensor:
    """x_a − x_b (C, H, W), normalised, for one observation of ``channel`` near (lat, lon).

    Args:
        method: a fitted method's analyser (bench/setup.fit_and_load).
        spec: the world's StateSpec.
        innovation: y − x_b at the observation; normalised units (a multiple of the channel's
            std), or physical units (e.g. −100 m² s⁻² for z500) with ``physical=True``.
        error_std: σ_o of the observation, normalised.
        x_b: (C, H, W) background, normalised; default zeros (the climatological mean). For a
            linear analysis (3DVar) the increment does not depend on it; for non-linear
            methods pass a real background.
        members: (N, history, C, H, W) background members, for an ensemble method.
        window_hours: > 0 for a 4D method: the observation is its window's only one, at the
            analysis time (offset 0), without a model.
    """
    if x_b is None:
        x_b = torch.zeros(spec.shape)
    if physical:
        innovation = innovation / float(spec.std[spec.index(channel)])
    obs = single_observation(spec, x_b, channel, lat, lon, innovation, error_std)
    background = Background(x_b, x_b[None].clone(), np.datetime64("2000-01-01"), 6, 0,
                            members=members)
    given = ObservationWindow(((0, obs),)) if window_hours else obs
    return method.analyse(background, given).x_a - x_b


def figure(increments_by_method: dict[str, torch.Tensor], spec: StateSpec,
           channel: str = "z500", level: int | None = 500,
           obs_location: tuple[float, float] | None = None) -> Figure:
    """One panel per method: the ``channel`` increment (filled contours, physical units) with the
    wind increment at ``level`` hPa (arrows of u, v, m/s) where both exist; None: no arrows.

    Args:
        increments_by_method: {method name: (C, H, W) normalised increment}.
        obs_location: (lat, lon) of the observation, marked with a cross.
    """
    n = len(increments_by_method)
    fig = Figure(figsize=(5.0 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    k = spec.index(channel)
    units = spec.channels[k].units
    lon = np.asarray(spec.lon)
    lat = np.asarray(spec.lat)
    winds = level is not None and f"u{level}" in spec.names and f"v{level}" in spec.names
    for ax, (name, inc) in zip(axes, increments_by_method.items(), strict=True):
        phys = inc.detach().double().cpu().numpy() * np.asarray(spec.std)[:, None, None]
        field = phys[k]
        bound = float(np.abs(field).max()) or 1.0
        filled = ax.contourf(lon, lat, field, levels=np.linspace(-bound, bound, 17),
                             cmap="RdBu_r", extend="both")
        fig.colorbar(filled, ax=ax, label=f"Δ{channel} ({units})", shrink=0.85)
        if winds:
            u, v = phys[spec.index(f"u{level}")], phys[spec.index(f"v{level}")]
            step = max(1, len(lon) // 32)
            ax.quiver(lon[::step], lat[::step], u[::step, ::step], v[::step, ::step],
                      angles="uv", scale_units="inches",
                      scale=max(float(np.hypot(u, v).max()), 1e-12) * 2.0, width=0.004)
            ax.set_title(f"{name}: Δ{channel}, Δwind{level} (max "
                         f"{float(np.hypot(u, v).max()):.2g} m/s)", fontsize=9)
        else:
            ax.set_title(f"{name}: Δ{channel}", fontsize=9)
        if obs_location is not None:
            ax.plot(obs_location[1] % 360.0, obs_location[0], "kx", ms=8)
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
    return fig
