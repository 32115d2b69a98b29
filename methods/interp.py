"""Interpolation baseline: the background corrected by distance-weighted observation increments.

The successive-correction family of objective analysis (Bergthorsson & Döös 1955; Cressman 1959;
Barnes 1964; Bratseth 1986; Daley 1991, ch. 3): starting from the background, each pass
computes the innovations at the observations on the current estimate and spreads them to the
grid with a Gaussian kernel of the great-circle distance,

    w(r) = exp(−r² / (2 L²))  for r < cutoff_scales · L,  0 beyond,

then adds the result. The pass-p kernel scale is L_p = L · pass_shrink^p (Barnes 1973: later
passes fit the smaller scales the first pass smoothed away). Two normalisations of the weights:

- ``"grid"`` (Cressman 1959, Barnes 1964 applied to a background; Daley 1991,
  ch. 3): a weighted mean of the innovations at each grid point, regularised by ε²,
      Δx_g = Σ_i w(r_gi) d_i / (Σ_i w(r_gi) + ε²),
  and Δx_g = 0 where no observation is within the cutoff (Σ_i w = 0 with ε² = 0: no small
  constant is added, the division is skipped). With ε² = 0 (the classic scheme) a lone
  observation shifts every grid point within the cutoff by its full innovation, and the
  increment drops to zero at the cutoff; ε² > 0 tapers it, Δx_g = w d / (w + ε²).
- ``"observations"`` (the default; Bratseth 1986): each observation's kernel is divided by the
  data density *at the observation*, M_i = Σ_j w(r_ij) + ε² (j: observations of the same
  channel, i itself included, so M_i ≥ 1),
      Δx_g = Σ_i w(r_gi) d_i / M_i.
  A lone observation gives Δx_g = w(r_g) d / (1 + ε²), the optimal-interpolation increment for
  a Gaussian background-error correlation and σ_o²/σ_b² = ε²; increments taper smoothly to zero
  away from the data, and many passes with a fixed L converge towards that optimal
  interpolation. With few passes it fits dense data less closely than ``"grid"``.

Only channels with observations change, and each channel is analysed from its own observations
only (no cross-channel balance). The grid's coordinates come from the spec given to ``load``
(nothing is learnt: ``fit`` is the default, empty); observation coordinates from
``Observations.lat`` / ``.lon``; innovations from ``Observations.operator``, so off-grid (K > 1)
observations are handled exactly like grid-point ones.

Cost: the kernel sums run over the (observation, grid point) pairs within the cutoff only,
found by the shared great-circle neighbour search (methods/common/neighbours.py: a haversine
BallTree of the grid, built once in ``load``, queried in chunks of bounded memory), float64;
per pass one search from each group of co-located observations to the grid and, for the
"observations" normalisation, one among the observations. Memory stays bounded at 0.25°
(721 × 1440) too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.state import StateSpec
from methods.base import (
    Analyser,
    Analysis,
    Assimilator,
    Background,
    Kernel,
    MemoryEstimate,
    Observations,
)
from methods.common import neighbours
from methods.common.neighbours import SphereTree, kernel_sums

#: Normalisations of the kernel weights (see the module docstring).
NORMALISATIONS = ("grid", "observations")


@dataclasses.dataclass(frozen=True)
class Interpolation(Assimilator):
    """Successive correction of the background with a Gaussian distance kernel.

    Attributes:
        length_scale_km: L, the kernel's e-folding scale in km (w(L) = e^{-1/2}) on the first
            pass. For scale, the grid spacing is ≈ 111 km per degree: 5.625° (the 32 × 64
            grid) ≈ 625 km at the equator, 2.8125° ≈ 313 km, 0.25° ≈ 28 km; east-west spacing
            shrinks with cos(latitude). L should be at least about the observation spacing,
            otherwise increments are isolated bumps around each observation — and at most the
            background errors' correlation length: an unobserved point receives its
            neighbours' innovations, Δx_g = Σ w (y_i − x_b,i) / Σ w, so where background errors
            decorrelate faster (grid-scale noise) it imports their errors, and cycling with a
            model that does not damp them can amplify them (a white-noise world with
            persistence on an 8 × 16 grid diverged within 2 days at L = 1000 km).
        passes: number of successive-correction passes (≥ 1); each corrects the residual
            innovations of the previous one.
        pass_shrink: the length scale is multiplied by this after each pass (Barnes-style
            refinement), in (0, 1]; 1.0 keeps L fixed.
        cutoff_scales: the kernel is set to zero beyond this many length scales (speed); at 3,
            the weight dropped is w ≤ e^{-4.5} ≈ 0.011.
        smoothing: ε² ≥ 0, the observation-to-background error-variance ratio σ_o²/σ_b² added
            to the weight normalisation. 0 reproduces the classic scheme (fit the
            observations as closely as the kernel allows); larger values trust the
            observations less and smooth more. The same ε² applies to every observation; the
            observations' own ``error_std`` is not used.
        normalisation: "grid" (Cressman 1959: weighted mean of the innovations at each grid
            point) or "observations" (Bratseth 1986: each observation's kernel divided by the
            data density at the observation; a lone observation's increment decays as w(r)).
            See the module docstring. "observations" is the default: in 5-day cycles on the
            built-in world (none/interp at densities 0.01 and 0.05, L = 500 km) "grid" spread
            each sparse innovation at full size out to the cutoff, the emulator amplified the
            resulting jumps, and the cells diverged within 3 days; "observations" improved on
            the background at every density tried.
    """

    length_scale_km: float = 500.0
    passes: int = 3
    pass_shrink: float = 0.5
    cutoff_scales: float = 3.0
    smoothing: float = 0.0
    normalisation: str = "observations"

    #: ``python -m bench tune``'s grid (Assimilator.tuning_grid): L from about the grid spacing
    #: to a third of the sparsest networks' spacing; the best L shrinks as the observations get
    #: denser, so it is chosen per density.
    tuning_grid = {"length_scale_km": (350.0, 500.0, 700.0, 1000.0, 1400.0, 2000.0)}

    def __post_init__(self):
        checks = (
            ("length_scale_km", self.length_scale_km > 0, "a positive distance in km"),
            ("passes", isinstance(self.passes, int) and self.passes >= 1, "an integer ≥ 1"),
            ("pass_shrink", 0 < self.pass_shrink <= 1, "in (0, 1]; 1.0 keeps L fixed"),
            ("cutoff_scales", self.cutoff_scales > 0, "a positive number of length scales"),
            ("smoothing", self.smoothing >= 0, "≥ 0 (0 = classic successive correction)"),
            ("normalisation", self.normalisation in NORMALISATIONS, f"one of {NORMALISATIONS}"),
        )
        self.check_fields(checks)

    def load(self, state: dict, spec: StateSpec, device: torch.device | str
             ) -> InterpolationAnalyser:
        """The analyser on ``spec``'s grid (nothing is learnt: ``state`` is empty)."""
        return InterpolationAnalyser(self, spec, device)

    def memory_estimate(self, spec: StateSpec, n_obs: int, members: int = 0) -> MemoryEstimate:
        """Model: the grid's SphereTree (neighbours.TREE_BYTES_PER_POINT per grid point).
        Analysis: 8 float64 states (the estimate, the increment, the kernel sums) + one chunk
        of neighbour pairs (neighbours.chunk_bytes(): MAX_PAIRS × PAIR_BYTES)."""
        c, h, w = spec.shape
        f64 = 8.0 * c * h * w
        return MemoryEstimate(float(neighbours.TREE_BYTES_PER_POINT * h * w),
                              8 * f64 + neighbours.chunk_bytes())


class InterpolationAnalyser(Analyser):
    """Interpolation on one grid: the method's settings and the grid's neighbour tree.

    Attributes:
        method: the Interpolation (hyper-parameters).
        shape: (H, W) of the grid.
        grid: SphereTree of the grid points, flattened lat-major (as ``flat_index``).
        device: where the analysis runs.
    """

    def __init__(self, method: Interpolation, spec: StateSpec, device: torch.device | str):
        self.method = method
        self.device = torch.device(device)
        lat = np.asarray(spec.lat, dtype=np.float64)
        lon = np.asarray(spec.lon, dtype=np.float64)
        self.shape = (lat.size, lon.size)
        self.grid = SphereTree(np.repeat(lat, lon.size), np.tile(lon, lat.size))

    def analyse(self, background: Background, obs: Observations) -> Analysis:
        """x_a = x_b + the increments of ``passes`` successive-correction passes.

        Notation (code → symbol):
            x_b, x      background x_b; current estimate x⁽ᵖ⁾ (x⁽⁰⁾ = x_b)
            obs.values  y_i;  obs.operator(x) = H(x)_i
            d           innovations d_i = y_i − H(x⁽ᵖ⁾)_i on the current estimate
            length      L_p = L · pass_shrink^p;  cutoff = cutoff_scales · L_p
            w           w(r) = exp(−r²/(2 L_p²)) for r < cutoff, else 0; r great-circle km
            eps2        ε² (``smoothing``)
            density     M_i = Σ_j w(r_ij) + ε²  (j: observations of the same channel;
                        "observations" normalisation only)
            increment   Δx_g, so x⁽ᵖ⁺¹⁾ = x⁽ᵖ⁾ + Δx

        Returns:
            Analysis: x_a (C, H, W), same dtype and device as ``background.x_b``,
            deterministic; diagnostics ``evaluations`` and ``iterations`` (passes),
            ``rms_innovation`` before and ``rms_residual`` after (normalised units).
        """
        m = self.method
        x_b = background.x_b
        self._check(x_b)
        x = x_b.to(self.device).clone()
        if len(obs) == 0:
            return Analysis(x.to(x_b.device), diagnostics={
                "evaluations": 0.0, "iterations": 0.0, "rms_innovation": 0.0,
                "rms_residual": 0.0})
        obs = obs.to(self.device)
        n_channels, n_points = x.shape[0], x.shape[1] * x.shape[2]
        groups = [(channels, index, SphereTree(*self._locations(obs, index)))
                  for channels, index in obs.channels_by_location()]
        eps2 = float(m.smoothing)

        rms_innovation = None
        for p in range(m.passes):
            length = m.length_scale_km * m.pass_shrink**p  # L_p
            cutoff = m.cutoff_scales * length
            d = (obs.values - obs.operator(x)).to(torch.float64)  # d_i = y_i − H(x⁽ᵖ⁾)_i
            if rms_innovation is None:
                rms_innovation = float(d.square().mean().sqrt())
            increment = torch.zeros(n_channels, n_points, dtype=torch.float64, device=x.device)
            for channels, index, points in groups:
                # d for the group's channels, one column each: (n, len(channels))
                d_k = d[torch.as_tensor(index, device=x.device)]
                src = (points.lat, points.lon)
                ones = torch.ones(len(index), 1, dtype=torch.float64, device=x.device)
                if m.normalisation == "observations":
                    density = kernel_sums(*src, ones, None, None, length, cutoff,
                                          dst_tree=points) + eps2  # M_i
                    # Δx_g = Σ_i w(r_gi) d_i / M_i
                    increment[channels] = kernel_sums(*src, d_k / density, None, None, length,
                                                      cutoff, dst_tree=self.grid).T
                else:
                    # Δx_g = Σ_i w(r_gi) d_i / (Σ_i w(r_gi) + ε²); 0 where no weight and ε² = 0
                    sums = kernel_sums(*src, torch.cat([d_k, ones], dim=1), None, None, length,
                                       cutoff, dst_tree=self.grid)
                    numerator, denominator = sums[:, :-1], sums[:, -1:] + eps2
                    covered = denominator > 0
                    increment[channels] = torch.where(
                        covered, numerator / torch.where(covered, denominator, 1.0), 0.0).T
            x = x + increment.reshape(x.shape).to(x.dtype)  # x⁽ᵖ⁺¹⁾ = x⁽ᵖ⁾ + Δx

        residual = (obs.values - obs.operator(x)).to(torch.float64)
        return Analysis(x.to(x_b.device), diagnostics={
            "evaluations": float(m.passes), "iterations": float(m.passes),
            "rms_innovation": rms_innovation,
            "rms_residual": float(residual.square().mean().sqrt()),
        })

    def dominant_kernel(self, background: Background, obs: Observations) -> Kernel:
        """The first pass's kernel sums from the observations to the grid (the largest
        cutoff: the most pairs), with the innovations as coefficients.

        Bytes (unit "B"; the sums are sparse, so no FLOP count applies): per neighbour pair
        six 8-byte numbers (source and destination index, distance, weight, sort order and
        its inverse) and one row of k float64 coefficients, k the channels of a group."""
        m = self.method
        self._check(background.x_b)
        obs = obs.to(self.device)
        x_b = background.x_b.to(self.device)
        d = (obs.values - obs.operator(x_b)).to(torch.float64)
        groups = obs.channels_by_location() if len(obs) else []
        cutoff = m.cutoff_scales * m.length_scale_km
        work, calls = 0.0, []
        for _, index in groups:
            lat, lon = self._locations(obs, index)
            coeff = d[torch.as_tensor(index, device=self.device)]
            pairs = sum(int((p.distance_km < cutoff).sum()) for p in neighbours.pairs_within(
                lat, lon, None, None, cutoff, dst_tree=self.grid))
            work += pairs * 8.0 * (6 + coeff.shape[1])
            calls.append((lat, lon, coeff))

        def sums():
            return [kernel_sums(lat, lon, coeff, None, None, m.length_scale_km, cutoff,
                                dst_tree=self.grid) for lat, lon, coeff in calls]

        return Kernel("kernel sums, observations → grid (pass 1)", sums, "B", "float64",
                      work=max(work, 1.0))

    @staticmethod
    def _locations(obs: Observations, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) in degrees of a group's observation points (its first channel's)."""
        points = index[:, 0]
        return (np.asarray(obs.lat, dtype=np.float64)[points],
                np.asarray(obs.lon, dtype=np.float64)[points])

    def _check(self, x_b: torch.Tensor) -> None:
        h, w = self.shape
        if x_b.ndim != 3 or tuple(x_b.shape[-2:]) != (h, w):
            raise ValueError(
                f"x_b has shape {tuple(x_b.shape)} but the analyser was loaded for a {h} × {w} "
                f"grid; expected (C, {h}, {w}) — load it with this world's spec")
