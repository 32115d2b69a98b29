"""The exact denoiser of a spectrally diagonal Gaussian prior, in place of DiffDA's learned ε_θ.

DiffDA diffuses the scaled increment z_0 = (x − x_b) / s (normalised units divided by the
per-channel training std s; train.py) with z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε, ε ~ N(0, I) white on
the grid (sampler.py). If z_0 ~ N(μ, Σ) is Gaussian, the ε-prediction that minimises the
training loss is the posterior mean, in closed form:

    E[ε | z_t] = √(1 − ᾱ_t) (ᾱ_t Σ + (1 − ᾱ_t) I)⁻¹ (z_t − √ᾱ_t μ)              (1)

(Cov(ε, z_t) = √(1 − ᾱ_t) I, Cov(z_t) = ᾱ_t Σ + (1 − ᾱ_t) I), and E[z_0 | z_t] =
(z_t − √(1 − ᾱ_t) E[ε | z_t]) / √ᾱ_t. In an orthonormal basis where Σ = diag(d) this is the
issue's per-coefficient formula √(1 − ᾱ_t)(ζ_t − √ᾱ_t μ̃) / (ᾱ_t d + 1 − ᾱ_t).

The prior (what is exact). Per channel c, with S⁻¹ the inverse scalar SHT of the grid
(torch-harmonics, norm "ortho": f = Σ_l a_l0 Y_l0 + 2 Re Σ_{m>0} a_lm Y_lm, Y orthonormal on the
unit sphere), coefficients a_l0 ~ N(0, λ_{c,l}) real and Re a_lm, Im a_lm ~ N(0, λ_{c,l}/2)
(m > 0) independent — the isotropic field of angular power λ_{c,l} — plus white grid noise of
variance ν_c (the "nugget": what the truncation cannot represent), and a mean μ_c(φ):

    z_0,c = μ_c + S⁻¹ a_c + √ν_c ξ,    Σ_c = S⁻¹ diag(var a_c) S⁻ᵀ + ν_c I   (channels apart)

S⁻¹ is not orthonormal for the grid's Euclidean inner product (the Gauss weights are not
uniform, and T31 has 1024 real coefficients for 2048 points), so (1) is not diagonal in (l, m).
It is exact through the longitudinal structure instead: Σ_c is invariant under shifts in
longitude, so the orthonormal real DFT in longitude (rfft, norm "ortho") splits it into one
H × H block A_{c,m} per zonal wavenumber m, shared by the cos and sin parts (no cos–sin cross
covariance: Re and Im of a_lm are independent with equal variance):

    A_{c,m} = Re E[F_m F_mᴴ]
            = Σ_l var(Re a_lm) k_lm^re k_lm^reᴴ + var(Im a_lm) k_lm^im k_lm^imᴴ + ν_c I

with k_lm^re = rfft(S⁻¹ e_lm)[:, m] (H,) and k_lm^im that of i e_lm, computed here by applying
S⁻¹ to unit coefficients (no convention assumed). With A_{c,m} = V D Vᵀ (float64 eigh), (1) is

    ε̂ = irfft_m( V g(D) Vᵀ rfft(z_t − √ᾱ_t μ) ),     g(d) = √(1 − ᾱ_t) / (ᾱ_t d + 1 − ᾱ_t)

exact for the Gaussian above on the grid, up to float64 round-off (tests/test_diffda_exact.py
checks it against dense Gaussian conditioning). ``fit_prior`` estimates μ (zonal and sample
mean per channel and row), λ_{c,l} = mean over samples of (|a_l0|² + 2 Σ_{m>0} |a_lm|²) / (2l+1)
of the centred samples less the nugget's share, and ν_c from what S⁻¹S does not reproduce
(unbiased moment estimates, ``fit_prior``), from the training increments ε_θ learns from.
The condition x̂ is ignored: the prior is the same for every forecast (x ~ N(x_b + s μ, B)).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.common.spectral import Transforms


def prior_blocks(spectrum: torch.Tensor, nugget: torch.Tensor, transforms: Transforms
                 ) -> torch.Tensor:
    """A_{c,m} (C, W//2 + 1, H, H) float64: the covariance of the prior in each zonal
    wavenumber's latitude block (module docstring), from λ_{c,l} (C, lmax) and ν_c (C,)."""
    lmax, mmax, w = transforms.lmax, transforms.mmax, transforms.nlon
    lam = torch.as_tensor(spectrum, dtype=torch.float64, device=transforms.device)
    nu = torch.as_tensor(nugget, dtype=torch.float64, device=transforms.device)
    units = torch.zeros(2, lmax, mmax, lmax, mmax, dtype=torch.complex128,
                        device=transforms.device)
    ls, ms = torch.meshgrid(torch.arange(lmax), torch.arange(mmax), indexing="ij")
    units[0, ls, ms, ls, ms] = 1.0  # e_lm
    units[1, ls, ms, ls, ms] = 1.0j  # i e_lm
    fields = transforms.isht(units.reshape(2 * lmax * mmax, lmax, mmax))  # (2·L·M, H, W)
    k = torch.fft.rfft(fields, dim=-1, norm="ortho").reshape(2, lmax, mmax, -1, w // 2 + 1)
    k = k[:, :, torch.arange(mmax), :, torch.arange(mmax)]  # (M, 2, L, H): k_lm at its m
    outer = (k[..., :, None] * k[..., None, :].conj()).real  # (M, 2, L, H, H)
    # var(Re a_l0) = λ, var(Im a_l0) = 0 (ignored by S⁻¹); var(Re a_lm) = var(Im a_lm) = λ/2
    share = torch.full((mmax, 2), 0.5, dtype=torch.float64, device=lam.device)
    share[0] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    blocks = torch.einsum("mp,cl,mplhk->cmhk", share, lam, outer)
    h = transforms.nlat
    full = torch.zeros(lam.shape[0], w // 2 + 1, h, h, dtype=torch.float64, device=lam.device)
    full[:, :mmax] = blocks
    return full + nu[:, None, None, None] * torch.eye(h, dtype=torch.float64, device=lam.device)


def fit_prior(samples: torch.Tensor, transforms: Transforms, batch: int = 64,
              scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The spectrally diagonal Gaussian fitted to ``samples`` (N, C, H, W) (scaled increments;
    with ``scale`` s (C,), to samples / s, scaled a batch at a time): moment estimates,
    unbiased for that model. Two passes over ``samples``, ``batch`` rows at a time (a memory
    map is read, never copied whole).

    With P = S⁻¹S (the projection on the resolved harmonics; oblique for the Euclidean inner
    product) and z the centred samples, for z = S⁻¹a + √ν ξ:
        E‖(I − P) z‖² = ν ‖I − P‖_F²         ->  ν̂ = mean ‖(I − P) z‖² / ‖I − P‖_F²
        E[power_l(a)] = (2l+1) λ_l + ν k_l    ->  λ̂_l = (mean power_l(a) − ν̂ k_l) / (2l+1)
    with power_l(a) = |a_l0|² + 2 Σ_{m>0} |a_lm|² and k_l = Σ_p power_l(S e_p) over the grid's
    unit vectors e_p. S and P commute with shifts in longitude, so both sums are W times the
    sums over the H unit vectors of one meridian (exact, and O(H) transforms).

    Returns (CPU, float64): "mean" μ (C, H) (zonal and sample mean), "spectrum" λ (C, lmax)
    (clamped at 0), "nugget" ν (C,), "n_samples".
    """
    n, c, h, w = samples.shape
    inverse = (torch.ones(c) if scale is None else 1.0 / scale).double()[None, :, None, None]

    def scaled(k: int) -> torch.Tensor:  # rows k … k + batch − 1 of samples / s, float64
        return samples[k:k + batch].to(torch.float64) * inverse

    mean = sum(scaled(k).sum(dim=(0, 3)) for k in range(0, n, batch)) / (n * w)  # (C, H)
    power = torch.zeros(c, transforms.lmax, dtype=torch.float64)
    residual = torch.zeros(c, dtype=torch.float64)
    for k in range(0, n, batch):
        z = (scaled(k) - mean[:, :, None]).to(transforms.device)
        a = transforms.sht(z)  # (b, C, L, M)
        power += _degree_power(a).sum(dim=0).cpu()
        residual += (z - transforms.isht(a)).square().sum(dim=(2, 3)).sum(dim=0).cpu()
    units = torch.zeros(h, h, w, dtype=torch.float64, device=transforms.device)
    units[torch.arange(h), torch.arange(h), 0] = 1.0  # e_p on the meridian λ = 0
    a = transforms.sht(units)
    leak = w * _degree_power(a).sum(dim=0).cpu()  # k_l (L,)
    frobenius = w * float((units - transforms.isht(a)).square().sum())  # ‖I − P‖_F²
    nugget = residual / (n * frobenius) if frobenius > 1e-9 * h * w else torch.zeros(c)
    degrees = 2.0 * torch.arange(transforms.lmax, dtype=torch.float64) + 1.0
    spectrum = ((power / n - nugget[:, None] * leak) / degrees).clamp_min(0.0)
    return {"mean": mean, "spectrum": spectrum, "nugget": nugget.double(), "n_samples": int(n)}


def _degree_power(a: torch.Tensor) -> torch.Tensor:
    """|a_l0|² + 2 Σ_{m>0} |a_lm|²: (..., L, M) complex -> (..., L)."""
    c2 = a.abs().square()
    return c2[..., 0] + 2.0 * c2[..., 1:].sum(dim=-1)


class ExactGaussianDenoiser(nn.Module):
    """ε̂(z_t, t, x̂) = E[ε | z_t] of the prior N(μ, Σ) (module docstring, eq. 1); ε_θ's
    signature, x̂ ignored.

    Args:
        mean: μ (C, H) per channel and latitude row (zonally constant), scaled units.
        spectrum: λ_{c,l} (C, lmax) per channel and total wavenumber.
        nugget: ν_c (C,) white grid-point variance added to Σ_c.
        transforms: the grid's SHTs (``Transforms.for_spec``).
        alphas_cumprod: ᾱ_t (1000,) of the diffusion (sampler.make_scheduler()).
    """

    def __init__(self, mean: torch.Tensor, spectrum: torch.Tensor, nugget: torch.Tensor,
                 transforms: Transforms, alphas_cumprod: torch.Tensor):
        super().__init__()
        c, h, w = spectrum.shape[0], transforms.nlat, transforms.nlon
        self.shape = (c, h, w)
        d, v = torch.linalg.eigh(prior_blocks(spectrum, nugget, transforms.to("cpu")))
        self.register_buffer("eigvals", d.clamp_min(0.0))  # (C, M', H): A = V diag(d) Vᵀ
        self.register_buffer("eigvecs", v)  # (C, M', H, H), columns the eigenvectors
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("alphas", torch.as_tensor(alphas_cumprod, dtype=torch.float64))

    def posterior_gain(self, t: torch.Tensor) -> torch.Tensor:
        """g(d) = √(1 − ᾱ_t) / (ᾱ_t d + 1 − ᾱ_t), (B, C, M', H) for t (B,)."""
        a = self.alphas[t.long()].reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() / (a * self.eigvals[None] + 1 - a)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | int,
                x_hat: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂ (B, C, H, W) from z_t (B, C, H, W) and t (B,) or a scalar, in z_t's dtype."""
        if tuple(z_t.shape[1:]) != self.shape:
            raise ValueError(f"z_t {tuple(z_t.shape)} must be (B, {self.shape})")
        t = torch.as_tensor(t, device=z_t.device).reshape(-1).expand(z_t.shape[0])
        a = self.alphas[t.long()].reshape(-1, 1, 1, 1)
        zeta = z_t.double() - a.sqrt() * self.mean[None, :, :, None]  # z_t − √ᾱ_t μ
        return self._filter(zeta, self.posterior_gain(t)).to(z_t.dtype)

    def _filter(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """irfft(V diag(gain) Vᵀ rfft(x)) per (c, m): x (B, C, H, W) float64, gain (B, C, M', H)
        -> (B, C, H, W). Real and imaginary parts of F_m go through V as real matrices."""
        b, c, h, w = x.shape
        f = torch.fft.rfft(x, dim=-1, norm="ortho")  # (B, C, H, M')
        parts = torch.view_as_real(f).permute(1, 3, 2, 0, 4).reshape(c, -1, h, 2 * b)
        coef = self.eigvecs.transpose(-1, -2) @ parts  # Vᵀ F_m: (C, M', H, 2B)
        coef = coef * gain.permute(1, 2, 3, 0).repeat_interleave(2, dim=-1)
        out = (self.eigvecs @ coef).reshape(c, -1, h, b, 2).permute(3, 0, 2, 1, 4)
        return torch.fft.irfft(torch.view_as_complex(out.contiguous()), n=w, dim=-1,
                               norm="ortho")

    def posterior_mean(self, z_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """E[z_0 | z_t] = (z_t − √(1 − ᾱ_t) E[ε | z_t]) / √ᾱ_t, (B, C, H, W)."""
        t = torch.as_tensor(t, device=z_t.device).reshape(-1).expand(z_t.shape[0])
        a = self.alphas[t.long()].reshape(-1, 1, 1, 1).to(z_t.dtype)
        return (z_t - (1 - a).sqrt() * self(z_t, t)) / a.sqrt()

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` exact draws z_0 = μ + Σ^½ ξ ~ N(μ, Σ), (count, C, H, W) float64 (tests)."""
        c, h, w = self.shape
        xi = torch.randn(count, c, h, w, generator=generator, dtype=torch.float64)
        root = self.eigvals.sqrt()[None].expand(count, -1, -1, -1)  # Σ^½ = V diag(√d) Vᵀ
        return self._filter(xi, root) + self.mean[None, :, :, None]


# ------------------------------------------------------------------ DiffDA's fit/load hooks
def fitted_entry(increments: torch.Tensor, scale: torch.Tensor, spec, device="cpu",
                 sign: float = 1.0) -> dict:
    """One lead's fitted state for ``DiffDA(denoiser="exact_gaussian")``: the prior of
    ``fit_prior`` on z_0 = sign · increments / s (increments (N, C, H, W) truth − forecast,
    normalised, or their negatives with ``sign`` = −1; may be a memory map, read in batches;
    s (C,)), with s. No network, no losses."""
    prior = fit_prior(increments, Transforms.for_spec(spec, device), scale=sign * scale)
    return {"prior": prior, "scale": scale, "losses": [], "n_pairs": prior["n_samples"]}


def untrained_entry(spec, scale: float) -> dict:
    """A prior of the right size for timing: μ = 0, ν = 0, λ_l ∝ (l + 1)⁻² scaled to unit
    point variance (Σ_l λ_l (2l + 1) / 4π = 1) in every channel; s = ``scale``."""
    c = spec.shape[0]
    lmax = Transforms.for_spec(spec).lmax
    ls = torch.arange(lmax, dtype=torch.float64)
    lam = (ls + 1.0) ** -2
    lam = lam / (lam * (2 * ls + 1) / (4 * torch.pi)).sum()
    prior = {"mean": torch.zeros(c, spec.shape[1], dtype=torch.float64),
             "spectrum": lam.expand(c, lmax).clone(), "nugget": torch.zeros(c,
                                                                           dtype=torch.float64),
             "n_samples": 0}
    return {"prior": prior, "scale": torch.full((c,), float(scale)), "losses": [], "n_pairs": 0}


def load_entry(entry: dict, spec, device, alphas_cumprod: torch.Tensor) -> ExactGaussianDenoiser:
    """The ExactGaussianDenoiser of one lead's entry, on ``device``."""
    prior = entry["prior"]
    return ExactGaussianDenoiser(prior["mean"], torch.as_tensor(prior["spectrum"]),
                                 torch.as_tensor(prior["nugget"]), Transforms.for_spec(spec),
                                 alphas_cumprod).to(device)


def model_bytes(spec) -> float:
    """Bytes of one lead's eigen-decomposition (float64 V and d)."""
    c, h, w = spec.shape
    return 8.0 * c * (w // 2 + 1) * (h * h + h)
