"""Micro-benchmarks of hot kernels (pytest-benchmark), each also a test of its kernel.

In the test run they execute once as tests (``--benchmark-disable`` in pyproject's addopts);
to time them: ``python -m pytest tests/test_benchmarks.py --benchmark-enable``.
Budget of the issue: one emulator 6-hour step at 32×64×69 <= 20 ms on 2 CPU cores.

All kernels run at 32 × 64 × 69 (the built-in world's grid, FengWu's channels) with the
methods' default network sizes and random weights; 3DVar's B comes from a small synthetic
sample set (tests/threedvar_fixtures.py), as its tests build it. Each benchmark asserts a
property of its kernel (an adjoint identity, a round trip, a shape and finiteness), so it can
fail.
"""

import numpy as np
import pytest
import torch
from threedvar_fixtures import gaussian_spec, random_fields, synthetic_samples

from bench.config import ObservationSettings
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
from bench.observations import observe
from bench.state import FENGWU_CHANNELS, FENGWU_LEVELS, StateSpec
from methods.common.covariance import BMatrix, estimate
from methods.common.spectral import Transforms
from methods.diffda import DiffDA
from methods.vaevar import VAEVar
from methods.vaevar.vae import VAE

SHAPE = (69, 32, 64)


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


@pytest.fixture(scope="module")
def spec() -> StateSpec:
    """32 × 64 Gauss–Legendre grid, FengWu's 69 channels in FengWu's order."""
    s = gaussian_spec(32, 64, FENGWU_LEVELS)
    assert s.names == FENGWU_CHANNELS
    return s


@pytest.fixture(scope="module")
def b_matrix(spec) -> BMatrix:
    """B from 24 synthetic NMC-like samples with known balance (≈ 1 s to estimate)."""
    spec, samples = synthetic_samples(spec, n=24, seed=0)
    return BMatrix(spec, estimate(spec, samples, variance_scale=0.25))


def test_emulator_step_32x64x69(benchmark):
    lat = np.linspace(85.76, -85.76, 32)
    spec = StateSpec.create(FENGWU_CHANNELS, lat, np.arange(64) * 5.625, "legendre-gauss")
    model = Emulator(EmulatorNet(69, lat, 64, EmulatorConfig()), spec)
    frames = torch.randn(1, 2, 69, 32, 64)
    out = benchmark(model.step, frames)
    assert out.shape == (1, 69, 32, 64)


def test_threedvar_u_32x64x69(benchmark, b_matrix):
    """U w: control vector -> increment; adjoint identity <U w, y> = <w, Uᵀ y>."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(b_matrix.shape_w, generator=g, dtype=torch.float64)
    y = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    uw = benchmark(b_matrix.u, w)
    assert uw.shape == SHAPE and torch.isfinite(uw).all()
    lhs, rhs = _inner(uw, y), _inner(w, b_matrix.u_adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), 1.0), (lhs, rhs)


def test_threedvar_u_adjoint_32x64x69(benchmark, b_matrix):
    """Uᵀ y (the gradient's expensive half); Uᵀ U is symmetric positive semi-definite."""
    g = torch.Generator().manual_seed(2)
    y = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    uty = benchmark(b_matrix.u_adjoint, y)
    assert uty.shape == b_matrix.shape_w
    w1, w2 = (torch.randn(b_matrix.shape_w, generator=g, dtype=torch.float64) for _ in "12")
    a12 = _inner(w2, b_matrix.u_adjoint(b_matrix.u(w1)))
    a21 = _inner(w1, b_matrix.u_adjoint(b_matrix.u(w2)))
    assert abs(a12 - a21) <= 1e-10 * max(abs(a12), 1.0)
    assert _inner(w1, b_matrix.u_adjoint(b_matrix.u(w1))) >= 0


def test_sht_pair_32x64x69(benchmark):
    """Forward + inverse scalar SHT of 69 fields (U_h's transform): a band-limited field
    survives the round trip on the Gauss–Legendre grid (exact to round-off)."""
    tr = Transforms("legendre-gauss", 32, 64)
    fields = random_fields(tr, (69,), torch.Generator().manual_seed(3))

    def pair(x):
        return tr.isht(tr.sht(x))

    back = benchmark(pair, fields)
    assert back.shape == (69, 32, 64)
    assert float((back - fields).abs().max()) <= 1e-10 * float(fields.abs().max())


@pytest.fixture(scope="module")
def obs(spec):
    """1 % of the grid points observed in all 69 channels (1,380 observations)."""
    truth = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    return observe(truth, spec, ObservationSettings(density=0.01), cycle=0)


def test_observation_operator_32x64x69(benchmark, obs):
    """H x at 1 % density; adjoint identity <H x, r> = <x, Hᵀ r>."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=g)
    hx = benchmark(obs.operator, x)
    assert hx.shape == (len(obs),) == (69 * round(0.01 * 32 * 64),)
    r = torch.randn(len(obs), generator=g)
    lhs, rhs = _inner(hx, r), _inner(x, obs.adjoint(r))
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1.0)


def test_observation_adjoint_32x64x69(benchmark, obs):
    """Hᵀ r at 1 % density: scatters onto exactly the observed elements; H Hᵀ = I for
    grid-point observations of distinct elements."""
    r = torch.randn(len(obs), generator=torch.Generator().manual_seed(6))
    htr = benchmark(obs.adjoint, r)
    assert htr.shape == SHAPE
    assert int((htr != 0).sum()) == len(obs)
    torch.testing.assert_close(obs.operator(htr), r)


def test_diffda_denoiser_call_32x64x69(benchmark):
    """One ε_θ call of the default DiffDA network (random weights): ε̂ is finite, of the
    state's shape, the same for the same inputs (no hidden state) and depends on the
    forecast it is conditioned on."""
    denoiser = DiffDA().network(SHAPE, seed=0).eval()
    g = torch.Generator().manual_seed(7)
    z, x_hat = torch.randn(1, *SHAPE, generator=g), torch.randn(1, *SHAPE, generator=g)
    t = torch.tensor([500])

    def call():
        with torch.no_grad():
            return denoiser(z, t, x_hat)

    eps = benchmark(call)
    assert eps.shape == (1, *SHAPE) and torch.isfinite(eps).all()
    torch.testing.assert_close(call(), eps)
    # the condition matters: another forecast gives another ε̂
    with torch.no_grad():
        assert not torch.allclose(denoiser(z, t, -x_hat), eps)


def test_vaevar_decoder_and_gradient_32x64x69(benchmark):
    """D(w) and ∇_w of ½‖D(w)‖² for the default VAE-Var decoder in its analysis dtype
    (float64); the gradient matches a central finite difference along a random direction."""
    method = VAEVar()
    torch.manual_seed(0)
    vae = VAE(SHAPE, method.latent_channels, method.widths, method.downsamplings)
    decoder = vae.decoder.double().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(8)
    w0 = torch.randn(1, *vae.latent_shape, generator=g, dtype=torch.float64)

    def loss(w):
        return 0.5 * decoder(w).square().sum()

    def value_and_gradient():
        w = w0.clone().requires_grad_(True)
        j = loss(w)
        j.backward()
        return j.detach(), w.grad

    j, grad = benchmark(value_and_gradient)
    assert grad.shape == (1, *vae.latent_shape) and vae.latent_shape == (32, 32, 64)
    v = torch.randn(w0.shape, generator=g, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        fd = (loss(w0 + h * v) - loss(w0 - h * v)) / (2 * h)
    assert abs(float(fd) - _inner(grad, v)) <= 1e-6 * max(abs(float(fd)), 1.0)
    assert float(j) > 0
