"""The VAE of VAE-Var: a convolutional encoder/decoder on the sphere's lat-lon grid.

The network models scaled background errors e = ε / s, (B, C, H, W), where ε = x_true − x_b in
normalised units and s (C,) is the per-channel std of the training samples. The latent z is
spatial, (B, latent_channels, H / 2^k, W / 2^k) with k = ``levels`` down-samplings (Xiao et al.
2025 also use a 32-channel latent at the decoder's coarse grid). The encoder gives the mean and
log-variance of q(z | e); the decoder D(z) is the mean of p(e | z). Only the decoder is used in
the analysis (x = x_b + s ⊙ D(w)); the encoder exists for training.

Every 3×3 convolution pads the sphere way (methods/common/sphere.py, ``SphereConv``): circular
in longitude and, in latitude, with the rows beyond each pole (the first rows, flipped and
shifted by 180°), so no edge of the grid is special. Activations are SiLU: smooth, so the
analysis cost J(w) is smooth for L-BFGS and the Taylor gradient test.

The number of down-samplings adapts to the grid: k = min(requested, the largest k with H and W
divisible by 2^k), so any (C, H, W) works (the contract's 8 × 16 as well as 32 × 64 or 721 ×
1440, where k = 0 for H = 721: a GPU user would crop or pad such a grid; see ``levels_for``).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.common.sphere import SphereConv


def levels_for(shape: tuple[int, int], requested: int) -> int:
    """The number of 2× down-samplings used on an (H, W) grid: at most ``requested``, and only
    as many as keep H and W divisible (so the decoder returns exactly (H, W))."""
    h, w = shape
    k = 0
    while k < requested and h % 2 ** (k + 1) == 0 and w % 2 ** (k + 1) == 0:
        k += 1
    return k


class Encoder(nn.Module):
    """e (B, C, H, W) -> (mean, log-variance), each (B, latent, H / 2^k, W / 2^k)."""

    def __init__(self, channels: int, widths: tuple[int, ...], latent: int):
        super().__init__()
        layers: list[nn.Module] = [SphereConv(channels, widths[0]), nn.SiLU()]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [SphereConv(cin, cout, stride=2), nn.SiLU(), SphereConv(cout, cout),
                       nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = SphereConv(widths[-1], 2 * latent)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.head(self.body(e)).chunk(2, dim=1)
        # clamp so exp(log_var) neither overflows nor vanishes early in training
        return mean, log_var.clamp(-12.0, 8.0)


class Decoder(nn.Module):
    """z (B, latent, H / 2^k, W / 2^k) -> D(z), the mean of p(e | z), (B, C, H, W)."""

    def __init__(self, channels: int, widths: tuple[int, ...], latent: int):
        super().__init__()
        layers: list[nn.Module] = [SphereConv(latent, widths[-1]), nn.SiLU()]
        rev = widths[::-1]
        for cin, cout in zip(rev[:-1], rev[1:], strict=True):
            layers += [SphereConv(cin, cin), nn.SiLU(), nn.Upsample(scale_factor=2.0),
                       SphereConv(cin, cout), nn.SiLU()]
        layers.append(SphereConv(widths[0], channels))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class VAE(nn.Module):
    """Encoder + decoder for (C, H, W) states.

    Args:
        shape: (C, H, W) of the states.
        latent_channels: channels of the spatial latent z.
        widths: feature channels per resolution level, finest first; the first k + 1 are used,
            k = ``levels_for((H, W), downsamplings)``.
        downsamplings: requested number of 2× down-samplings (see ``levels_for``).
    """

    def __init__(self, shape: tuple[int, int, int], latent_channels: int,
                 widths: tuple[int, ...], downsamplings: int):
        super().__init__()
        c, h, w = shape
        self.shape = (int(c), int(h), int(w))
        self.levels = levels_for((h, w), min(downsamplings, len(widths) - 1))
        used = tuple(int(v) for v in widths[: self.levels + 1])
        self.encoder = Encoder(c, used, latent_channels)
        self.decoder = Decoder(c, used, latent_channels)
        self.latent_shape = (int(latent_channels), h // 2**self.levels, w // 2**self.levels)

    def forward(self, e: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction D(z), z ~ q(z | e) by the reparametrisation trick; and (mean, log_var).

        Returns:
            recon (B, C, H, W), mean and log_var (B, *latent_shape).
        """
        mean, log_var = self.encoder(e)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                            device=mean.device)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.decoder(z), mean, log_var


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z | e) ‖ N(0, I)) per sample, (B,): ½ Σ (μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).flatten(1).sum(1)
