"""FengWu (bench/forecast/fengwu.py) on tiny exported ONNX graphs with the release's interface.

The graphs (tests/tiny_onnx.py) compute a known function, so every expected value below is
computed independently in float64 numpy from the contract: world-normalised -> physical ->
FengWu-normalised (release stats) -> graph -> channels [:69] -> physical -> world-normalised.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import tiny_onnx
import torch
from tiny_onnx import GRID, reference_next

from bench.forecast.fengwu import FLAGS, FengWu, FengWuConfigError, FengWuPathError
from bench.state import FENGWU_CHANNELS, StateSpec

C = len(FENGWU_CHANNELS)
H, W = GRID

#: Rough climatological (mean, std) per variable in SI units, so the release statistics have the
#: real magnitudes (geopotential ~ 1e5 m² s⁻², msl ~ 1e5 Pa, q ~ 1e-3) that float32 must survive.
MAGNITUDES = {
    "u10": (-0.1, 5.5), "v10": (0.2, 4.6), "t2m": (278.0, 21.0), "msl": (1.0e5, 1.1e3),
    "z": (1.1e5, 3.0e3), "q": (2.0e-3, 2.5e-3), "u": (8.0, 12.0), "v": (0.05, 7.0),
    "t": (240.0, 12.0),
}


def release_stats() -> tuple[np.ndarray, np.ndarray]:
    """Stand-ins for data_mean.npy / data_std.npy: (69,) each, varying along the levels."""
    mean, std = np.empty(C), np.empty(C)
    for i, name in enumerate(FENGWU_CHANNELS):
        var = name if name in MAGNITUDES else name[0]
        m, s = MAGNITUDES[var]
        vary = 1.0 + 0.02 * (i % 13)
        mean[i], std[i] = m * vary, s * vary
    return mean, std


def world_spec(lat=None, lon=None, identity: bool = False) -> StateSpec:
    """The world's spec: FengWu's channels on the tiny grid, stats unlike the release's."""
    lat = np.linspace(90.0, -90.0, H) if lat is None else lat
    lon = np.arange(W) * (360.0 / W) if lon is None else lon
    if identity:  # mean 0, std 1: "normalised" tensors are physical values
        return StateSpec.create(FENGWU_CHANNELS, lat, lon, "equiangular")
    m_f, s_f = release_stats()
    sign = np.where(np.arange(C) % 2 == 0, 1.0, -1.0)
    mean = m_f + 0.3 * sign * s_f
    std = s_f * np.linspace(0.5, 2.0, C)
    return StateSpec.create(FENGWU_CHANNELS, lat, lon, "equiangular", mean, std)


def expected_step(spec: StateSpec, frames: torch.Tensor) -> np.ndarray:
    """The contract in float64: (B, 2, 69, H, W) world-normalised -> (B, 69, H, W)."""
    m_f, s_f = (a[:, None, None] for a in release_stats())
    m_w, s_w = spec.mean[:, None, None], spec.std[:, None, None]
    x = frames.double().cpu().numpy()
    physical = x * s_w + m_w
    fengwu = (physical - m_f) / s_f
    nxt = reference_next(fengwu[:, 0], fengwu[:, 1])
    return (nxt * s_f + m_f - m_w) / s_w


def random_frames(batch: int = 2, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((batch, 2, C, H, W)).astype(np.float32))


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def graph(tmp_path_factory):
    """Export one tiny graph variant per set of options, once per session."""
    folder = tmp_path_factory.mktemp("graphs")
    cache = {}

    def make(**options):
        key = tuple(sorted(options.items()))
        if key not in cache:
            cache[key] = tiny_onnx.export_tiny(folder / f"tiny_{len(cache)}.onnx", **options)
        return cache[key]

    return make


def build(release, spec=None, onnx=None, mean=None, std=None, **kwargs) -> FengWu:
    return FengWu(
        world_spec() if spec is None else spec,
        release / "fengwu.onnx" if onnx is None else onnx,
        release / "data_mean.npy" if mean is None else mean,
        release / "data_std.npy" if std is None else std,
        **{"device": "cpu", **kwargs},
    )


@pytest.fixture(scope="session")
def model(release):
    return build(release)


# ----------------------------------------------------------------------------------- the step
def test_step_matches_independent_computation(model):
    spec = model.spec
    frames = random_frames(batch=2)
    out = model.step(frames)
    assert out.shape == (2, C, H, W)
    assert out.dtype == torch.float32
    assert out.device == torch.device("cpu")
    expected = expected_step(spec, frames)
    # 3e-6, not 1e-5: going through physical values in float32 misses by ~1e-5 here (z ~ 1e5),
    # the fused float64-composed conversion by < 1e-6
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=3e-6)
    # the conversion matters: skipping it would miss by far more than the tolerance
    assert np.abs(expected - reference_next(frames[:, 0], frames[:, 1])).max() > 0.1


