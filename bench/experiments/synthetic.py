"""Methods "untrained, for timing": synthetic grids and randomly initialised method internals.

The cost of an analysis depends on the grid, the channels, the observation count and the size
of the networks and statistics, not on their values. ``python -m bench timing`` therefore
builds each method at any grid without a world or a training period:

- the state: ``synthetic_spec(nlat, nlon, n_channels)``; odd nlat gives an ``equiangular`` grid
  with both poles (ERA5/FengWu: 721 × 1440, 1°: 181 × 360), even nlat a Gauss–Legendre grid
  (the built-in world: 32 × 64). Fewer than 69 channels are a subset of FengWu's (see
  ``timing_channels``).
- 3DVar: ``synthetic_statistics`` builds the dict ``statistics.estimate`` returns directly
  (red spectrum, exponential vertical correlation, random balance coefficients), because
  estimating it from samples would cost more than the analysis at 0.25°.
- VAE-Var and DiffDA: the networks of the method's configured size with seeded random weights.
- Other registered methods: ``prepare`` with a context that holds the spec and nothing to learn
  from (enough for ``none`` and ``interp``; a method that needs training data fails clearly).

The random networks are installed with the methods' own ``set_vae`` / ``set_denoisers``, the
calls their ``prepare`` makes after training. All sizes here are bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.forecast.spectral_filter import truncation
from bench.state import FENGWU_CHANNELS, StateSpec
from methods import get_method
from methods.base import Assimilator, TrainingContext
from methods.diffda import DiffDA
from methods.diffda.denoiser import ConditionalDenoiser
from methods.diffda.sampler import make_scheduler
from methods.threedvar import ThreeDVar
from methods.threedvar.b_matrix import layout
from methods.vaevar import VAEVar
from methods.vaevar.method import ANALYSIS_DTYPES
from methods.vaevar.vae import VAE

#: Order in which whole levels join a channel subset: the headline levels first.
LEVEL_PRIORITY = (500, 850, 250, 700, 925, 100, 300, 600, 1000, 200, 400, 150, 50)
#: Order of the variables within a level: winds first, so a partial level keeps a (u, v) pair
#: (3DVar's vector SHT, the most expensive part of U_p, stays in the timing).
LEVEL_VARIABLES = ("u", "v", "z", "t", "q")
#: Where to stop: FengWu's layout.
MAX_CHANNELS = len(FENGWU_CHANNELS)


# ----------------------------------------------------------------------------- the state
def timing_channels(n: int) -> tuple[str, ...]:
    """``n`` of FengWu's channels, in FengWu's order.

    The subset is the 4 surface channels (u10, v10, t2m, msl, in that order), then whole levels
    in ``LEVEL_PRIORITY`` order, each level's variables in ``LEVEL_VARIABLES`` order; the last
    level may be partial. n = 69 is FengWu's layout; n = 9 is the surface plus u, v, z, t, q at
    500 hPa; n = 8 drops q500.
    """
    if not 1 <= n <= MAX_CHANNELS:
        raise ValueError(f"channels {n} is outside 1..{MAX_CHANNELS}")
    order = ["u10", "v10", "t2m", "msl"]
    order += [f"{v}{lev}" for lev in LEVEL_PRIORITY for v in LEVEL_VARIABLES]
    chosen = set(order[:n])
    return tuple(name for name in FENGWU_CHANNELS if name in chosen)


def grid_coordinates(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(lat (H,) north→south, lon (W,) from 0, grid type), degrees.

    Odd nlat: equiangular with both poles (lat = 90 … −90), as ERA5 (721) and 1° (181) grids.
    Even nlat: Gauss–Legendre nodes, as the built-in 32 × 64 world (exact SHT round trips).
    """
    if nlat < 2 or nlon < 4:
        raise ValueError(f"grid {nlat}x{nlon} is too small: need at least 2 x 4")
    lon = np.arange(nlon) * 360.0 / nlon
    if nlat % 2:
        return np.linspace(90.0, -90.0, nlat), lon, "equiangular"
    nodes, _ = np.polynomial.legendre.leggauss(nlat)
    return np.degrees(np.arcsin(-nodes)), lon, "legendre-gauss"


def synthetic_spec(nlat: int, nlon: int, n_channels: int = MAX_CHANNELS) -> StateSpec:
    """A StateSpec of ``timing_channels(n_channels)`` on an nlat × nlon grid, identity
    normalisation (mean 0, std 1: tensors are already in normalised units)."""
    lat, lon, grid = grid_coordinates(nlat, nlon)
    return StateSpec.create(timing_channels(n_channels), lat, lon, grid)


