"""Training the VAE of VAE-Var on scaled background-error samples.

Loss per sample (Xiao et al. 2025, their code): a Gaussian likelihood with a fixed std σ
(``recon_sigma``, 2.0 in their code) plus the KL term of the ELBO,

    L(e) = Σ_{c,i,j} (D(z) − e)² / (2 σ²) + KL(q(z | e) ‖ N(0, I)),   z ~ q(z | e),

averaged over a mini-batch; Adam. A large σ weights the KL term more: the decoder learns only
the structures that explain much of the error variance (the large, balanced ones), which is
what makes D a smooth, well-conditioned background-error model for the variational analysis.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from methods.vaevar.vae import VAE, kl_divergence


@dataclasses.dataclass
class EpochStats:
    """Means over one epoch's samples: ``recon_mse`` = mean (D(z) − e)² per element (scaled
    units), ``kl`` = KL per sample (nats), ``loss`` = the training loss per sample."""

    recon_mse: float
    kl: float
    loss: float


def train_vae(
    vae: VAE,
    errors: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    recon_sigma: float,
    seed: int,
    scale: torch.Tensor | None = None,
    progress: bool = True,
) -> list[EpochStats]:
    """Train ``vae`` in place on ``errors`` (N, C, H, W) / s, s = ``scale`` (C,) (None: the
    errors are already divided by s). Each mini-batch is gathered, moved to the VAE's device
    and divided by s on its own, so ``errors`` may be a memory map larger than memory (the
    cached samples are served so): memory is the batch, not N × C × H × W.

    Deterministic for a given seed, thread count and device: the shuffling and the
    reparametrisation noise come from a generator seeded with ``seed``.

    Returns:
        one EpochStats per epoch (the first and last show what training achieved).
    """
    device = next(vae.parameters()).device
    n = errors.shape[0]
    # divided, not multiplied by 1/s: the same float32 values as dividing the whole set first
    divisor = None if scale is None else scale.to(device=device, dtype=torch.float32)[:, None, None]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise_gen = generator if device.type == "cpu" else \
        torch.Generator(device=device).manual_seed(seed)
    optimiser = torch.optim.Adam(vae.parameters(), lr=lr)
    inv_two_var = 1.0 / (2.0 * recon_sigma**2)
    history: list[EpochStats] = []
    vae.train()
    bar = tqdm(range(epochs), desc="VAE-Var: training the VAE", disable=not progress,
               leave=False)
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        sums = torch.zeros(3, dtype=torch.float64)
        for start in range(0, n, batch_size):
            e = errors[order[start: start + batch_size]].to(device=device, dtype=torch.float32)
            if divisor is not None:
                e = e / divisor
            recon, mean, log_var = vae(e, generator=noise_gen)
            sq = (recon - e).square().flatten(1).sum(1)  # (B,)
            kl = kl_divergence(mean, log_var)  # (B,)
            loss = (sq * inv_two_var + kl).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                sums += torch.stack([sq.sum(), kl.sum(), loss * e.shape[0]]).double().cpu()
        per_element = errors[0].numel()
        stats = EpochStats(recon_mse=float(sums[0]) / (n * per_element), kl=float(sums[1]) / n,
                           loss=float(sums[2]) / n)
        history.append(stats)
        bar.set_postfix(mse=f"{stats.recon_mse:.3f}", kl=f"{stats.kl:.0f}")
    vae.eval()
    return history


@torch.no_grad()
def channel_recon_mse(vae: VAE, errors: torch.Tensor, *, scale: torch.Tensor | None = None,
                      batch_size: int = 32) -> torch.Tensor:
    """Per-channel reconstruction error of a trained VAE, (C,) float64, scaled units:

        mse_c = mean over samples n and grid points (i, j) of (D(μ(e_n)) − e_n)²_{c,i,j},

    e_n = errors_n / s (s = ``scale`` (C,); None: already scaled), μ(e) the encoder's mean (no
    sampling: deterministic, and the analysis too seeks a mode, not a draw). What the decoder
    cannot represent of the training errors, per channel: VAE-Var's ``lam_per_channel =
    "measured"`` adds mse_c s_c² (normalised units²) to each channel's observation-error
    variance. In batches of ``batch_size`` (``errors`` may be a memory map); float64 sums."""
    device = next(vae.parameters()).device
    divisor = None if scale is None else scale.to(device=device, dtype=torch.float32)[:, None, None]
    was_training = vae.training
    vae.eval()
    sums = torch.zeros(errors.shape[1], dtype=torch.float64)
    for start in range(0, errors.shape[0], batch_size):
        e = errors[start: start + batch_size].to(device=device, dtype=torch.float32)
        if divisor is not None:
            e = e / divisor
        mean, _ = vae.encoder(e)
        sums += (vae.decoder(mean) - e).double().square().sum(dim=(0, 2, 3)).cpu()
    vae.train(was_training)
    return sums / (errors.shape[0] * errors.shape[2] * errors.shape[3])
