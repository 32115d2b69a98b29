"""A DiffDA denoiser on the built-in emulator's architecture that can start from the trained
emulator's weights (``DiffDA.denoiser = "emulator_backbone"``), as DiffDA fine-tunes its
denoiser from GraphCast's forecast weights.

The emulator (bench/forecast/emulator.py) is f(x_{t−6h}, x_t) = D_f(gelu(R_K ∘ … ∘ R_1 ∘
E([x_{t−6h}, x_t, sin φ, cos φ]))): a 3×3 sphere-padded encoder E, K residual blocks
R_k(h) = h + conv2(gelu(conv1(gelu(h)))) and a 1×1 decoder. The denoiser keeps E and the R_k
(same shapes, same parameter names: ``start_from`` copies them) and adds what diffusion needs:

    h_0 = E([x̂, x̂, sin φ, cos φ]) + E_z(z_t)                       x̂: the forecast (condition)
    h_k = R_k(h_{k−1} ⊙ (1 + a_k(t)) + b_k(t))                     (a_k, b_k): FiLM of τ(t)
    F_θ = D(gelu(h_K)),   ε̂ = √(1 − ᾱ_t) z_t + √ᾱ_t F_θ             (denoiser.py's skip form)

The emulator reads two frames; the denoiser has one condition frame, x̂, given in both slots (E
then sees a state without tendency). E_z, the FiLM output layer and D start at zero, so an
untrained denoiser's hidden features are the emulator's own for x̂ and ε̂ = √(1 − ᾱ_t) z_t,
the exact E[ε | z_t] for a unit Gaussian z_0: training starts from the forecast model's
features and from the Gaussian answer. τ(t) is a sinusoidal embedding of the timestep
t ∈ [0, 1000) (as diffusers' UNet's) through a two-layer MLP.

Measured (built-in world, 15 validation days, results/cycled-training/): at 1 % it diverges like
the UNet, from the emulator's weights (cycle 27) or from scratch (23; UNet 30); at 5 % all
three give 0.640–0.642. Starting from forecast weights does not help where the observation
injection is what fails (method.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.common.sphere import SphereConv, SphereResidualBlock

#: frames the emulator's encoder reads (FengWu's contract: t − 6 h and t)
EMULATOR_HISTORY = 2
#: dimension of the sinusoidal timestep features
TIME_FEATURES = 64


def emulator_weights(model) -> dict[str, torch.Tensor]:
    """The built-in emulator's state_dict (CPU) from the run's forecast model ``model``;
    ValueError for a model without one (FengWu's ONNX graph)."""
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"DiffDA.emulator_init needs the built-in emulator as the forecast model "
            f"(--model emulator); this run's is {type(model).__name__}, which has no weights to "
            f"start from: set diffda.emulator_init=false to train the backbone from scratch")
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def timestep_features(t: torch.Tensor, dim: int = TIME_FEATURES) -> torch.Tensor:
    """(B, dim) sin/cos features of the timesteps t (B,) at geometric frequencies."""
    half = dim // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angle = t.float()[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class EmulatorBackboneDenoiser(nn.Module):
    """ε_θ(z_t, t, x̂) on a (C, H, W) grid with the emulator's encoder and residual blocks.

    Args:
        shape: (C, H, W) of the states.
        lat_deg: (H,) latitudes in degrees (the emulator's sin φ, cos φ features); None:
            H equally spaced rows from north to south (shape-only uses: costs, memory).
        width, blocks: the emulator's hidden width and number of residual blocks
            (EmulatorConfig's, 64 and 4 by default; must match to ``start_from`` it).
        alphas_cumprod: ᾱ_t (1000,) for the skip parametrisation; None: F_θ is ε̂ itself.
    """

    def __init__(self, shape: tuple[int, int, int], lat_deg, width: int = 64, blocks: int = 4,
                 alphas_cumprod: torch.Tensor | None = None):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.shape = (c, h, w)
        if lat_deg is None:
            lat_deg = 90 - (np.arange(h) + 0.5) * 180.0 / h
        phi = torch.deg2rad(torch.as_tensor(np.array(lat_deg), dtype=torch.float32))
        if phi.shape != (h,):
            raise ValueError(f"lat_deg has {tuple(phi.shape)} latitudes for a grid of {h} rows")
        features = torch.stack([phi.sin(), phi.cos()])[:, :, None].expand(2, h, w)
        self.register_buffer("latitude_features", features[None].clone(), persistent=False)
        self.encode = SphereConv(EMULATOR_HISTORY * c + 2, width)
        self.encode_z = SphereConv(c, width)
        self.blocks = nn.Sequential(*[SphereResidualBlock(width) for _ in range(blocks)])
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FEATURES, 2 * width), nn.SiLU())
        self.film = nn.Linear(2 * width, 2 * width * blocks)
        self.decode = nn.Conv2d(width, c, kernel_size=1)
        for layer in (self.encode_z, self.film, self.decode):  # start: the emulator + the skip
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.skip = alphas_cumprod is not None
        if self.skip:
            self.register_buffer("_alphas_cumprod", alphas_cumprod.float().clone(),
                                 persistent=False)

    def start_from(self, emulator_state: dict[str, torch.Tensor]) -> None:
        """Copy the emulator's encoder and residual blocks (its state_dict's ``encode.*`` and
        ``blocks.*``). ValueError naming the first parameter whose shape differs."""
        own = self.state_dict()
        wanted = [k for k in own if k.startswith(("encode.", "blocks."))]
        for key in wanted:
            if key not in emulator_state:
                raise ValueError(f"the emulator has no parameter {key!r}: it has "
                                 f"{sum(k.startswith('blocks.') for k in emulator_state) // 4} "
                                 f"residual blocks, the denoiser {len(self.blocks)}")
            if tuple(emulator_state[key].shape) != tuple(own[key].shape):
                raise ValueError(f"the emulator's {key} is {tuple(emulator_state[key].shape)}, "
                                 f"the denoiser's {tuple(own[key].shape)}: set backbone_width "
                                 f"and backbone_blocks to the emulator's")
        self.load_state_dict({k: emulator_state[k] for k in wanted}, strict=False)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | int,
                x_hat: torch.Tensor) -> torch.Tensor:
        """ε̂ (B, C, H, W) from z_t (B, C, H, W), t (B,) or scalar, x̂ (B, C, H, W)."""
        if z_t.shape != x_hat.shape or tuple(z_t.shape[1:]) != self.shape:
            raise ValueError(f"z_t {tuple(z_t.shape)} and x_hat {tuple(x_hat.shape)} must both "
                             f"be (B, {', '.join(map(str, self.shape))})")
        b = z_t.shape[0]
        t = torch.as_tensor(t, device=z_t.device).long().reshape(-1).expand(b)
        condition = torch.cat([x_hat, x_hat, self.latitude_features.expand(b, -1, -1, -1)], 1)
        h = self.encode(condition) + self.encode_z(z_t)
        film = self.film(self.time_mlp(timestep_features(t))).view(b, len(self.blocks), 2, -1)
        for k, block in enumerate(self.blocks):
            scale, shift = film[:, k, 0, :, None, None], film[:, k, 1, :, None, None]
            h = block(h * (1 + scale) + shift)
        out = self.decode(F.gelu(h))
        if not self.skip:
            return out
        a = self._alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * z_t + a.sqrt() * out  # ε̂ = √(1−ᾱ_t) z_t + √ᾱ_t F_θ