# ----------------------------------------------------------------------------- 3DVar
def synthetic_statistics(spec: StateSpec, variance_scale: float = 0.25,
                         eof_fraction: float = 0.999, seed: int = 0) -> dict:
    """The dict ``statistics.estimate`` returns, for ``spec``, without samples.

    sigma (K, lmax): σ_l² ∝ (1 + l/3)⁻⁴ for l ≥ 1 (0 at l = 0), unit point variance;
    eofs {group: (n_g, k_g)}: leading eigenvectors of corr(i, j) = exp(−|i − j| / 2) over the
    group's levels explaining ``eof_fraction`` (as estimate() keeps them; 13 levels keep 13);
    std (K, H): √variance_scale; betas {target: (H, n_t, n_p)}: N(0, 0.1²), seeded.
    Same shapes as estimated statistics, so U costs the same.
    """
    groups, _, regressions = layout(spec)
    lmax, _ = truncation(spec.grid, spec.shape[1], spec.shape[2])
    degree = torch.arange(lmax, dtype=torch.float64)
    var_l = (1 + degree / 3.0) ** -4.0 * (degree >= 1)
    var_l = var_l / ((var_l * (2 * degree + 1)).sum() / (4 * math.pi))
    eofs = {}
    for g in groups:
        idx = torch.arange(g.size, dtype=torch.float64)
        corr = torch.exp(-(idx[:, None] - idx[None, :]).abs() / 2)
        lam, vec = torch.linalg.eigh(corr)
        lam, vec = lam.flip(0), vec.flip(1)
        k = min(int((torch.cumsum(lam, 0) / lam.sum() < eof_fraction).sum()) + 1, g.size)
        eofs[g.name] = vec[:, :k].clone()
    n_modes = sum(e.shape[1] for e in eofs.values())
    gen = torch.Generator().manual_seed(seed)
    size = {g.name: g.size for g in groups}
    betas = {t: 0.1 * torch.randn(spec.shape[1], size[t], size[p], generator=gen,
                                  dtype=torch.float64) for t, p in regressions}
    return {"sigma": var_l.sqrt().expand(n_modes, lmax).clone(),
            "std": torch.full((n_modes, spec.shape[1]), math.sqrt(variance_scale),
                              dtype=torch.float64),
            "eofs": eofs, "betas": betas, "explained": {n: eof_fraction for n in eofs}}


def _threedvar(method: ThreeDVar, spec: StateSpec, device: torch.device, seed: int) -> None:
    method.set_statistics(spec, synthetic_statistics(spec, method.variance_scale,
                                                     method.eof_fraction, seed), device)


