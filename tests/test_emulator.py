"""The built-in emulator: sphere padding, the ForecastModel contract, and that training learns."""

import dataclasses

import pytest
import torch
from forecast_fixtures import advected_trajectory, small_spec

from bench import metrics
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
from bench.forecast.emulator_train import train_emulator
from bench.forecast.persistence import Persistence
from methods.common.sphere import sphere_pad

# the 8 × 16 test trajectories are not band-limited to T7 (the grid's truncation), so the
# small emulator learns them without the increment truncation; its own tests are below
TINY = EmulatorConfig(width=16, blocks=2, steps=400, batch_size=8, learning_rate=3e-3,
                      rollout_weight=0.5, rollout_start=0.5, truncate_increments=False)


def test_sphere_pad_wraps_longitude_and_crosses_the_poles():
    x = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    p = sphere_pad(x, 1)
    assert p.shape == (1, 1, 6, 8)
    torch.testing.assert_close(p[0, 0, 1:-1, 0], x[0, 0, :, -1])  # west pad = last column
    torch.testing.assert_close(p[0, 0, 1:-1, -1], x[0, 0, :, 0])  # east pad = first column
    # beyond the north pole at longitude k lies the first row at longitude k + 180°
    torch.testing.assert_close(p[0, 0, 0, 1:-1], x[0, 0, 0].roll(3))
    torch.testing.assert_close(p[0, 0, -1, 1:-1], x[0, 0, -1].roll(3))


def test_untrained_emulator_is_persistence_and_honours_the_contract():
    spec = small_spec()
    model = Emulator(EmulatorNet(3, spec.lat, 16, TINY), spec)
    frames = torch.randn(2, 2, *spec.shape)
    out = model.step(frames)
    assert out.shape == (2, *spec.shape) and out.dtype == torch.float32
    torch.testing.assert_close(out, frames[:, -1])
    with pytest.raises(ValueError, match=r"expects frames of shape \(B, 2, 3, 8, 16\)"):
        model.step(torch.randn(2, 3, 8, 16))
    with pytest.raises(ValueError, match="rollout needs n >= 1"):
        model.rollout(frames, 0)


def test_rollout_equals_repeated_steps_and_batches_are_independent():
    spec = small_spec()
    torch.manual_seed(0)
    net = EmulatorNet(3, spec.lat, 16, TINY)
    torch.nn.init.normal_(net.decode.weight, std=0.05)  # a non-trivial model
    model = Emulator(net, spec)
    frames = torch.randn(2, 2, *spec.shape)
    roll = model.rollout(frames, 3)
    f = frames
    for k in range(3):
        nxt = model.step(f)
        torch.testing.assert_close(roll[:, k], nxt)
        f = torch.cat([f[:, 1:], nxt[:, None]], dim=1)
    torch.testing.assert_close(model.rollout(frames[1:], 3)[0], roll[1], atol=1e-6, rtol=1e-5)


def test_training_is_deterministic_reduces_loss_and_beats_persistence_on_held_out_data():
    spec = small_spec()
    train = advected_trajectory(spec, 64, seed=1)
    held_out = advected_trajectory(spec, 24, seed=2)
    net, log = train_emulator(train, spec, TINY, progress=False)
    losses = [loss for _, loss in log["losses"]]
    assert losses[-1] < 0.3 * losses[0], losses

    again, _ = train_emulator(train, spec, TINY, progress=False)
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    model, persistence = Emulator(net, spec), Persistence(spec)
    frames = torch.stack([held_out[i - 1: i + 1] for i in range(1, 20)])
    truth = torch.stack([held_out[i + 1] for i in range(1, 20)])
    w = spec.latitude_weights()
    err_model = metrics.rmse(model.step(frames), truth, w).mean()
    err_persistence = metrics.rmse(persistence.step(frames), truth, w).mean()
    assert err_model < 0.7 * err_persistence, (float(err_model), float(err_persistence))


def test_training_rejects_too_short_data():
    spec = small_spec()
    with pytest.raises(ValueError, match="at least"):
        train_emulator(torch.zeros(3, *spec.shape), spec,
                       dataclasses.replace(TINY, steps=1), progress=False)


@pytest.mark.gpu
def test_emulator_on_cuda_matches_cpu():
    spec = small_spec()
    torch.manual_seed(0)
    net = EmulatorNet(3, spec.lat, 16, TINY)
    torch.nn.init.normal_(net.decode.weight, std=0.05)
    frames = torch.randn(2, 2, *spec.shape)
    cpu = Emulator(net, spec).rollout(frames, 2)
    gpu = Emulator(net, spec, device="cuda").rollout(frames.to("cuda"), 2)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_truncation_keeps_resolved_fields_and_removes_the_rest():
    """P is the identity on band-limited fields (l < lmax), idempotent, and removes the zonal
    Nyquist wave (2Δλ), which no harmonic with l < lmax = nlat carries."""
    import torch_harmonics as th

    from bench.state import truncation
    from methods.common.spectral import TriangularTruncation

    nlat, nlon = 16, 32
    p = TriangularTruncation("legendre-gauss", nlat, nlon)
    lmax, mmax = truncation("legendre-gauss", nlat, nlon)
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(3, lmax, mmax, dtype=torch.complex128, generator=g)
    coeffs = torch.tril(coeffs)  # m ≤ l only
    coeffs[..., 0] = coeffs[..., 0].real
    band_limited = th.InverseRealSHT(nlat, nlon, lmax=lmax, mmax=mmax, grid="legendre-gauss",
                                     norm="ortho").double()(coeffs).float()
    torch.testing.assert_close(p(band_limited), band_limited, atol=2e-5, rtol=0)
    nyquist = torch.cos(torch.pi * torch.arange(nlon, dtype=torch.float32)).expand(nlat, nlon)
    assert float(p(nyquist).abs().max()) < 1e-5
    x = torch.randn(2, nlat, nlon, generator=g)
    torch.testing.assert_close(p(p(x)), p(x), atol=2e-5, rtol=0)
    assert float((x - p(x)).abs().max()) > 0.1  # white noise is not band-limited


def test_truncated_emulator_adds_no_grid_scale_increment():
    """With truncate_increments the 6-h increment of even a random network has no zonal
    Nyquist component; without it, it has."""
    spec = small_spec()
    frames = torch.randn(2, 2, *spec.shape, generator=torch.Generator().manual_seed(3))
    nyquist = []
    for truncate in (True, False):
        torch.manual_seed(0)
        net = EmulatorNet(3, spec.lat, 16, dataclasses.replace(TINY, truncate_increments=truncate))
        torch.nn.init.normal_(net.decode.weight, std=0.5)
        increment = Emulator(net, spec).step(frames) - frames[:, -1]
        nyquist.append(float(torch.fft.rfft(increment, dim=-1)[..., -1].abs().max()))
    print("max |Nyquist coefficient| of the increment, truncated / not:", nyquist)
    assert nyquist[0] < 1e-4 < 0.1 < nyquist[1]
