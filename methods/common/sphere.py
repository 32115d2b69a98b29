"""Convolutions that see the sphere: circular in longitude, across the poles in latitude.

A 3×3 convolution on a lat-lon grid with zero padding treats the grid's edges as walls. Here
the padding is the sphere's own neighbourhood: west of the first column is the last column,
and the row beyond a pole is the row next to it seen from the other side of the pole (flipped
in latitude and shifted by 180° of longitude: the grid point you reach by walking over the
pole). Used by the built-in emulator (bench/forecast/emulator.py), VAE-Var's VAE and DiffDA's
emulator-backbone denoiser (its residual blocks are the emulator's: ``SphereResidualBlock``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sphere_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (..., H, W) by ``n`` cells on each side: circular in longitude, over the poles in lat.

    The row north of the first row is the first row seen from the other side of the pole: the
    same row flipped in latitude and shifted by W/2 columns (180°). That needs an even W (and
    H ≥ n); for an odd W the latitude padding replicates the edge rows instead. n = 0 returns
    ``x``. (Vector components change sign over the pole; learnt convolutions absorb that.)
    """
    h, w = x.shape[-2:]
    if n == 0:
        return x
    if w % 2 == 0 and h >= n:
        north = torch.roll(x[..., :n, :].flip(-2), w // 2, dims=-1)
        south = torch.roll(x[..., -n:, :].flip(-2), w // 2, dims=-1)
    else:
        north = x[..., :1, :].expand(*x.shape[:-2], n, w)
        south = x[..., -1:, :].expand(*x.shape[:-2], n, w)
    x = torch.cat([north, x, south], dim=-2)
    return F.pad(x, (n, n, 0, 0), mode="circular")


class SphereConv(nn.Conv2d):
    """3×3 convolution (stride 1 or 2) with ``sphere_pad`` instead of zero padding."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, kernel_size=3, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(sphere_pad(x, 1))


class SphereResidualBlock(nn.Module):
    """h + conv2(gelu(conv1(gelu(h)))) with two width → width ``SphereConv``s: the built-in
    emulator's block (its parameter names conv1, conv2 are part of the emulator's checkpoints
    and of DiffDA's emulator-backbone denoiser, which copies them)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = SphereConv(width, width)
        self.conv2 = SphereConv(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.gelu(self.conv1(F.gelu(h))))
