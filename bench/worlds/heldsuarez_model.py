"""The dynamical model behind the built-in world: dinosaur's sigma-coordinate primitive equations
with Held & Suarez (1994) forcing and a moisture-like tracer, and the diagnostics that turn its
spectral state into FengWu's 69 channels on an output grid.

Physics (all standard Held–Suarez except the tracer):
    dynamics   dry hydrostatic primitive equations on σ levels, flat planet, perpetual equinox;
    forcing    Newtonian relaxation of T to T_eq(φ, p) and Rayleigh drag below σ_b = 0.7;
    tracer q   advected by the flow (dinosaur's tracer advection) with two sources/sinks,
               evaluated at the nodes of the model grid:
                   ∂q/∂t ⊃ r(σ) (h₀ q_sat(T, p) − q) / τ_bl     boundary-layer moistening,
                                                                r(σ) = max(0, (σ − σ_b)/(1 − σ_b))
                   ∂q/∂t ⊃ −max(q − q_sat(T, p), 0) / τ_c      condensation above saturation
               with q_sat = ε e_s / (p − (1 − ε) e_s) and Bolton's (1980)
               e_s(T) = 611.2 Pa · exp(17.67 (T − 273.15) / (T − 29.65)). The tracer is passive:
               it does not feed back on the dynamics (no latent heating, no virtual temperature).
Diagnostics on the output grid (evaluated exactly from the spectral state):
    u, v, t, q, z on pressure levels  linear interpolation in σ between model levels; below the
                   lowest (above the highest) model level, linear extrapolation from the last two
                   levels (dinosaur's default interpolator returns NaN there);
    z              hydrostatic geopotential on σ levels from T (surface geopotential 0);
    msl            surface pressure (the planet is flat, so the surface is at sea level);
    t2m            lowest-level temperature brought to the surface dry-adiabatically,
                   T_L σ_L^(−κ);
    u10, v10       lowest-level wind times ``surface_wind_factor`` (0.8 by default), a fixed
                   surface-layer reduction standing in for a log-law profile.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import (
    coordinate_systems,
    held_suarez,
    primitive_equations,
    primitive_equations_states,
    scales,
    sigma_coordinates,
    spherical_harmonic,
    time_integration,
    vertical_interpolation,
    xarray_utils,
)

from bench.state import FENGWU_LEVELS, SURFACE_VARIABLES, UPPER_AIR_VARIABLES

units = scales.units
HUMIDITY = "specific_humidity"
EPSILON = 0.622  # R_dry / R_vapour


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Settings of the dynamical model (everything that changes the trajectory).

    Attributes:
        truncation: triangular truncation of the dynamics, T21/T31/T42 (dealiased Gaussian grid).
        sigma_levels: number of equidistant σ layers.
        dt_minutes: time step in minutes; must divide 6 h.
        seed: seeds the initial surface-pressure perturbation that breaks zonal symmetry.
        perturbation_hpa: amplitude of that perturbation (hPa).
        filter_tau, filter_order, filter_cutoff: exponential spectral filter applied every step.
        boundary_layer_humidity: h₀, the relative humidity the boundary layer is relaxed to.
        boundary_layer_hours: τ_bl, the relaxation time at the surface (hours).
        condensation_hours: τ_c, the time scale removing supersaturation (hours).
        surface_wind_factor: u10 = factor · u at the lowest σ level.
    """

    truncation: int = 31
    sigma_levels: int = 12
    dt_minutes: int = 30
    seed: int = 0
    perturbation_hpa: float = 10.0
    filter_tau: float = 0.0087504
    filter_order: float = 1.5
    filter_cutoff: float = 0.8
    boundary_layer_humidity: float = 0.8
    boundary_layer_hours: float = 24.0
    condensation_hours: float = 2.0
    surface_wind_factor: float = 0.8

    def __post_init__(self):
        if self.truncation not in (21, 31, 42):
            raise ValueError(f"truncation must be 21, 31 or 42, got {self.truncation}")
        if (6 * 60) % self.dt_minutes:
            raise ValueError(f"dt_minutes={self.dt_minutes} must divide 6 h (360 minutes)")


def saturation_specific_humidity(temperature_k, pressure_pa):
    """q_sat (kg/kg) from T (K) and p (Pa), Bolton (1980); capped at 1 where e_s approaches p."""
    e_s = 611.2 * jnp.exp(17.67 * (temperature_k - 273.15) / (temperature_k - 29.65))
    denominator = jnp.maximum(pressure_pa - (1 - EPSILON) * e_s, EPSILON * e_s)
    return EPSILON * e_s / denominator