def test_attributes_and_interface(model, release):
    assert model.history == 2
    assert model.spec.shape == (C, H, W)
    assert model.device == torch.device("cpu")
    assert model.providers == ["CPUExecutionProvider"]
    assert model.onnx_path == (release / "fengwu.onnx").resolve()
    np.testing.assert_array_equal(model.release_mean, release_stats()[0])
    assert "FengWu(" in repr(model) and "9x16" in repr(model)


def test_physical_values_survive_float32(release):
    """An identity spec feeds physical values (z ~ 1e5) straight in: the fused conversion must
    stay within float32 round-off of the exact result, channel by channel."""
    spec = world_spec(identity=True)
    model = build(release, spec=spec)
    m_f, s_f = release_stats()
    frames = (m_f[:, None, None] + s_f[:, None, None] * random_frames(batch=1).double().numpy())
    frames = torch.from_numpy(frames.astype(np.float32))
    out = model.step(frames).double().numpy()
    expected = expected_step(spec, frames)
    # a few float32 ulps of the FengWu-normalised values, mapped back to physical units
    scale = np.abs(expected) + s_f[None, :, None, None]
    assert np.all(np.abs(out - expected) <= 4e-7 * scale + 1e-12)


def test_batch_of_two_equals_each_member(model):
    frames = random_frames(batch=2, seed=1)
    both = model.step(frames)
    for i in range(2):
        torch.testing.assert_close(both[i : i + 1], model.step(frames[i : i + 1]), rtol=0, atol=0)
    assert not torch.equal(both[0], both[1])


def test_rollout_equals_repeated_steps(model):
    frames = random_frames(batch=2, seed=2)
    roll = model.rollout(frames, 3)
    assert roll.shape == (2, 3, C, H, W)
    assert roll.dtype == torch.float32
    current = frames
    for k in range(3):
        nxt = model.step(current)
        torch.testing.assert_close(roll[:, k], nxt, rtol=0, atol=0)
        current = torch.cat([current[:, 1:], nxt[:, None]], dim=1)
    # and the first step still matches the contract
    np.testing.assert_allclose(roll[:, 0].numpy(), expected_step(model.spec, frames), atol=1e-5)


def test_deterministic(model):
    frames = random_frames(batch=1, seed=3)
    first, second = model.step(frames), model.step(frames.clone())
    assert torch.equal(first, second)
    assert torch.equal(frames, random_frames(batch=1, seed=3)), "step must not modify its input"


def test_float64_frames_give_float32_output(model):
    frames = random_frames(batch=1, seed=4)
    out = model.step(frames.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model.step(frames), rtol=0, atol=0)


def test_exactly_69_output_channels_accepted(release, graph, model):
    model69 = build(release, onnx=graph(out_channels=69))
    frames = random_frames(batch=1, seed=5)
    torch.testing.assert_close(model69.step(frames), model.step(frames), rtol=0, atol=0)


def test_symbolic_grid_is_accepted(release, graph):
    """A graph whose lat / lon are symbolic runs on whatever grid the spec has."""
    onnx = graph(dynamic_grid=True)
    dims = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).get_inputs()[0]
    assert not isinstance(dims.shape[2], int) and not isinstance(dims.shape[3], int)
    spec = world_spec(lat=np.linspace(80.0, -80.0, 5), lon=np.arange(8) * 45.0)
    model = build(release, spec=spec, onnx=onnx)
    frames = torch.from_numpy(
        np.random.default_rng(6).standard_normal((1, 2, C, 5, 8)).astype(np.float32)
    )
    out = model.step(frames)
    assert out.shape == (1, C, 5, 8)
    np.testing.assert_allclose(out.numpy(), expected_step(spec, frames), atol=1e-5)


def test_frames_of_the_wrong_shape_are_refused(model):
    with pytest.raises(ValueError, match=r"expects frames of shape \(B, 2, 69, 9, 16\)"):
        model.step(random_frames(batch=1)[:, 1:])


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("key", ["onnx_path", "mean_path", "std_path"])
def test_missing_file_names_path_and_flag(release, tmp_path, key):
    missing = tmp_path / "nowhere" / "file"
    kwargs = {{"onnx_path": "onnx", "mean_path": "mean", "std_path": "std"}[key]: str(missing)}
    with pytest.raises(FengWuPathError) as info:
        build(release, **kwargs)
    message = str(info.value)
    assert str(missing) in message
    assert FLAGS[key] in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_not_an_onnx_file(release, tmp_path):
    bad = tmp_path / "fengwu.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(FengWuConfigError, match="could not load") as info:
        build(release, onnx=bad)
    assert str(bad) in str(info.value) and "--fengwu-onnx" in str(info.value)


def test_wrong_input_name(release, graph):
    with pytest.raises(FengWuConfigError) as info:
        build(release, onnx=graph(input_name="x"))
    message = str(info.value)
    assert "'x'" in message and "'input'" in message and "(1, 138, 9, 16)" in message


def test_wrong_input_channel_count(release, graph):
    with pytest.raises(FengWuConfigError) as info:
        build(release, onnx=graph(in_channels=120, out_channels=120))
    message = str(info.value)
    assert "(1, 120, 9, 16)" in message  # what the graph has
    assert "expected (1, 138, 9, 16)" in message
    assert "channel count 120" in message


