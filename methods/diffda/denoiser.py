"""The DiffDA denoiser: a diffusers UNet2DModel conditioned on the forecast, with grid padding.

    ε̂ = ε_θ(z_t, t, x̂):   z_t (B, C, H, W) the noisy scaled increment at diffusion step t,
                            x̂   (B, C, H, W) the normalised forecast (the condition),
                            ε̂   (B, C, H, W) the predicted noise (ε-prediction).

Huang et al. (DiffDA, ICML 2024) condition the denoiser by concatenating the forecast to the
noisy sample along channels; we do the same with a plain diffusers ``UNet2DModel``
(in_channels = 2C, out_channels = C), which takes the timestep t ∈ [0, 1000) itself.

Output parametrisation (``alphas_cumprod`` given; the default of DiffDA in this suite): the
network F_θ predicts ε through a skip connection,

    ε̂ = √(1 − ᾱ_t) z_t + √ᾱ_t F_θ(z_t, t, x̂),    so that    x̂_0 = √ᾱ_t z_t − √(1 − ᾱ_t) F_θ.

√(1 − ᾱ_t) z_t is E[ε | z_t] for a unit-variance Gaussian z_0, so F_θ learns the correction (EDM's
preconditioning, Karras et al. 2022, written for ε). The model is still an ε-predictor trained
with the same ε loss; only the function class changes. Why: with a plain ε-network the implied
x̂_0 = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t amplifies the network's ε errors by 1/√ᾱ_t (≈ 150 at
t = 990); a briefly trained network's errors then push the early samples off the training
distribution and the chain diverges (seen on small grids: sample rms 6–13 for a unit-variance
target). With the skip the implied x̂_0 stays bounded at high noise.

Padding, so that any (C, H, W) grid works and longitude stays periodic:
- longitude: the UNet's convolutions zero-pad, which would cut the globe at 0°/360°. The input
  is padded *circularly* by ``lon_pad`` columns on each side (plus whatever more is needed to
  reach a multiple of 2**(levels − 1)) and the output cropped back. This is exact for the
  first convolutions only: the deepest levels see the padded width, not a periodic domain, so
  it is an approximation there (the mid-block attention sees the whole padded field anyway).
- latitude: padded by reflection about the first/last row (zero padding where the grid has too
  few rows to reflect) up to a multiple of 2**(levels − 1), then cropped. Not physical across
  the poles; it only avoids a hard edge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel


def padded_size(size: int, extra: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ size + extra."""
    return -(-(size + extra) // multiple) * multiple


class ConditionalDenoiser(torch.nn.Module):
    """ε_θ(z_t, t, x̂) on a (C, H, W) grid; a UNet2DModel inside on the padded grid.

    Args:
        shape: (C, H, W) of the states.
        block_out_channels: UNet widths per level, finest first (levels − 1 down-samplings).
        layers_per_block: ResNet layers per UNet block.
        lon_pad: columns of circular padding added on each side in longitude (≥ 0).
        alphas_cumprod: ᾱ_t (1000,) of the diffusion for the skip parametrisation (see the
            module docstring); None: the UNet's output is ε̂ itself (plain ε-network).
    """

    def __init__(self, shape: tuple[int, int, int], block_out_channels: tuple[int, ...],
                 layers_per_block: int = 1, lon_pad: int = 4,
                 alphas_cumprod: torch.Tensor | None = None):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        levels = len(block_out_channels)
        multiple = 2 ** (levels - 1)
        self.shape = (c, h, w)
        # rows: reflection padding split north/south; columns: circular, split west/east
        self.h_padded = padded_size(h, 0, multiple)
        self.w_padded = padded_size(w, 2 * lon_pad, multiple)
        self.pad_north = (self.h_padded - h) // 2
        self.pad_west = (self.w_padded - w) // 2
        # GroupNorm needs groups dividing every width: the largest divisor ≤ 32
        groups = math.gcd(*block_out_channels)
        groups = max(g for g in range(1, min(groups, 32) + 1) if groups % g == 0)
        self.unet = UNet2DModel(
            sample_size=(self.h_padded, self.w_padded),
            in_channels=2 * c,
            out_channels=c,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=groups,
            attention_head_dim=min(8, block_out_channels[-1]),
        )
        # longitude indices of the padded grid: circular wrap
        columns = torch.arange(-self.pad_west, self.w_padded - self.pad_west) % w
        self.register_buffer("_columns", columns, persistent=False)
        self.skip = alphas_cumprod is not None
        if self.skip:
            self.register_buffer("_alphas_cumprod", alphas_cumprod.float().clone(),
                                 persistent=False)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) -> (B, K, H_pad, W_pad): circular in longitude, reflect in latitude."""
        x = x.index_select(-1, self._columns)
        north, south = self.pad_north, self.h_padded - self.shape[1] - self.pad_north
        if north or south:
            mode = "reflect" if max(north, south) < self.shape[1] else "constant"
            x = F.pad(x, (0, 0, north, south), mode=mode)
        return x

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H_pad, W_pad) -> (B, K, H, W): the inverse of ``pad`` on the original grid."""
        _, h, w = self.shape
        return x[..., self.pad_north:self.pad_north + h, self.pad_west:self.pad_west + w]

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | int,
                x_hat: torch.Tensor) -> torch.Tensor:
        """ε̂ (B, C, H, W) from z_t (B, C, H, W), t (B,) or scalar, x̂ (B, C, H, W)."""
        if z_t.shape != x_hat.shape or tuple(z_t.shape[1:]) != self.shape:
            raise ValueError(f"z_t {tuple(z_t.shape)} and x_hat {tuple(x_hat.shape)} must both "
                             f"be (B, {', '.join(map(str, self.shape))})")
        inputs = self.pad(torch.cat([z_t, x_hat], dim=1))
        out = self.crop(self.unet(inputs, t).sample)
        if not self.skip:
            return out
        a = self._alphas_cumprod[torch.as_tensor(t, device=z_t.device).long()]
        a = a.reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * z_t + a.sqrt() * out  # ε̂ = √(1−ᾱ_t) z_t + √ᾱ_t F_θ