class MoistHeldSuarezForcing(time_integration.ExplicitODE):
    """Held–Suarez forcing plus the tracer's sources and sinks (module docstring).

    dinosaur's ``HeldSuarezForcingSigma`` returns a tendency without tracers, which cannot be
    composed with a state that carries one; this wrapper adds the tracer tendency.
    """

    def __init__(self, coords, physics_specs, reference_temperature, settings: ModelSettings):
        self.coords = coords
        self.specs = physics_specs
        self.held_suarez = held_suarez.HeldSuarezForcingSigma(
            coords=coords, physics_specs=physics_specs,
            reference_temperature=reference_temperature,
        )
        self.reference_temperature = reference_temperature
        sigma = coords.vertical.centers
        self.ramp = np.maximum(0.0, (sigma - 0.7) / 0.3)[:, None, None]
        self.kelvin = float(physics_specs.dimensionalize(1.0, units.degK).magnitude)
        self.pascal = float(physics_specs.dimensionalize(1.0, units.pascal).magnitude)
        self.rate_bl = float(physics_specs.nondimensionalize(
            1.0 / (settings.boundary_layer_hours * units.hour)))
        self.rate_c = float(physics_specs.nondimensionalize(
            1.0 / (settings.condensation_hours * units.hour)))
        self.h0 = settings.boundary_layer_humidity

    def explicit_terms(self, state):
        dry = dataclasses.replace(state, tracers={})
        tendency = self.held_suarez.explicit_terms(dry)
        grid = self.coords.horizontal
        temperature = grid.to_nodal(state.temperature_variation) + \
            self.reference_temperature[:, None, None]
        surface_pressure = jnp.exp(grid.to_nodal(state.log_surface_pressure))
        pressure = self.coords.vertical.centers[:, None, None] * surface_pressure
        q = grid.to_nodal(state.tracers[HUMIDITY])
        q_sat = saturation_specific_humidity(temperature * self.kelvin, pressure * self.pascal)
        dq = self.rate_bl * self.ramp * (self.h0 * q_sat - q) \
            - self.rate_c * jnp.maximum(q - q_sat, 0.0)
        return dataclasses.replace(
            tendency, tracers={HUMIDITY: grid.to_modal(dq)}, sim_time=state.sim_time and 1.0
        )


