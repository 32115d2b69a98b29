"""FengWu: the official ONNX release, run through onnxruntime behind the ForecastModel contract.

The release (DESIGN.md §3) is one ONNX graph plus two statistics files:

    input   one tensor named ``input``, shape (1, 138, 721, 1440), float32: the frames t − 6 h and
            t, in that order, each FengWu's 69 channels (FENGWU_CHANNELS: u10, v10, t2m, msl, then
            z, q, u, v, t on 50 … 1000 hPa), normalised with the release's statistics
    output  one tensor (1, ≥ 69, 721, 1440) whose channels [:69] are the normalised t + 6 h state;
            the release emits more channels than that, which are ignored
    data_mean.npy / data_std.npy   69 values each, physical SI units, FengWu's channel order

Grid: latitude north -> south, longitude 0 -> 360, 0.25° equiangular with both poles (721 × 1440),
which is the StateSpec convention, so no flipping or rolling happens here.

Normalisation. Tensors of the suite are normalised with the *world's* statistics (m_w, s_w); FengWu
wants its own (m_f, s_f). Rather than go through physical values in float32 — geopotential is
~5e5 m² s⁻², so float32 round-off there is ~0.03 m² s⁻² before one even subtracts the mean — the
two affine maps are composed once in float64 into one per-channel scale and shift,

    x_f = x_w · (s_w / s_f) + (m_w − m_f) / s_f           (world -> FengWu, on the way in)
    x_w = x_f · (s_f / s_w) + (m_f − m_w) / s_w           (FengWu -> world, on the way out)

and applied as one float32 multiply-add on the model's device. Its error is a few float32 ulps of
|x · scale| + |shift|, i.e. no larger than the rounding already carried by a float32 input, and no
float64 copy of a 0.25° state (≈ 1.1 GB per pair of frames) is ever made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.forecast.base import ForecastModel
from bench.state import FENGWU_CHANNELS, StateSpec

#: FengWu's channel count per frame and its number of input frames (t − 6 h, t).
N_CHANNELS = len(FENGWU_CHANNELS)
HISTORY = 2
#: Name of the release graph's single input.
INPUT_NAME = "input"
#: The release's grid (lat, lon); only named in messages: any grid the graph accepts is allowed.
RELEASE_GRID = (721, 1440)

#: The command-line flag that sets each file, named in error messages (bench/cli/ owns parsing).
FLAGS: dict[str, str] = {
    "onnx_path": "--fengwu-onnx",
    "mean_path": "--fengwu-mean",
    "std_path": "--fengwu-std",
}
RELEASE_FILES: dict[str, str] = {"mean_path": "data_mean.npy", "std_path": "data_std.npy"}
WHAT: dict[str, str] = {
    "onnx_path": "FengWu ONNX model",
    "mean_path": "FengWu statistics file data_mean.npy",
    "std_path": "FengWu statistics file data_std.npy",
}


#: How to get onnxruntime's CUDA provider (pyproject.toml's ``gpu`` extra). onnxruntime and
#: onnxruntime-gpu install the same ``onnxruntime`` module and cannot co-exist with the CUDA
#: provider working (microsoft/onnxruntime#26996), so the CPU build is removed after.
GPU_INSTALL = ("pip install -e '.[gpu]' && pip uninstall -y onnxruntime && "
               "pip install --force-reinstall --no-deps onnxruntime-gpu")


class FengWuConfigError(ValueError):
    """The FengWu release files, the graph or the world's spec do not fit FengWu's contract."""


class FengWuPathError(FengWuConfigError, FileNotFoundError):
    """A release file (ONNX graph, data_mean.npy or data_std.npy) does not exist."""


class FengWu(ForecastModel):
    """The official FengWu ONNX release as a 6-hourly ForecastModel with two input frames.

    Tensors in and out are normalised with the world's ``spec`` (69 FengWu channels, lat N -> S,
    lon 0 -> 360); conversion to and from the release's normalisation happens inside ``step``.

    Args:
        spec: the world's StateSpec: exactly FENGWU_CHANNELS in order, on the graph's grid.
        onnx_path: the release's ONNX file (str or Path).
        mean_path: the release's ``data_mean.npy`` (69 finite values, physical units).
        std_path: the release's ``data_std.npy`` (69 finite values > 0, physical units).
        device: "cpu" or "cuda" (or a torch.device); default "cuda" when torch sees a GPU.
            On CUDA, onnxruntime's CUDAExecutionProvider runs the graph when onnxruntime offers
            it (the ``onnxruntime-gpu`` build); otherwise the CPU provider runs it, with a warning.
        intra_op_threads: onnxruntime's intra-op thread count; 0 lets onnxruntime choose (all
            physical cores). The default 1 matches FengWu's own inference script and keeps tests
            polite on small machines; a run passes its ``--threads`` (bench/setup.py).

    Attributes:
        max_batch (1: the release's batch dimension is fixed), differentiable (False: an ONNX
            graph has no autograd): as in ForecastModel.
        spec, history (2), device: as in ForecastModel; ``device`` carries an explicit CUDA index
            (cuda:0, never bare cuda) so that it compares equal to tensors' devices.
        onnx_path: the resolved path of the graph.
        release_mean, release_std: the release statistics, float64, shape (69,), physical units.
        providers: the execution providers the session actually uses, preferred first.

    Raises:
        FengWuPathError: a release file does not exist.
        FengWuConfigError: the spec, the statistics or the graph's interface do not fit (every
            check runs here, at construction, not at the first step).
    """

    history = HISTORY
    max_batch = 1

    def __init__(
        self,
        spec: StateSpec,
        onnx_path: str | Path,
        mean_path: str | Path,
        std_path: str | Path,
        device: str | torch.device | None = None,
        intra_op_threads: int = 1,
    ):
        _check_spec(spec)
        paths = {"onnx_path": onnx_path, "mean_path": mean_path, "std_path": std_path}
        paths = {key: Path(p).expanduser() for key, p in paths.items()}
        missing = [key for key, p in paths.items() if not p.is_file()]
        if missing:
            raise FengWuPathError(
                "FengWu release files not found: "
                + "; ".join(f"{WHAT[k]} at {paths[k]} (set it with {FLAGS[k]})" for k in missing)
                + ". Point the flags at the files of the official FengWu ONNX release."
            )
        if isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int) \
                or intra_op_threads < 0:
            raise FengWuConfigError(
                f"intra_op_threads must be an integer >= 0 (0: onnxruntime chooses), "
                f"got {intra_op_threads!r}"
            )

        self.spec = spec
        self.device = _resolve_device(device)
        self.onnx_path = paths["onnx_path"].resolve()
        self.release_mean = _load_stats(paths["mean_path"], "mean_path", positive=False)
        self.release_std = _load_stats(paths["std_path"], "std_path", positive=True)
        self._session = self._open_session(intra_op_threads)
        self.providers: list[str] = list(self._session.get_providers())
        self._output_name = self._check_graph()
        self._set_conversions()

    # ----------------------------------------------------------------------------- construction
    def _open_session(self, intra_op_threads: int) -> ort.InferenceSession:
        """An onnxruntime session on the CUDA provider when asked for and offered, else CPU."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # one graph, run node after node: extra inter-op threads only compete with the caller
        options.inter_op_num_threads = 1
        providers: list = ["CPUExecutionProvider"]
        want_cuda = self.device.type == "cuda"
        if want_cuda:
            if "CUDAExecutionProvider" in ort.get_available_providers():
                # kSameAsRequested: grow the GPU arena by what is needed, not by doubling, so
                # FengWu leaves room for the assimilation method sharing the GPU
                cuda = {"device_id": self.device.index, "arena_extend_strategy": "kSameAsRequested"}
                providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
            else:
                warnings.warn(
                    f"device {self.device} asked for, but this onnxruntime "
                    f"({ort.__version__}) offers no CUDAExecutionProvider (providers: "
                    f"{', '.join(ort.get_available_providers())}): FengWu runs on the CPU and "
                    f"tensors are copied to and from {self.device}. To run it on the GPU: "
                    f"{GPU_INSTALL}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        try:
            session = ort.InferenceSession(
                str(self.onnx_path), sess_options=options, providers=providers
            )
        except Exception as err:  # onnxruntime raises its own non-standard exception types
            raise FengWuConfigError(
                f"onnxruntime could not load the FengWu ONNX model {self.onnx_path} "
                f"({FLAGS['onnx_path']}): {err}. Is it the release's .onnx file, complete?"
            ) from err
        if want_cuda and len(providers) > 1 and "CUDAExecutionProvider" not in \
                session.get_providers():
            # onnxruntime falls back silently when CUDA / cuDNN libraries fail to load
            warnings.warn(
                f"onnxruntime could not start its CUDAExecutionProvider (check the CUDA and "
                f"cuDNN libraries onnxruntime-gpu {ort.__version__} needs); FengWu runs on the "
                f"CPU with providers {session.get_providers()}",
                RuntimeWarning,
                stacklevel=3,
            )
        return session

    def _check_graph(self) -> str:
        """Check the graph's interface against the release and the spec; returns the output name.

        Dimensions the graph leaves symbolic (strings or None) are accepted as they are.
        """
        _, h, w = self.spec.shape
        expected = (1, HISTORY * N_CHANNELS, h, w)
        where = f"FengWu ONNX model {self.onnx_path} ({FLAGS['onnx_path']})"
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            found = ", ".join(f"{i.name!r} {_dims(i.shape)}" for i in inputs) or "none"
            raise FengWuConfigError(
                f"{where} has inputs {found}; expected exactly one input named {INPUT_NAME!r} "
                f"of shape {_dims(expected)}. This is not the official FengWu release graph"
            )
        graph_in = inputs[0]
        if graph_in.type != "tensor(float)":
            raise FengWuConfigError(
                f"{where}: input {INPUT_NAME!r} is {graph_in.type}; expected tensor(float) "
                f"(float32) as in the official release"
            )
        dims = list(graph_in.shape)
        if len(dims) != 4 or not all(_fits(d, e) for d, e in zip(dims, expected, strict=True)):
            raise FengWuConfigError(
                f"{where}: input {INPUT_NAME!r} has shape {_dims(dims)}; expected "
                f"{_dims(expected)} = (1, {HISTORY} frames x {N_CHANNELS} channels, lat, lon) "
                f"for the world's {h} x {w} grid. "
                + _shape_hint(dims, expected)
            )

        outputs = self._session.get_outputs()
        graph_out = outputs[0]
        out_dims = list(graph_out.shape)
        bad_out = graph_out.type != "tensor(float)" or len(out_dims) != 4 or not (
            _fits(out_dims[0], 1)
            and (not isinstance(out_dims[1], int) or out_dims[1] >= N_CHANNELS)
            and _fits(out_dims[2], h) and _fits(out_dims[3], w)
        )
        if bad_out:
            raise FengWuConfigError(
                f"{where}: output {graph_out.name!r} is {graph_out.type} of shape "
                f"{_dims(out_dims)}; expected tensor(float) of shape (1, >= {N_CHANNELS}, {h}, "
                f"{w}) whose channels [:{N_CHANNELS}] are the t + 6 h state"
            )
        return graph_out.name

    def _set_conversions(self) -> None:
        """Per-channel scale and shift between the world's and FengWu's normalisation.

        Composed in float64 (see the module docstring), stored as float32 (69, 1, 1) on the
        device so they broadcast over (frames, 69, H, W).
        """
        m_w, s_w = self.spec.mean, self.spec.std
        m_f, s_f = self.release_mean, self.release_std

        def as_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float32, device=self.device)[:, None, None]

        self._in_scale, self._in_shift = as_tensor(s_w / s_f), as_tensor((m_w - m_f) / s_f)
        self._out_scale, self._out_shift = as_tensor(s_f / s_w), as_tensor((m_f - m_w) / s_w)

    # ----------------------------------------------------------------------------- stepping
    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 2, 69, H, W) world-normalised, oldest first -> (B, 69, H, W) world-normalised.

        Runs the graph once per batch member (the release's batch dimension is fixed at 1).
        Returns float32 on ``self.device``.
        """
        b, _, c, h, w = frames.shape
        out = torch.empty((b, c, h, w), dtype=torch.float32, device=self.device)
        for i in range(b):
            # (2, 69, H, W) -> (1, 138, H, W) is the channel concatenation [t − 6 h, t]
            x = torch.addcmul(self._in_shift, frames[i].to(torch.float32), self._in_scale)
            feed = x.reshape(1, HISTORY * c, h, w).cpu().numpy()
            y = self._session.run([self._output_name], {INPUT_NAME: feed})[0]
            if y.ndim != 4 or y.shape[0] != 1 or y.shape[1] < c or tuple(y.shape[2:]) != (h, w):
                # only reachable when the graph declared symbolic output dimensions
                raise FengWuConfigError(
                    f"FengWu ONNX model {self.onnx_path} returned shape {y.shape}; expected "
                    f"(1, >= {c}, {h}, {w})"
                )
            nxt = torch.from_numpy(np.ascontiguousarray(y[0, :c])).to(self.device)
            out[i] = torch.addcmul(self._out_shift, nxt, self._out_scale)
        return out

    def __repr__(self) -> str:
        c, h, w = self.spec.shape
        return (
            f"FengWu(onnx={str(self.onnx_path)!r}, grid={h}x{w}, channels={c}, "
            f"device={str(self.device)!r}, providers={self.providers})"
        )


# --------------------------------------------------------------------------------- helpers
def _check_spec(spec: StateSpec) -> None:
    """The spec must be exactly FengWu's 69 channels in FengWu's order."""
    names = tuple(spec.names)
    if names == FENGWU_CHANNELS:
        return
    first = next(
        (i for i, (a, e) in enumerate(zip(names, FENGWU_CHANNELS, strict=False)) if a != e),
        min(len(names), N_CHANNELS),
    )
    got = names[first] if first < len(names) else "nothing"
    want = FENGWU_CHANNELS[first] if first < N_CHANNELS else "nothing"
    raise FengWuConfigError(
        f"FengWu reads exactly its {N_CHANNELS} channels in its order (u10, v10, t2m, msl, then "
        f"z, q, u, v, t on 50 … 1000 hPa); the world's spec has {len(names)} channels and at "
        f"position {first} has {got!r} where {want!r} is expected. Use a world with the "
        f"'fengwu-69' layout"
    )


def _load_stats(path: Path, key: str, positive: bool) -> np.ndarray:
    """69 finite float64 values from a release .npy file (any shape holding 69 values)."""
    fix = f"Set {FLAGS[key]} to the release's {RELEASE_FILES[key]}"
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FengWuConfigError(
            f"{WHAT[key]} {path} is not a readable .npy array ({err}). {fix}"
        ) from err
    try:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise FengWuConfigError(f"{WHAT[key]} {path} does not hold numbers ({err}). {fix}") from err
    if values.size != N_CHANNELS:
        raise FengWuConfigError(
            f"{WHAT[key]} {path} holds {values.size} values; expected {N_CHANNELS}, one per "
            f"FengWu channel in FengWu's order. {fix}"
        )
    bad = ~np.isfinite(values) | ((values <= 0) if positive else False)
    if bad.any():
        need = "finite and > 0" if positive else "finite"
        listed = ", ".join(f"{FENGWU_CHANNELS[i]}={float(values[i])}" for i in np.flatnonzero(bad))
        raise FengWuConfigError(
            f"{WHAT[key]} {path}: every value must be {need}; these are not: {listed}. {fix}"
        )
    values.setflags(write=False)
    return values


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """cpu or cuda:<index> (an explicit index, so device comparisons with tensors hold)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise FengWuConfigError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda'") \
            from err
    if dev.type not in ("cpu", "cuda"):
        raise FengWuConfigError(f"FengWu runs on 'cpu' or 'cuda', not {str(dev)!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FengWuConfigError(
                f"device {str(dev)!r} asked for, but torch sees no CUDA device; pass device='cpu'"
            )
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    return dev


def _fits(dim: int | str | None, expected: int) -> bool:
    """A graph dimension fits when it is symbolic (str / None) or equal to ``expected``."""
    return not isinstance(dim, int) or dim == expected


def _dims(dims: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _shape_hint(dims: list, expected: tuple[int, int, int, int]) -> str:
    """Which part of an input shape is off, and what to do about it."""
    if len(dims) != 4:
        return "The graph does not take one (batch, channel, lat, lon) tensor."
    if not _fits(dims[1], expected[1]):
        return (
            f"Its channel count {dims[1]} is not {HISTORY} frames of FengWu's {N_CHANNELS} "
            f"channels: this is not the FengWu release graph."
        )
    if not (_fits(dims[2], expected[2]) and _fits(dims[3], expected[3])):
        return (
            f"Its grid {dims[2]} x {dims[3]} differs from the world's: FengWu runs only on the "
            f"grid it was trained on ({RELEASE_GRID[0]} x {RELEASE_GRID[1]} for the release); use "
            f"a world on that grid (era5-wb2) or the built-in emulator."
        )
    return f"Its batch dimension must be 1 (or symbolic), not {dims[0]}."
