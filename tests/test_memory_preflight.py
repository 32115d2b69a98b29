"""``run``'s memory preflight (bench/memory_check.py, bench/runner.check_memory): every method
fits at the built-in 32×64 world; a method that cannot fit is refused in one line naming
``--methods``, before anything is written or built (the timing command's refusal, the same
estimate, is tested in tests/test_timing_table.py)."""

import re

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from wb2_store import LEVELS, SURFACE, UPPER_AIR, tiny_era5_cards

from bench import memory_check, runner
from bench.cli import main
from bench.config import ObservationSettings, RunConfig
from bench.setup import open_world
from bench.validation import ConfigError
from methods import METHODS

GIB = 2.0**30


def refusal(capsys, monkeypatch, argv) -> str:
    """main(argv) refuses: exit code 2, exactly one stderr line; returns it. Should the
    preflight let the run through, the run stops at once (instead of generating a world)."""
    def run(*args, **kwargs):
        raise AssertionError("the preflight let the run start")

    monkeypatch.setattr(runner, "run", run)
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_every_method_fits_the_built_in_world(isolated_cache):
    """At 32×64 with the largest density, every registered method passes (here: far less than
    a laptop's memory), and the layout comes from the card: nothing is generated."""
    cfg = RunConfig(methods=tuple(METHODS), densities=(0.01, 0.5))
    spec = runner.world_layout(open_world(cfg))
    assert spec.shape == (69, 32, 64) and spec.grid == "legendre-gauss"
    runner.check_memory(cfg, spec)
    runner.preflight(cfg)
    assert not isolated_cache.exists()


def test_observations_are_counted_as_the_protocol_draws_them():
    # "columns": every channel at round(d·H·W) points (at least one); "elements": d·C·H·W
    assert memory_check.observation_count("columns", 69, 2048, 0.01) == 69 * 20
    assert memory_check.observation_count("columns", 69, 2048, 1e-6) == 69
    assert memory_check.observation_count("elements", 69, 2048, 0.01) == round(0.01 * 69 * 2048)


def test_the_largest_density_and_a_window_count(monkeypatch):
    """The estimate is asked at every density (the largest counts), with the observed channels
    only, times the window's observation times for a 4D method."""
    names = {cls: name for name, cls in METHODS.items()}
    asked = {}

    def needed(method, spec, n_obs):
        asked.setdefault(names[type(method)], []).append(n_obs)
        return None, 0.0

    monkeypatch.setattr(memory_check, "needed_bytes", needed)
    cfg = RunConfig(methods=("none", "4dvar"), densities=(0.01, 0.1),
                    observations=ObservationSettings(channels=("z500", "t850")))
    runner.check_memory(cfg, runner.world_layout(open_world(cfg)))
    times = len(cfg.observations.window_offsets(METHODS["4dvar"]().window_hours))
    assert times > 1
    columns = [round(d * 32 * 64) for d in cfg.densities]
    assert asked == {"none": [2 * c for c in columns], "4dvar": [times * 2 * c for c in columns]}


def test_a_method_that_cannot_fit_is_refused_in_one_line(tmp_path, capsys, isolated_cache,
                                                         monkeypatch):
    """With 0.5 GiB available, LETKF's 20 members (≈ 0.56 GiB at 32×64 and 1 %) do not fit;
    `none` (≈ 0.28 GiB, mostly the interpreter) does."""
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 0.5 * GIB)
    out = tmp_path / "run"
    err = refusal(capsys, monkeypatch, ["run", "--methods", "none,letkf", "--device", "cpu",
                           "--out", str(out), "-q"])
    assert err.startswith("error: --methods letkf: expected methods that fit in memory"), err
    assert "letkf ≈ 0.6 GiB exceeds the 0.5 GiB of RAM available on cpu at 32x64" in err, err
    assert "none" not in err.split("expected")[1].split(";")[0]
    assert "leave them out" in err
    assert not out.exists() and not isolated_cache.exists()


def test_the_refusal_is_a_config_error_naming_methods(monkeypatch):
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 0.5 * GIB)
    cfg = RunConfig(methods=("none", "letkf", "envar"), device="cpu")
    with pytest.raises(ConfigError) as caught:
        runner.check_memory(cfg, runner.world_layout(open_world(cfg)))
    assert caught.value.field == "methods" and caught.value.value == ("letkf", "envar")


def metadata_store(path, n_times: int = 44, nlat: int = 721, nlon: int = 1440) -> None:
    """A WeatherBench2-schema zarr store at 0.25° whose data are never written: coordinates
    and metadata only (dask arrays with ``compute=False``), which is all a preflight reads."""
    time = np.datetime64("2018-01-01T00:00", "ns") + np.arange(n_times) * np.timedelta64(6, "h")
    upper = ("time", "level", "latitude", "longitude")
    surface = ("time", "latitude", "longitude")
    shape = {"time": n_times, "level": len(LEVELS), "latitude": nlat, "longitude": nlon}
    data = {name: (dims, da.zeros([shape[d] for d in dims], dtype="float32",
                                  chunks=[1 if d in ("time", "level") else -1 for d in dims]))
            for names, dims in ((UPPER_AIR, upper), (SURFACE, surface)) for name in names}
    coords = {"time": time, "level": np.array(LEVELS, dtype=np.int64),
              "latitude": np.linspace(-90.0, 90.0, nlat), "longitude": np.arange(nlon) * 360 / nlon}
    xr.Dataset(data, coords=coords).to_zarr(path, mode="w", zarr_format=2, consolidated=True,
                                            compute=False)


def test_era5_at_a_quarter_degree_refuses_3dvar_before_fengwu_is_loaded(tmp_path, capsys,
                                                                         isolated_cache,
                                                                         monkeypatch):
    """`run --world era5-wb2 --model fengwu --methods 3dvar` on a 721×1440 store: the grid
    comes from the store's metadata, 3DVar's ≈ 27 GiB estimate exceeds 16 GiB, one line."""
    store = tmp_path / "era5.zarr"
    metadata_store(store)
    monkeypatch.setenv("ASSIMBENCH_DATASETS", str(tiny_era5_cards(tmp_path, store)))
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 16 * GIB)
    release = tmp_path / "fengwu"
    release.mkdir()
    (release / "fengwu.onnx").write_bytes(b"")  # preflight checks that it exists, not loads it
    np.save(release / "data_mean.npy", np.zeros(69))
    np.save(release / "data_std.npy", np.ones(69))
    out = tmp_path / "run"
    err = refusal(capsys, monkeypatch, [
        "run", "--world", "era5-wb2", "--era5-path", str(store), "--model", "fengwu",
        "--fengwu-onnx", str(release / "fengwu.onnx"),
        "--fengwu-mean", str(release / "data_mean.npy"),
        "--fengwu-std", str(release / "data_std.npy"),
        "--methods", "none,3dvar", "--device", "cpu", "--out", str(out), "-q"])
    found = re.match(r"error: --methods 3dvar: expected methods that fit in memory: estimated "
                     r"peak 3dvar ≈ ([\d.]+) GiB exceeds the 16\.0 GiB of RAM available on cpu "
                     r"at 721x1440 equiangular with 69 channels; leave them out", err)
    assert found and float(found[1]) > 16, err  # ≈ 27 GiB: Legendre tables of 721 latitudes
    assert not out.exists() and not isolated_cache.exists()