@dataclasses.dataclass
class HeldSuarezModel:
    """The assembled model: a jitted 6-hour chunk function and the diagnostics.

    Attributes:
        settings: the ModelSettings.
        output_grid: dinosaur Grid on which the diagnostics are evaluated (32×64 Gaussian).
    """

    settings: ModelSettings
    output_latitudes: int = 32
    output_longitudes: int = 64

    def __post_init__(self):
        s = self.settings
        self.specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
        model_grid = spherical_harmonic.Grid.construct(
            max_wavenumber=s.truncation,
            gaussian_nodes={21: 16, 31: 24, 42: 32}[s.truncation],
            radius=self.specs.radius,
        )
        sigma = sigma_coordinates.SigmaCoordinates.equidistant(s.sigma_levels)
        self.coords = coordinate_systems.CoordinateSystem(model_grid, sigma)
        # The output grid shares the model's wavenumbers, so evaluating on it is exact.
        self.output_grid = spherical_harmonic.Grid(
            longitude_wavenumbers=model_grid.longitude_wavenumbers,
            total_wavenumbers=model_grid.total_wavenumbers,
            longitude_nodes=self.output_longitudes,
            latitude_nodes=self.output_latitudes,
            latitude_spacing="gauss",
            radius=self.specs.radius,
        )
        initial_state_fn, aux = primitive_equations_states.isothermal_rest_atmosphere(
            self.coords, self.specs, p0=1e5 * units.pascal,
            p1=s.perturbation_hpa * 100 * units.pascal,
        )
        self._initial_state_fn = initial_state_fn
        self.reference_temperature = aux[xarray_utils.REF_TEMP_KEY]
        orography = primitive_equations.truncated_modal_orography(
            aux[xarray_utils.OROGRAPHY], self.coords)
        dynamics = primitive_equations.PrimitiveEquationsSigma(
            self.reference_temperature, orography, self.coords, self.specs)
        forcing = MoistHeldSuarezForcing(
            self.coords, self.specs, self.reference_temperature, s)
        equation = time_integration.compose_equations([dynamics, forcing])
        dt = self.specs.nondimensionalize(s.dt_minutes * units.minute)
        step = time_integration.imex_rk_sil3(equation, dt)
        step_filter = time_integration.exponential_step_filter(
            model_grid, dt, tau=s.filter_tau, order=s.filter_order, cutoff=s.filter_cutoff)
        self._step = time_integration.step_with_filters(step, [step_filter])
        self.steps_per_frame = 360 // s.dt_minutes
        self._chunks: dict[int, callable] = {}

    # --------------------------------------------------------------------------- time stepping
    def initial_state(self):
        """Isothermal rest atmosphere with a seeded surface-pressure bump and q = 0."""
        state = self._initial_state_fn(rng_key=jax.random.PRNGKey(self.settings.seed))
        zeros = jnp.zeros_like(state.temperature_variation)
        return dataclasses.replace(state, tracers={HUMIDITY: zeros})

    def run_chunk(self, state, frames: int):
        """Advance ``frames`` × 6 h. Returns (final state, channels (frames, 69, H, W) float32)."""
        if frames not in self._chunks:
            self._chunks[frames] = jax.jit(time_integration.trajectory_from_step(
                self._step, outer_steps=frames, inner_steps=self.steps_per_frame,
                post_process_fn=self.diagnose,
            ))
        return self._chunks[frames](state)

    # --------------------------------------------------------------------------- diagnostics
    def latitudes(self) -> np.ndarray:
        """Output latitudes in degrees, north -> south."""
        return np.rad2deg(self.output_grid.latitudes)[::-1]

    def longitudes(self) -> np.ndarray:
        return np.rad2deg(self.output_grid.longitudes)

    def diagnose(self, state):
        """Spectral state -> FengWu's 69 channels in SI units, (69, lat N->S, lon), float32."""
        grid, specs = self.output_grid, self.specs
        sigma = self.coords.vertical
        u, v = spherical_harmonic.vor_div_to_uv_nodal(grid, state.vorticity, state.divergence)
        t = grid.to_nodal(state.temperature_variation) + self.reference_temperature[:, None, None]
        q = grid.to_nodal(state.tracers[HUMIDITY])
        ps = jnp.exp(grid.to_nodal(state.log_surface_pressure))  # (1, lon, lat), nondim.
        z = primitive_equations.get_geopotential_on_sigma(
            t, nodal_orography=jnp.zeros(grid.nodal_shape), sigma=sigma,
            gravity_acceleration=specs.g, ideal_gas_constant=specs.R,
        )
        levels_nondim = np.array([
            specs.nondimensionalize(p * units.hPa) for p in FENGWU_LEVELS])
        on_pressure = vertical_interpolation.interp_sigma_to_pressure(
            {"z": z, "q": q, "u": u, "v": v, "t": t},
            vertical_interpolation.PressureCoordinates(levels_nondim),
            sigma, ps,
            interpolate_fn=vertical_interpolation.vectorize_vertical_interpolation(
                vertical_interpolation.linear_interp_with_linear_extrap),
        )
        si = {
            "z": self._si(units.m**2 / units.s**2), "q": 1.0,
            "u": self._si(units.m / units.s), "v": self._si(units.m / units.s),
            "t": self._si(units.degK),
        }
        wind = self.settings.surface_wind_factor * self._si(units.m / units.s)
        surface = {
            "u10": wind * u[-1],
            "v10": wind * v[-1],
            "t2m": self._si(units.degK) * t[-1] * sigma.centers[-1] ** (-specs.kappa),
            "msl": self._si(units.pascal) * ps[0],
        }
        fields = [surface[name] for name in SURFACE_VARIABLES]
        for var in UPPER_AIR_VARIABLES:
            fields.extend(si[var] * on_pressure[var])
        stacked = jnp.stack(fields)  # (69, lon, lat ascending)
        # q is a spectral field: truncation ripples (Gibbs) can dip below zero; q >= 0 physically.
        q_slice = slice(len(SURFACE_VARIABLES) + len(FENGWU_LEVELS),
                        len(SURFACE_VARIABLES) + 2 * len(FENGWU_LEVELS))
        stacked = stacked.at[q_slice].set(jnp.maximum(stacked[q_slice], 0.0))
        return jnp.swapaxes(stacked, 1, 2)[:, ::-1, :].astype(jnp.float32)

    def _si(self, unit) -> float:
        return float(self.specs.dimensionalize(1.0, unit).magnitude)
