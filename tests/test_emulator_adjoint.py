"""The emulator's tangent-linear and adjoint through autograd (what 4DVar differentiates), in
float64 on the default-size network at 32 × 64 × 69:

    adjoint identity   ⟨M′ δ, y⟩ = ⟨δ, M′ᵀ y⟩ to float64 round-off
    Taylor             ‖M(x + ε δ) − M(x) − ε M′ δ‖ = O(ε²)

M′ δ is taken as 4DVar takes it (methods/fourdvar/cost.py): the vector–Jacobian product of the
adjoint's graph (torch-harmonics' SHT has no forward-mode rule).
"""

import numpy as np
import pytest
import torch

from bench.experiments.synthetic import synthetic_spec
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet

SPEC = synthetic_spec(32, 64)  # 69 channels, Gauss–Legendre grid: the built-in world's shape


def random_emulator(trained_like: bool, seed: int = 0, spec=SPEC,
                    config: EmulatorConfig | None = None) -> Emulator:
    """The network with PyTorch's default random initialisation everywhere (the output layer,
    zero at construction, included); ``trained_like``: every weight then perturbed by 30 % of
    its layer's std and per-channel increment scales s_c drawn in [0.05, 0.5] (a trained
    emulator's 6-h increments are of that size)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EmulatorNet(spec.shape[0], spec.lat, spec.shape[2], config or EmulatorConfig(),
                          spec.grid)
        net.decode.reset_parameters()
    if trained_like:
        with torch.no_grad():
            for p in net.parameters():
                p += 0.3 * p.std() * torch.randn(p.shape, generator=g)
            net.increment_std.copy_(0.05 + 0.45 * torch.rand(spec.shape[0], generator=g))
    return Emulator(net, spec)


def tangent_and_adjoint(model, frames):
    """(M(x), δ ↦ M′ δ, y ↦ M′ᵀ y) at frames (1, history, C, H, W), all float64."""
    x = frames.clone().requires_grad_(True)
    out = model.step_differentiable(x)
    u = torch.zeros_like(out, requires_grad=True)
    (g,) = torch.autograd.grad(out, x, u, create_graph=True)  # g(u) = M′ᵀ u, linear in u

    def tangent(delta):
        return torch.autograd.grad(g, u, delta, retain_graph=True)[0]

    def adjoint(y):
        return torch.autograd.grad(out, x, y, retain_graph=True)[0]

    return out.detach(), tangent, adjoint


@pytest.fixture(scope="module", params=[False, True], ids=["random", "trained-like"])
def linearised(request):
    model = random_emulator(request.param)
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(1, model.history, *SPEC.shape, generator=g, dtype=torch.float64)
    return model, frames, *tangent_and_adjoint(model, frames)


def test_float64_frames_stay_float64_and_float32_is_unchanged():
    model = random_emulator(True)
    frames = torch.randn(1, 2, *SPEC.shape, generator=torch.Generator().manual_seed(2))
    out64 = model.step_differentiable(frames.double())
    assert out64.dtype == torch.float64
    out32 = model.step(frames)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, model.net(frames), rtol=0, atol=0)
    torch.testing.assert_close(model.step_differentiable(frames), out32, rtol=0, atol=0)
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-5)
    assert model.net.decode.weight.dtype == torch.float32  # the float64 copy is separate


def test_adjoint_identity(linearised):
    model, frames, out, tangent, adjoint = linearised
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        delta = torch.randn(frames.shape, generator=g, dtype=torch.float64)
        y = torch.randn(out.shape, generator=g, dtype=torch.float64)
        lhs = float((tangent(delta) * y).sum())
        rhs = float((delta * adjoint(y)).sum())
        assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs)), (lhs, rhs)


def test_taylor_remainder_is_second_order(linearised):
    model, frames, out, tangent, _ = linearised
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(frames.shape, generator=g, dtype=torch.float64)
    m_delta = tangent(delta)
    eps = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2, 6.25e-3])
    with torch.no_grad():
        remainders = np.array([float((model.step_differentiable(frames + e * delta) - out
                                      - e * m_delta).norm()) for e in eps])
    linear = float(m_delta.norm()) * eps
    assert (remainders < 0.1 * linear).all()  # M′ δ is the derivative ...
    slopes = np.diff(np.log(remainders)) / np.diff(np.log(eps))
    assert np.all(np.abs(slopes - 2) < 0.15), slopes  # ... and the rest is O(ε²)
