"""3DVar's statistics streamed over batches of samples equal the all-at-once estimate.

``covariance.estimate`` reads the samples a batch at a time (memory O(batch)); the reference
below is the estimate as it was before, every step on all N samples at once. They must agree
to round-off (~1e-12 relative), whatever the batch size, with and without balance. On the
built-in world's cached NMC samples (363 of 69 × 32 × 64) the streamed estimate reproduces the
cached 3DVar fit made with the all-at-once code to ≤ 6e-12 relative (checked when this was
written; it needs the ~1.5 GB cache, so it is not a test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from threedvar_fixtures import gaussian_spec, synthetic_samples

from methods.common.covariance import estimate
from methods.common.covariance.bmatrix import layout
from methods.common.spectral import Transforms


def estimate_all_at_once(spec, samples, variance_scale=1.0, eof_fraction=0.999, ridge=1e-3,
                         balance=True) -> dict:
    """The estimate before streaming (statistics.py at commit 6b10e01), on all samples at once."""
    groups, _, regressions = layout(spec)
    tr = Transforms.for_spec(spec, "cpu")
    std = torch.tensor(np.array(spec.std), dtype=torch.float64)
    fields = {}
    for g in groups:
        if g.name in ("psi", "chi", "psi_sfc", "chi_sfc"):
            u = samples[:, list(g.channels)].double() * std[list(g.channels), None, None]
            v = samples[:, list(g.v_channels)].double() * std[list(g.v_channels), None, None]
            field = tr.psi_chi(u, v)[0 if g.name.startswith("psi") else 1]
        else:
            field = samples[:, list(g.channels)].double()
        fields[g.name] = field - field.mean(dim=0, keepdim=True)
    betas = {}
    for target, predictor in regressions:
        t, p = fields[target], fields[predictor]
        c_tp = torch.einsum("nihw,njhw->hij", t, p)
        c_pp = torch.einsum("nihw,njhw->hij", p, p)
        rho = ridge * torch.diagonal(c_pp, dim1=-2, dim2=-1).mean() + 1e-300
        eye = torch.eye(p.shape[1], dtype=torch.float64)
        beta = torch.linalg.solve(c_pp + rho * eye, c_tp.transpose(-1, -2)).transpose(-1, -2)
        betas[target] = beta if balance else torch.zeros_like(beta)
        fields[target] = t - torch.einsum("hij,njhw->nihw", betas[target], p)
    lat = torch.tensor(np.array(spec.lat), dtype=torch.float64)
    area = torch.cos(torch.deg2rad(lat)).clamp_min(0)
    area = area / (area.sum() * spec.shape[2])
    eofs, stds, sigmas = {}, [], []
    for g in groups:
        x = fields[g.name]
        cov = torch.einsum("nihw,njhw,h->ij", x, x, area) / x.shape[0]
        level_std = torch.diagonal(cov).sqrt().clamp_min(1e-8)
        lam, vec = torch.linalg.eigh(cov / (level_std[:, None] * level_std[None, :]))
        lam, vec = lam.flip(0).clamp_min(0), vec.flip(1)
        frac = torch.cumsum(lam, 0) / lam.sum().clamp_min(1e-300)
        k = min(int((frac < eof_fraction).sum()) + 1, lam.numel())
        vec = vec[:, :k] * torch.where(vec[:, :k].sum(0) < 0, -1.0, 1.0)
        eofs[g.name] = level_std[:, None] * vec
        amp = torch.einsum("ik,nihw->nkhw", vec, x / level_std[:, None, None])
        s = amp.square().mean(dim=(0, 3)).sqrt().clamp_min(1e-8)
        power = tr.power(amp / s[:, :, None]).mean(dim=0)
        degree = torch.arange(power.shape[-1], dtype=torch.float64)
        var_l = power / (2 * degree + 1)
        var_l = var_l / ((var_l * (2 * degree + 1)).sum(-1, keepdim=True) / (4 * math.pi))
        stds.append(s * math.sqrt(variance_scale))
        sigmas.append(var_l.sqrt())
    return {"sigma": torch.cat(sigmas), "std": torch.cat(stds), "eofs": eofs, "betas": betas}


def assert_equal_statistics(got: dict, want: dict, rtol: float = 1e-10) -> None:
    """Every tensor equal to ``rtol`` of its largest magnitude (EOF counts equal)."""
    def close(a, b, what):
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
        assert a.shape == b.shape, (what, a.shape, b.shape)
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
        assert err <= rtol, (what, err)

    close(got["sigma"], want["sigma"], "sigma")
    close(got["std"], want["std"], "std")
    for g in want["eofs"]:
        close(got["eofs"][g], want["eofs"][g], f"eofs {g}")
    for t in want["betas"]:
        if want["betas"][t].abs().max() > 0:
            close(got["betas"][t], want["betas"][t], f"betas {t}")
        else:
            assert got["betas"][t].abs().max() == 0


@pytest.fixture(scope="module")
def samples():
    spec, eps = synthetic_samples(gaussian_spec(), n=37, seed=3)
    return spec, eps.float()  # float32, as the samples cache stores them


@pytest.mark.parametrize("balance", [True, False])
def test_streamed_statistics_equal_the_all_at_once_estimate(samples, balance):
    spec, eps = samples
    want = estimate_all_at_once(spec, eps, 0.25, balance=balance)
    for batch in (5, 37):  # 8 batches (the last of 2 samples), then one
        got = estimate(spec, eps, 0.25, balance=balance, batch=batch)
        assert_equal_statistics(got, want)


def test_a_wrong_streaming_step_is_caught(samples):
    """The comparison is not vacuous: dropping one sample from the streamed estimate changes
    it far beyond the tolerance."""
    spec, eps = samples
    want = estimate_all_at_once(spec, eps, 0.25)
    with pytest.raises(AssertionError):
        assert_equal_statistics(estimate(spec, eps[1:], 0.25, batch=5), want)


def test_memory_mapped_samples_are_read_in_batches(samples, tmp_path):
    """Samples memory-mapped from disk (as the samples cache serves them) give the same
    statistics as samples in memory."""
    spec, eps = samples
    np.save(tmp_path / "eps.npy", eps.numpy())
    mapped = torch.from_numpy(np.load(tmp_path / "eps.npy", mmap_mode="c"))
    assert_equal_statistics(estimate(spec, mapped, 0.25, batch=4),
                            estimate(spec, eps, 0.25, batch=4), rtol=0)
