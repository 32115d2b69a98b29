"""The built-in world: the real generator on short runs, checked against Held & Suarez (1994)."""

import copy
import shutil
import tomllib

import numpy as np
import pytest

from bench import cache
from bench.state import FENGWU_CHANNELS
from bench.worlds import cards_dir
from bench.worlds.nature import NatureWorld


def short_card(spinup_days: int, days: tuple[int, int, int]) -> dict:
    """The shipped card with shorter spin-up and periods (same model settings)."""
    with (cards_dir() / "heldsuarez-5.625.toml").open("rb") as f:
        card = copy.deepcopy(tomllib.load(f))
    card["generator"]["spinup_days"] = spinup_days
    start = np.datetime64(card["periods"]["train"]["start"], "h")
    for name, n in zip(("train", "valid", "test"), days, strict=True):
        end = start + np.timedelta64(24 * n, "h")
        card["periods"][name] = {"start": str(start), "end": str(end), "days": n}
        start = end
    return card


@pytest.mark.parametrize("name", ["heldsuarez-5.625", "heldsuarez-5.625-long"])
def test_shipped_card_periods_are_consistent(name):
    """Each period's END is START + days (the generator counts days, the runs read dates), the
    periods are back to back, and the long world repeats the built-in one's model and seed (so
    its first training year is the built-in world's)."""
    world = NatureWorld("heldsuarez-5.625", short_card(150, (365, 30, 60)))
    with (cards_dir() / f"{name}.toml").open("rb") as f:
        card = tomllib.load(f)
    assert card["generator"]["spinup_days"] >= 150
    assert card["periods"]["train"]["days"] >= 365 and card["periods"]["test"]["days"] >= 60
    periods = NatureWorld(name, card).periods
    for key, period in periods.items():
        days = (period.end - period.start) / np.timedelta64(1, "D")
        assert days == card["periods"][key]["days"], key
    assert periods["train"].end == periods["valid"].start
    assert periods["valid"].end == periods["test"].start
    assert world.periods["train"].end == world.periods["valid"].start
    with (cards_dir() / "heldsuarez-5.625.toml").open("rb") as f:
        builtin = tomllib.load(f)
    assert card["generator"] == builtin["generator"]
    assert card["periods"]["train"]["start"] == builtin["periods"]["train"]["start"]


@pytest.mark.slow
def test_held_suarez_climate_has_midlatitude_jets(isolated_cache):
    """Time-mean zonal-mean u near 250 hPa: a 20–40 m/s westerly jet at 30–55° in each hemisphere.

    100 days of spin-up is shorter than the default world's 150 but past the jets' formation
    (the measured jets reach ~33 m/s near 41° by day 100 at T31).
    """
    world = NatureWorld("heldsuarez-5.625", short_card(100, (12, 4, 4)))
    world.prepare(progress=False)
    ds = world.open().load()
    assert ds.sizes["time"] == 20 * 4
    values = np.stack([ds[name].values for name in FENGWU_CHANNELS], axis=1)
    assert np.isfinite(values).all(), "NaN/Inf in the nature run (1000 hPa included)"

    u250 = ds["u250"].mean(dim=("time", "lon"))
    lat = ds["lat"].values
    for hemisphere, sign in (("north", 1), ("south", -1)):
        band = u250.where(sign * u250["lat"] > 0, drop=True)
        peak = float(band.max())
        peak_lat = abs(float(band["lat"][int(band.argmax(dim="lat"))]))
        assert 20 <= peak <= 40, f"{hemisphere} jet {peak:.1f} m/s"
        assert 30 <= peak_lat <= 55, f"{hemisphere} jet at {peak_lat:.1f}°"
    assert lat[0] > 0 > lat[-1], "latitudes run north -> south"

    def within(name, lo, hi):
        x = ds[name].values
        assert lo <= x.min() and x.max() <= hi, f"{name} in [{x.min():.4g}, {x.max():.4g}]"

    within("t850", 220, 320)
    within("t50", 150, 260)
    within("t1000", 220, 330)
    within("t2m", 220, 330)
    within("z500", 4.6e4, 6.0e4)  # geopotential (m² s⁻²): ~4.7–6.1 km heights
    within("z1000", -9.0e3, 3.0e3)  # consistent with msl >= 900 hPa (8 m per hPa)
    within("msl", 9.0e4, 1.08e5)
    within("u10", -50, 50)
    for level in (50, 500, 850, 1000):
        within(f"q{level}", 0.0, 0.05)
    # moisture lives near the surface and decreases upwards
    assert ds["q1000"].mean() > ds["q700"].mean() > ds["q300"].mean() >= ds["q50"].mean()
    assert ds["q850"].mean() > 1e-3

    spec = world.spec
    assert spec.grid == "legendre-gauss" and spec.shape == (69, 32, 64)
    assert np.all(spec.std > 0)
    np.testing.assert_allclose(spec.lon[1] - spec.lon[0], 5.625)


@pytest.mark.slow
def test_cache_is_reused_detected_when_damaged_and_generation_is_deterministic(isolated_cache):
    world = NatureWorld("heldsuarez-5.625", short_card(1, (1, 1, 1)))
    assert world.status()[0] == "missing"
    with pytest.raises(cache.CacheError, match="prepare --world heldsuarez-5.625"):
        world.open()

    assert "generated" in world.prepare(progress=False)
    marker = world.entry / cache.MARKER
    stamp = marker.stat().st_mtime_ns
    assert "nothing to do" in world.prepare(progress=False)
    assert marker.stat().st_mtime_ns == stamp, "a valid cache must never be regenerated"
    first = world.open()["z500"].values.copy()

    # damage one chunk of z500: the checksum check must notice
    chunk = next(p for p in (world.entry / NatureWorld.STORE / "z500").iterdir()
                 if not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    state, message = NatureWorld("heldsuarez-5.625", world.card).status(verify_checksums=True)
    assert state == "corrupt", message
    assert str(world.entry) in message

    # an interrupted generation leaves no marker: reported as incomplete
    shutil.copy(marker, marker.with_suffix(".bak"))
    marker.unlink()
    fresh = NatureWorld("heldsuarez-5.625", world.card)
    state, message = fresh.status()
    assert state == "incomplete" and "interrupted" in message
    with pytest.raises(cache.CacheError, match="interrupted"):
        fresh.open()

    # prepare regenerates, and the same seed gives the same trajectory bit for bit
    assert "generated" in fresh.prepare(progress=False)
    np.testing.assert_array_equal(fresh.open()["z500"].values, first)