def test_wrong_grid(release):
    spec = world_spec(lat=np.linspace(90.0, -90.0, 5))
    with pytest.raises(FengWuConfigError) as info:
        build(release, spec=spec)
    message = str(info.value)
    assert "(1, 138, 9, 16)" in message  # what the graph has
    assert "expected (1, 138, 5, 16)" in message
    assert "grid 9 x 16" in message


def test_too_few_output_channels(release, graph):
    with pytest.raises(FengWuConfigError) as info:
        build(release, onnx=graph(out_channels=60))
    message = str(info.value)
    assert "(1, 60, 9, 16)" in message and ">= 69" in message


@pytest.mark.parametrize("which", ["mean", "std"])
@pytest.mark.parametrize("size", [68, 138])
def test_stats_of_wrong_length(release, tmp_path, which, size):
    path = tmp_path / f"data_{which}.npy"
    np.save(path, np.ones(size))
    with pytest.raises(FengWuConfigError) as info:
        build(release, **{which: path})
    message = str(info.value)
    assert str(path) in message and f"holds {size} values" in message
    assert "expected 69" in message and f"--fengwu-{which}" in message


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_nonpositive_or_nonfinite_std(release, tmp_path, bad):
    std = release_stats()[1]
    std[FENGWU_CHANNELS.index("z500")] = bad
    path = tmp_path / "data_std.npy"
    np.save(path, std)
    with pytest.raises(FengWuConfigError) as info:
        build(release, std=path)
    message = str(info.value)
    assert str(path) in message and "finite and > 0" in message and "z500=" in message


def test_nonfinite_mean(release, tmp_path):
    mean = release_stats()[0]
    mean[FENGWU_CHANNELS.index("t850")] = np.nan
    path = tmp_path / "data_mean.npy"
    np.save(path, mean)
    with pytest.raises(FengWuConfigError, match=r"must be finite; these are not: t850=nan"):
        build(release, mean=path)


def test_stats_in_release_shape_are_accepted(release, tmp_path):
    """Any array of 69 values loads, e.g. (69, 1, 1) as broadcast-ready statistics."""
    mean, std = release_stats()
    np.save(tmp_path / "m.npy", mean[:, None, None])
    np.save(tmp_path / "s.npy", std[None, :].astype(np.float32))
    model = build(release, mean=tmp_path / "m.npy", std=tmp_path / "s.npy")
    assert model.release_mean.shape == (69,) and model.release_std.shape == (69,)
    np.testing.assert_allclose(model.release_std, std, rtol=1e-7)


def test_stats_not_npy(release, tmp_path):
    path = tmp_path / "data_mean.npy"
    path.write_text("1 2 3")
    with pytest.raises(FengWuConfigError, match="not a readable .npy array") as info:
        build(release, mean=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("names", [
    FENGWU_CHANNELS[:68],
    (FENGWU_CHANNELS[1], FENGWU_CHANNELS[0], *FENGWU_CHANNELS[2:]),
])
def test_spec_must_be_fengwu_channels_in_order(release, names):
    spec = StateSpec.create(names, np.linspace(90.0, -90.0, H), np.arange(W) * 22.5, "equiangular")
    with pytest.raises(FengWuConfigError, match="fengwu-69") as info:
        build(release, spec=spec)
    assert f"has {len(names)} channels" in str(info.value)


def test_bad_thread_count(release):
    with pytest.raises(FengWuConfigError, match="intra_op_threads"):
        build(release, intra_op_threads=-1)


def test_thread_count_is_honoured(release):
    model = build(release, intra_op_threads=2)
    frames = random_frames(batch=1, seed=7)
    np.testing.assert_allclose(model.step(frames).numpy(), expected_step(model.spec, frames),
                               atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_a_gpu(release):
    with pytest.raises(FengWuConfigError, match="torch sees no CUDA device"):
        build(release, device="cuda")


def test_unknown_device(release):
    with pytest.raises(FengWuConfigError, match="'cpu' or 'cuda'"):
        build(release, device="meta")


# ----------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_cuda_matches_cpu(release, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu = build(release, device="cuda")
    cuda_in_ort = "CUDAExecutionProvider" in ort.get_available_providers()
    fallback = [w for w in caught if "CUDAExecutionProvider" in str(w.message)]
    if cuda_in_ort:
        assert gpu.providers[0] == "CUDAExecutionProvider"
    else:
        assert fallback and gpu.providers == ["CPUExecutionProvider"]
    assert gpu.device.type == "cuda" and gpu.device.index is not None
    frames = random_frames(batch=2, seed=8)
    out = gpu.step(frames.to("cuda"))  # a bare "cuda" must be accepted as the model's device
    assert out.device == gpu.device and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), model.step(frames), rtol=0, atol=1e-5)
    roll = gpu.rollout(frames.to("cuda"), 2)
    torch.testing.assert_close(roll.cpu(), model.rollout(frames, 2), rtol=0, atol=1e-5)
