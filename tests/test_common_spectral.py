"""The spectral truncation through StateSpec (bench/state.py) and the transforms built on it
(methods/common/spectral.py)."""

import numpy as np
import pytest
import torch

from bench.experiments.synthetic import synthetic_spec
from bench.state import StateSpec, truncation
from methods.common.spectral import Transforms, TriangularTruncation


@pytest.mark.parametrize("grid, nlat, nlon, expected", [
    ("legendre-gauss", 32, 64, (32, 32)),  # T31 on the built-in world: lmax = nlat
    ("legendre-gauss", 16, 20, (16, 11)),  # mmax = nlon // 2 + 1 when that is smaller
    ("equiangular", 721, 1440, (361, 361)),  # ERA5: lmax = (nlat + 1) // 2
    ("equiangular", 9, 16, (5, 5)),
    ("equiangular", 33, 64, (17, 17)),
])
def test_truncation_rule(grid, nlat, nlon, expected):
    assert truncation(grid, nlat, nlon) == expected


def test_the_spec_carries_its_grids_truncation():
    for nlat, nlon in ((32, 64), (9, 16), (181, 360)):
        spec = synthetic_spec(nlat, nlon, 3)
        assert spec.truncation == truncation(spec.grid, nlat, nlon)
    spec = StateSpec.create(["t850"], np.linspace(80, -80, 8), np.arange(16) * 22.5,
                            "legendre-gauss")
    assert spec.truncation == (8, 8)


def test_an_unknown_grid_has_no_truncation():
    with pytest.raises(ValueError, match="no spherical-harmonic truncation for grid 'healpix'"):
        truncation("healpix", 8, 16)


def test_transforms_and_truncation_follow_the_spec():
    spec = synthetic_spec(9, 16, 3)
    t = Transforms.for_spec(spec)
    assert (t.lmax, t.mmax) == spec.truncation
    p = TriangularTruncation.for_spec(spec)
    x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p(x), TriangularTruncation("equiangular", 9, 16)(x))
    torch.testing.assert_close(p(p(x)), p(x), atol=1e-5, rtol=0)
