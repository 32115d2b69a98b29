"""Tiny ONNX graphs with the FengWu release's interface, exported with torch.onnx, for tests.

The graph computes a known function of its two FengWu-normalised frames x1 (t − 6 h) and x2 (t),
each (69, H, W), so a test can compute the expected output independently (``reference_next``):

    next = x2 + 0.1 (x2 − x1) + 0.05 roll(x2, +1 along lon) + 0.01 c      (c: channel index)
    output = [next, 2 x1] along channels (138 channels, like the release's extra outputs)

It is asymmetric in the frames (catches a swapped frame order), different per channel (catches a
channel shift) and moves values along longitude (catches a transposed or flipped grid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: The tiny grid (lat, lon) of the graphs.
GRID = (9, 16)


def reference_next(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The graph's output channels [:69], in float64: (..., 69, H, W) x2 -> (..., 69, H, W)."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    bias = 0.01 * np.arange(x2.shape[-3])[:, None, None]
    return x2 + 0.1 * (x2 - x1) + 0.05 * np.roll(x2, 1, axis=-1) + bias


class TinyFengWu(torch.nn.Module):
    """(1, in_channels, H, W) -> (1, out_channels, H, W): ``reference_next`` then ``2 x1``."""

    def __init__(self, in_channels: int = 138, out_channels: int = 138):
        super().__init__()
        self.half = in_channels // 2
        self.out_channels = out_channels
        bias = 0.01 * torch.arange(self.half, dtype=torch.float32)[:, None, None]
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.half], x[:, self.half : 2 * self.half]
        nxt = x2 + 0.1 * (x2 - x1) + 0.05 * torch.roll(x2, 1, dims=-1) + self.bias
        return torch.cat([nxt, 2.0 * x1], dim=1)[:, : self.out_channels]


def export_tiny(
    path: str | Path,
    *,
    grid: tuple[int, int] = GRID,
    in_channels: int = 138,
    out_channels: int = 138,
    input_name: str = "input",
    dynamic_grid: bool = False,
) -> Path:
    """Export a TinyFengWu graph to ``path`` (dynamo exporter); returns the path.

    Args:
        grid: (H, W) of the example input, the graph's static grid unless ``dynamic_grid``.
        in_channels / out_channels: channel counts of the graph's input and output.
        input_name: the graph input's name (the release's is "input").
        dynamic_grid: leave H and W symbolic in the graph (named "lat" and "lon").
    """
    path = Path(path)
    example = torch.zeros(1, in_channels, *grid)
    dynamic_shapes = None
    if dynamic_grid:
        dynamic_shapes = ({2: torch.export.Dim("lat"), 3: torch.export.Dim("lon")},)
    torch.onnx.export(
        TinyFengWu(in_channels, out_channels).eval(),
        (example,),
        str(path),
        input_names=[input_name],
        output_names=["output"],
        dynamic_shapes=dynamic_shapes,
        dynamo=True,
        verbose=False,
    )
    return path
