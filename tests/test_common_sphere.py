"""Spherical padding and convolutions (methods/common/sphere.py), shared by the built-in
emulator and VAE-Var's VAE."""

import pytest
import torch
import torch.nn.functional as F

from methods.common.sphere import SphereConv, sphere_pad


def emulator_pad_before_sharing(x: torch.Tensor, n: int) -> torch.Tensor:
    """The emulator's own sphere_pad before methods/common (even W only), for comparison."""
    w = x.shape[-1]
    north = torch.roll(x[..., :n, :].flip(-2), w // 2, dims=-1)
    south = torch.roll(x[..., -n:, :].flip(-2), w // 2, dims=-1)
    x = torch.cat([north, x, south], dim=-2)
    return F.pad(x, (n, n, 0, 0), mode="circular")


def test_sphere_pad_wraps_longitude_and_crosses_the_poles():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 4, 8)
    p = sphere_pad(x, 1)
    assert p.shape == (1, 6, 10)
    torch.testing.assert_close(p[0, 1:-1, 0], x[0, :, -1])  # west of lon 0 is the last column
    torch.testing.assert_close(p[0, 1:-1, -1], x[0, :, 0])
    # north of the first row: the first row, 180° away
    torch.testing.assert_close(p[0, 0, 1:-1], x[0, 0].roll(4))
    torch.testing.assert_close(p[0, -1, 1:-1], x[0, -1].roll(4))


@pytest.mark.parametrize("shape, n", [((2, 3, 8, 16), 1), ((1, 5, 6), 2), ((3, 32, 64), 3)])
def test_even_widths_pad_as_the_emulator_did(shape, n):
    """The emulator's numbers do not change: for even W the shared padding is its own."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sphere_pad(x, n), emulator_pad_before_sharing(x, n))


def test_zero_padding_returns_the_input():
    x = torch.randn(2, 5, 7)
    assert sphere_pad(x, 0) is x


def test_odd_width_replicates_the_edge_rows():
    """With an odd W there is no grid point 180° away: the rows beyond the poles repeat the
    edge rows; longitude still wraps."""
    x = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 3, 5)
    p = sphere_pad(x, 2)[0]
    x = x[0]
    assert p.shape == (7, 9)
    for row in (0, 1):
        torch.testing.assert_close(p[row, 2:-2], x[0])
        torch.testing.assert_close(p[-1 - row, 2:-2], x[-1])
    torch.testing.assert_close(p[2:-2, :2], x[:, -2:])
    torch.testing.assert_close(p[2:-2, -2:], x[:, :2])


def test_sphere_conv_is_a_conv_on_the_padded_grid_with_stride():
    torch.manual_seed(0)
    conv = SphereConv(3, 4, stride=2)
    x = torch.randn(2, 3, 8, 16)
    out = conv(x)
    assert out.shape == (2, 4, 4, 8)
    expected = F.conv2d(sphere_pad(x, 1), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert set(dict(conv.named_parameters())) == {"weight", "bias"}  # checkpoint keys
