"""VAE-Var trains from samples it never copies whole: per-batch division by s and a batched
per-channel std (methods/common/moments.py), so a memory-mapped sample set larger than memory
works (issue: bounded memory wherever a period is read)."""

import numpy as np
import torch

from methods.common.moments import channel_std
from methods.vaevar.train import train_vae
from methods.vaevar.vae import VAE

SHAPE = (3, 8, 16)


def _samples(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    channel_size = torch.tensor([0.5, 3.0, 40.0])[:, None, None]  # very different channel scales
    return torch.randn(n, *SHAPE, generator=g) * channel_size + 0.1


def test_channel_std_equals_torch_std_over_samples_and_grid_points():
    x = _samples(70, seed=1)
    for batch in (1, 7, 32, 1000):  # batches that do and do not divide N
        np.testing.assert_allclose(channel_std(x, batch=batch).numpy(),
                                   x.double().std(dim=(0, 2, 3)).numpy(), rtol=1e-12)


def test_channel_std_reads_a_memory_map_without_copying_it(tmp_path):
    x = _samples(40, seed=2).numpy()
    mm = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32,
                                   shape=x.shape)
    mm[:] = x
    mm.flush()
    mapped = torch.from_numpy(np.load(tmp_path / "s.npy", mmap_mode="c"))
    np.testing.assert_allclose(channel_std(mapped, batch=8).numpy(),
                               torch.from_numpy(x).double().std(dim=(0, 2, 3)).numpy(),
                               rtol=1e-12)


def _trained(errors: torch.Tensor, scale: torch.Tensor | None) -> tuple[dict, list]:
    torch.manual_seed(0)
    vae = VAE(SHAPE, latent_channels=2, widths=(4, 4), downsamplings=1)
    history = train_vae(vae, errors, scale=scale, epochs=2, batch_size=8, lr=1e-3,
                        recon_sigma=2.0, seed=0, progress=False)
    return vae.state_dict(), history


def test_per_batch_scaling_trains_exactly_as_dividing_the_whole_set_first():
    x = _samples(40, seed=3)
    scale = channel_std(x).float()
    whole, history_whole = _trained(x / scale[:, None, None], None)
    batched, history_batched = _trained(x, scale)
    assert history_whole == history_batched
    for name, value in whole.items():
        assert torch.equal(value, batched[name]), name
    # and the scale matters: without it the same samples train a different VAE
    unscaled, _ = _trained(x, None)
    assert not all(torch.equal(v, unscaled[k]) for k, v in whole.items())


def test_sample_days_chooses_the_samples_window_and_keys_the_fit():
    """``sample_days`` reaches ctx.samples (0: the whole training period, for the learning curve
    on a long world), and a fit on more days is never reused for the default's."""
    import dataclasses

    from bench.state import StateSpec
    from methods.base import TrainingContext
    from methods.vaevar import VAEVar

    spec = StateSpec.create(["z500", "t850", "u10"], np.linspace(60, -60, 8), np.arange(16) * 22.5,
                            "equiangular")
    calls = []

    def samples(kind="nmc", **settings):
        calls.append((kind, settings))
        return _samples(8, seed=0)

    ctx = TrainingContext(spec=spec, model=None, train_truth=lambda: None, samples=samples,
                          device=torch.device("cpu"), progress=False)
    default = VAEVar.for_tests(epochs=1)
    everything = dataclasses.replace(default, sample_days=0)
    everything.fit(ctx)
    dataclasses.replace(default, training_samples="truth_minus_forecast").fit(ctx)
    assert calls == [("nmc", {"start_stride": 1, "days": 0}),
                     ("truth_minus_forecast", {"lead_hours": 24, "start_stride": 1,
                                               "days": 365})]
    assert everything.cache_config() != default.cache_config()
    assert "sample_days" not in default.cache_config(), "earlier fits keep their cache entries"
