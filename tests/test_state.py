"""StateSpec: channel layout, grid conventions, normalisation and the xarray edge."""

import numpy as np
import pytest
import torch

from bench.state import FENGWU_CHANNELS, FENGWU_LEVELS, Channel, StateSpec


def gaussian_like_spec(nlat=4, nlon=8, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.linspace(80, -80, nlat)
    lon = np.arange(nlon) * 360 / nlon
    mean = rng.normal(size=69) * 100
    std = rng.uniform(0.5, 50, size=69)
    return StateSpec.create(FENGWU_CHANNELS, lat, lon, "legendre-gauss", mean, std)


def test_fengwu_layout_is_69_channels_in_fengwu_order():
    assert len(FENGWU_CHANNELS) == 69
    assert FENGWU_CHANNELS[:4] == ("u10", "v10", "t2m", "msl")
    assert FENGWU_CHANNELS[4] == "z50" and FENGWU_CHANNELS[16] == "z1000"
    assert FENGWU_CHANNELS[17] == "q50"
    assert FENGWU_CHANNELS[-1] == "t1000"
    spec = gaussian_like_spec()
    # z, q, u, v, t each on 13 levels after the 4 surface fields
    for k, var in enumerate("zquvt"):
        assert spec.index(f"{var}500") == 4 + 13 * k + FENGWU_LEVELS.index(500)


def test_channel_metadata_is_si_and_cf():
    z500 = Channel.parse("z500")
    assert (z500.variable, z500.level, z500.units) == ("z", 500, "m2 s-2")
    assert "geopotential" in z500.long_name
    msl = Channel.parse("msl")
    assert (msl.level, msl.units) == (None, "Pa")
    assert Channel.parse("q700").units == "kg kg-1"


def test_unknown_channel_lists_valid_names():
    spec = gaussian_like_spec()
    with pytest.raises(ValueError, match="unknown channel 'z499'.*z500"):
        spec.index("z499")
    with pytest.raises(ValueError, match="not understood"):
        Channel.parse("w500")


def test_grid_conventions_are_enforced():
    with pytest.raises(ValueError, match="north -> south"):
        StateSpec.create(["t2m"], np.array([-10.0, 10.0]), np.array([0.0, 180.0]), "equiangular")
    with pytest.raises(ValueError, match="grid"):
        StateSpec.create(["t2m"], np.array([10.0, -10.0]), np.array([0.0, 180.0]), "gaussian")
    with pytest.raises(ValueError, match="strictly positive"):
        StateSpec.create(["t2m"], np.array([10.0]), np.array([0.0]), "equiangular",
                         np.zeros(1), np.zeros(1))


def test_dataset_tensor_round_trip_keeps_values_and_attributes():
    spec = gaussian_like_spec()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=spec.shape).astype(np.float32))
    ds = spec.to_dataset(x)
    assert ds["z500"].attrs["units"] == "m2 s-2"
    assert ds["z500"].attrs["level_hPa"] == 500
    assert ds["t2m"].attrs["long_name"] == "2 metre temperature"
    assert ds["lat"].attrs["units"] == "degrees_north"
    # physical values are mean + std * normalised
    i = spec.index("t850")
    np.testing.assert_allclose(ds["t850"].values, spec.mean[i] + spec.std[i] * x[i].numpy(),
                               rtol=1e-6)
    back = spec.to_tensor(ds)
    assert back.dtype == torch.float32 and back.shape == spec.shape
    # The Dataset stores float32 physical values, so tensor -> Dataset -> tensor is exact up to
    # one float32 rounding of the physical value, i.e. spacing(|value|) / std per channel.
    physical = np.abs(spec.mean[:, None, None] + spec.std[:, None, None] * x.numpy())
    tolerance = np.spacing(physical.astype(np.float32)) / spec.std[:, None, None] + 1e-7
    assert np.all(np.abs(back.numpy() - x.numpy()) <= tolerance)
    # Dataset -> tensor -> Dataset reproduces the float32 physical values to within one ulp
    again = spec.to_dataset(back)
    for name in spec.names:
        np.testing.assert_array_max_ulp(again[name].values, ds[name].values, maxulp=1)


def test_time_dimension_round_trip():
    spec = gaussian_like_spec()
    times = np.array(["2001-01-01T00", "2001-01-01T06"], dtype="datetime64[ns]")
    x = torch.randn(2, *spec.shape)
    ds = spec.to_dataset(x, time=times)
    assert ds["u850"].dims == ("time", "lat", "lon")
    back = spec.to_tensor(ds)
    assert back.shape == (2, *spec.shape)
    torch.testing.assert_close(back, x, atol=1e-3, rtol=1e-4)


def test_to_tensor_rejects_wrong_grid_and_missing_channels():
    spec = gaussian_like_spec()
    ds = spec.to_dataset(torch.zeros(spec.shape))
    with pytest.raises(ValueError, match="lacks channels.*z500"):
        spec.to_tensor(ds.drop_vars("z500"))
    flipped = ds.isel(lat=slice(None, None, -1))
    with pytest.raises(ValueError, match="lat does not match"):
        spec.to_tensor(flipped)
    with pytest.raises(ValueError, match="expected \\(C, H, W\\)"):
        spec.to_dataset(torch.zeros(2, *spec.shape))


def test_normalise_inverts_denormalise_in_float64():
    spec = gaussian_like_spec()
    x = torch.randn(3, *spec.shape, dtype=torch.float64)
    torch.testing.assert_close(spec.normalise(spec.denormalise(x)), x)
    with pytest.raises(ValueError, match="channels"):
        spec.normalise(torch.zeros(5, 4, 8))


def test_latitude_weights_are_cell_areas_with_mean_one():
    lat = np.array([67.5, 22.5, -22.5, -67.5])
    spec = StateSpec.create(["t2m"], lat, np.array([0.0, 180.0]), "equiangular")
    w = spec.latitude_weights()
    assert w.mean() == pytest.approx(1.0)
    # edges at 90, 45, 0, -45, -90: areas ∝ sin90-sin45, sin45-sin0
    ratio = (1 - np.sin(np.pi / 4)) / np.sin(np.pi / 4)
    assert w[0] / w[1] == pytest.approx(ratio)
    np.testing.assert_allclose(w, w[::-1])


def test_subset_and_dict_round_trip():
    spec = gaussian_like_spec()
    sub = spec.subset(["t850", "z500"])
    assert sub.names == ("t850", "z500")
    assert sub.std[1] == spec.std[spec.index("z500")]
    assert StateSpec.from_dict(spec.to_dict()) == spec
    assert spec.variable_indices("t")[0] == spec.index("t50")


def test_std_floor_is_relative_to_the_largest_std_of_the_same_variable():
    from bench.state import floor_std_per_variable

    names = ["q50", "q850", "t50", "t850", "msl"]
    std = np.array([1e-9, 5e-3, 4.0, 3.0, 100.0])
    got = floor_std_per_variable(names, std, 0.01)
    np.testing.assert_array_equal(got, [5e-5, 5e-3, 4.0, 3.0, 100.0])
    assert std[0] == 1e-9, "the input is not modified"