# ----------------------------------------------------------------------------- networks
def _vaevar(method: VAEVar, spec: StateSpec, device: torch.device, seed: int) -> None:
    """Random VAE of the configured size, installed as prepare() installs a trained one."""
    shape = tuple(int(v) for v in spec.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(shape, method.latent_channels, method.widths, method.downsamplings)
    method.set_vae(vae, torch.full((shape[0],), 0.3), device)


def diffda_denoiser(method: DiffDA, shape: tuple[int, int, int], seed: int = 0
                    ) -> ConditionalDenoiser:
    """A random denoiser of ``method``'s configured size for (C, H, W) states (CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        alphas = make_scheduler().alphas_cumprod if method.skip_parametrisation else None
        return ConditionalDenoiser(shape, method.block_out_channels, method.layers_per_block,
                                   method.lon_pad, alphas_cumprod=alphas)


def _diffda(method: DiffDA, spec: StateSpec, device: torch.device, seed: int) -> None:
    """One random denoiser per lead (only the nearest lead is used by an analysis)."""
    shape = tuple(int(v) for v in spec.shape)
    models = {lead: (diffda_denoiser(method, shape, seed + k), torch.full((shape[0],), 0.3))
              for k, lead in enumerate(method.leads_hours)}
    method.set_denoisers(models, spec.lat, spec.lon, device)


Builder = Callable[[Assimilator, StateSpec, torch.device, int], None]
#: Methods whose prepare() learns something: how to give them random internals instead.
BUILDERS: dict[str, Builder] = {"3dvar": _threedvar, "vaevar": _vaevar, "diffda": _diffda}


def _no_training_data(*args, **kwargs):
    raise RuntimeError("a method built for timing has no training data; add a builder to "
                       "bench/experiments/synthetic.BUILDERS for a method that learns in prepare()")


def untrained(name: str, spec: StateSpec, device: torch.device | str = "cpu",
              seed: int = 0) -> Assimilator:
    """The registered method ``name`` with its default (configured) hyper-parameters, ready to
    ``analyse`` (C, H, W) states of ``spec`` on ``device``, with random internals."""
    cls = get_method(name)
    method = cls()
    device = torch.device(device)
    if name in BUILDERS:
        BUILDERS[name](method, spec, device, seed)
    else:
        ctx = TrainingContext(spec=spec, model=None, train_truth=_no_training_data,
                              samples=_no_training_data, device=device,
                              cache_dir=Path("/nonexistent-timing-cache"), seed=seed,
                              progress=False)
        method.prepare(ctx)
    return method


# ----------------------------------------------------------------------------- memory
def _activation_bytes(module: torch.nn.Module, inputs: tuple, itemsize: int) -> float:
    """Sum of the outputs of every leaf module of one forward pass (bytes at ``itemsize``),
    computed on the meta device (no memory, no arithmetic): an upper bound on what a forward
    pass holds at once, and about what autograd keeps for the backward pass."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for out in output if isinstance(output, tuple | list) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel() * itemsize

    module = copy.deepcopy(module).to("meta")
    handles = [m.register_forward_hook(hook) for m in module.modules()
               if not list(m.children())]
    with torch.no_grad():
        module(*[x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs])
    for h in handles:
        h.remove()
    return float(total)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Rough memory (bytes) of one method at one grid.

    Attributes:
        model: what building the method keeps resident (weights, SHT tables, statistics).
        analysis: what one analysis adds on top (compare with the measured peak).
        base: the states and observations every method gets, and interpreter overhead.
    """

    model: float
    analysis: float
    base: float

    @property
    def total(self) -> float:
        return self.model + self.analysis + self.base


def estimate_memory(name: str, spec: StateSpec, n_obs: int) -> MemoryEstimate:
    """Rough memory of building method ``name`` and one analysis at ``spec`` with ``n_obs``
    observations, to refuse runs that cannot fit; not a measurement.

    Models (f64/f32 = bytes of one (C, H, W) state in float64/float32; multipliers checked
    against CPU measurements at 32 × 64 and 91 × 180 and rounded up):
        none     analysis: 1 f32 (the clone)
        interp   analysis: 8 f64 + the kernel blocks (≤ 2²⁴ entries × 8 temporaries × 8 B)
        3dvar    model: the four SHTs' Legendre tables, 8 B × mmax × lmax × nlat × 6, and
                 the two fused wind tables of legendre.Winds, 8 B × mmax × nlat² × 2;
                 analysis: 24 f64 (the cost's autograd graph) + (2 × history + 6) control
                 vectors w in float64 (L-BFGS memory)
        vaevar   model: decoder weights; analysis: decoder activations × 3 (forward, saved
                 for backward, gradients) at the analysis dtype + 30 latents (L-BFGS memory
                 of 10 pairs) + 8 f64
        diffda   model: the UNets' weights; analysis: the UNet's activations (all of them,
                 as if none were freed) at float32 + 12 f32
    Activations are counted on the meta device (``_activation_bytes``): no memory is used.
    """
    c, h, w = spec.shape
    f32, f64 = 4.0 * c * h * w, 8.0 * c * h * w
    base = 300e6 + 4 * f32  # interpreter and libraries; state, truth and observations
    if name == "none":
        return MemoryEstimate(0.0, f32, base)
    if name == "interp":
        entries = min(2**24, max(1, n_obs // max(c, 1)) * h * w)
        return MemoryEstimate(0.0, 8 * f64 + 8 * 8.0 * entries, base)
    method = get_method(name)()
    if name == "3dvar":
        lmax, mmax = truncation(spec.grid, h, w)
        groups, _, _ = layout(spec)
        n_coef = 2 * lmax * mmax  # upper bound on the real spectral coefficients
        w_bytes = 8.0 * sum(g.size for g in groups) * n_coef
        return MemoryEstimate(8.0 * mmax * lmax * h * 6 + 8.0 * mmax * h * h * 2,
                              24 * f64 + (2 * method.history_size + 6) * w_bytes, base)
    if name == "vaevar":
        vae = VAE((c, h, w), method.latent_channels, method.widths, method.downsamplings)
        itemsize = ANALYSIS_DTYPES[method.analysis_dtype].itemsize
        z = torch.zeros(1, *vae.latent_shape)
        act = _activation_bytes(vae.decoder, (z,), itemsize)
        params = sum(p.numel() for p in vae.decoder.parameters()) * itemsize
        return MemoryEstimate(float(params), 3 * act + 30 * z.numel() * itemsize + 8 * f64,
                              base)
    if name == "diffda":
        denoiser = diffda_denoiser(method, (c, h, w))
        x = torch.zeros(1, c, h, w)
        act = _activation_bytes(denoiser, (x, torch.zeros(1, dtype=torch.long), x), 4)
        params = sum(p.numel() for p in denoiser.parameters()) * 4 * len(method.leads_hours)
        return MemoryEstimate(float(params), act + 12 * f32, base)
    # a method without a model here: assume it works like interp without the kernel blocks
    return MemoryEstimate(0.0, 8 * f64, base)


def available_bytes(device: torch.device) -> float:
    """Memory a run may use now: free GPU memory, or the kernel's MemAvailable (RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


__all__ = ["BUILDERS", "MemoryEstimate", "available_bytes", "estimate_memory", "synthetic_spec",
           "synthetic_statistics", "timing_channels", "untrained"]
