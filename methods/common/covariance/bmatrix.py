"""The control-variable transform U (B = U Uᵀ) of 3DVar and its adjoint, operator by operator.

    x − x_b = δx = U w = U_p U_v S U_h w        (applied right to left)

    w    (K, n_coef)   control vector: per vertical mode k, real spectral coefficients
    U_h  (K, n_coef) -> (K, H, W)   horizontal correlation: a spectral filter σ_k,l then the
                       inverse scalar SHT; unit point variance (Σ_l σ_k,l² (2l+1)/4π = 1)
    S    (K, H, W) -> (K, H, W)     standard deviation of each mode per latitude row
    U_v  (K, H, W) -> (K_cv, H, W)  vertical EOFs: each group's levels = D_g E_g · (its modes)
    U_p  (K_cv, H, W) -> (C, H, W)  balance: winds from ψ̃, χ̃; z, t (msl, t2m) = β ψ̃ + unbalanced

S acts on grid fields after U_h (not first, as the issue's U = U_p U_v U_h S writes it) because
its standard deviations depend on latitude; B = U_p U_v S C S U_vᵀ U_pᵀ with C = U_h U_hᵀ the
usual factorisation. All maps are linear and batched over leading dimensions; float64.

Adjoints are all hand-coded: S, U_v and the regression/identity parts of U_p here, U_h's
synthesis and the winds in legendre.py (autograd's backward through torch-harmonics cost 4–5×
the forward); tests check each with the dot-product test.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from bench.state import StateSpec
from methods.common.covariance.legendre import Synthesis, Winds
from methods.common.spectral import Transforms


# --------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class Group:
    """A control variable with ``size`` levels, rows [offset, offset + size) of the cv fields.

    ``channels`` are the output channels it feeds level by level: for "psi"/"chi" the u channel
    of each level (``v_channels`` the v channel), for scalar groups the channel itself.
    """

    name: str
    channels: tuple[int, ...]
    offset: int
    v_channels: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return len(self.channels)

    @property
    def rows(self) -> slice:
        return slice(self.offset, self.offset + self.size)


Pairs = list[tuple[str, str]]


def layout(spec: StateSpec) -> tuple[list[Group], Pairs, Pairs]:
    """Control variables of a spec: any subset of channels works.

    Returns:
        groups: in cv order.
        wind_pairs: [(psi group, chi group)] whose winds come from the vector SHT: upper-air
            levels where both u and v exist ("psi", "chi"), and (u10, v10) ("psi_sfc",
            "chi_sfc"). A lone u or v (its partner absent) is univariate.
        regressions: [(target, predictor)]: z and t levels on ψ̃ levels, msl and t2m on ψ̃_sfc.
    """
    index = {name: i for i, name in enumerate(spec.names)}
    by_var: dict[str, dict[int, int]] = {}
    for i, ch in enumerate(spec.channels):
        if ch.level is not None:
            by_var.setdefault(ch.variable, {})[ch.level] = i
    u, v = by_var.get("u", {}), by_var.get("v", {})
    wind_levels = sorted(set(u) & set(v))
    specs: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    if wind_levels:
        us, vs = tuple(u[lv] for lv in wind_levels), tuple(v[lv] for lv in wind_levels)
        specs += [("psi", us, vs), ("chi", us, vs)]
    for var, lone in (("u", u), ("v", v)):
        levels = sorted(set(lone) - set(wind_levels))
        if levels:
            specs.append((var, tuple(lone[lv] for lv in levels), ()))
    for var in ("z", "t", "q"):
        if var in by_var:
            specs.append((var, tuple(by_var[var][lv] for lv in sorted(by_var[var])), ()))
    surface_winds = "u10" in index and "v10" in index
    if surface_winds:
        specs += [("psi_sfc", (index["u10"],), (index["v10"],)),
                  ("chi_sfc", (index["u10"],), (index["v10"],))]
    for name in ("u10", "v10", "msl", "t2m"):
        if name in index and not (surface_winds and name in ("u10", "v10")):
            specs.append((name, (index[name],), ()))
    groups, offset = [], 0
    for name, channels, v_channels in specs:
        groups.append(Group(name, channels, offset, v_channels))
        offset += len(channels)
    names = {g.name for g in groups}
    pairs = [(p, c) for p, c in (("psi", "chi"), ("psi_sfc", "chi_sfc")) if p in names]
    regressions = [(t, p) for t, p in (("z", "psi"), ("t", "psi"), ("msl", "psi_sfc"),
                                        ("t2m", "psi_sfc")) if t in names and p in names]
    return groups, pairs, regressions


# --------------------------------------------------------------------------------- B
class BMatrix:
    """U and Uᵀ from estimated statistics (see statistics.py for what each tensor means).

    Args:
        spec: the world's StateSpec (channels, grid, normalisation std for the winds).
        stats: dict with "sigma" (K, lmax) spectral amplitudes σ_k,l, "std" (K, H) S,
            "eofs" {group: (n_g, k_g)} D_g E_g (level std × EOFs), "betas" {target:
            (H, n_t, n_p)} β.
        device: where to compute.
    """

    def __init__(self, spec: StateSpec, stats: dict, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.groups, self.pairs, self.regressions = layout(spec)
        self.by_name = {g.name: g for g in self.groups}
        c, self.nlat, self.nlon = spec.shape
        self.n_channels = c
        self.transforms = Transforms(spec.grid, self.nlat, self.nlon, self.device)
        self.synthesis, self.wind_map = Synthesis(self.transforms), Winds(self.transforms)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.eofs = {k: e.to(**f64) for k, e in stats["eofs"].items()}
        self.betas = {k: b.to(**f64) for k, b in stats["betas"].items()}
        self.std = stats["std"].to(**f64)  # (K, H)
        sigma = stats["sigma"].to(**f64)  # (K, lmax)
        self.n_modes = sum(self.eofs[g.name].shape[1] for g in self.groups)
        self.n_cv = sum(g.size for g in self.groups)
        # std of the wind channels (physical m/s per normalised unit), for the output scaling
        self.channel_std = torch.tensor(np.array(spec.std), **f64)

        # U_v as one block-diagonal (K_cv, K) matrix: group g's levels from its own modes
        self.vertical = torch.zeros(self.n_cv, self.n_modes, **f64)
        k = 0
        for g in self.groups:
            e = self.eofs[g.name]
            self.vertical[g.rows, k:k + e.shape[1]] = e
            k += e.shape[1]
        # U_p's non-wind part, kept sparse (a dense (H, C, K_cv) matrix cost 4 ms per product):
        # control rows that are their own channel, and the β blocks of the regressions
        winds = ("psi", "chi", "psi_sfc", "chi_sfc")
        own = [(ch, row) for g in self.groups if g.name not in winds
               for ch, row in zip(g.channels, range(g.rows.start, g.rows.stop), strict=True)]
        long = dict(dtype=torch.long, device=self.device)
        self.own_channels = torch.tensor([ch for ch, _ in own], **long)
        self.own_rows = torch.tensor([row for _, row in own], **long)
        self.regression_blocks = [
            (torch.tensor(self.by_name[t].channels, **long),
             torch.arange(self.by_name[p].rows.start, self.by_name[p].rows.stop, **long),
             self.betas[t])  # (H, n_target, n_predictor)
            for t, p in self.regressions]
        # the winds of all (ψ̃, χ̃) pairs in one vector SHT: rows of ψ̃ and χ̃, and (u..., v...)
        psi_rows, chi_rows, u_ch, v_ch = [], [], [], []
        for psi_name, chi_name in self.pairs:
            pg, cg = self.by_name[psi_name], self.by_name[chi_name]
            psi_rows += list(range(pg.rows.start, pg.rows.stop))
            chi_rows += list(range(cg.rows.start, cg.rows.stop))
            u_ch += list(pg.channels)
            v_ch += list(pg.v_channels)
        channels = torch.tensor(u_ch + v_ch, dtype=torch.long, device=self.device)
        self.wind_rows = (psi_rows, chi_rows, channels) if psi_rows else ()
        self.wind_cv_rows = torch.tensor(psi_rows + chi_rows, dtype=torch.long, device=self.device)
        self.wind_scale = (1.0 / self.channel_std[channels])[:, None, None] if psi_rows else None

        # control coefficient slots in the flattened (lmax, mmax, re/im) coefficient array:
        # real parts for m ≤ l, imaginary parts for 0 < m ≤ l (m = 0 and Nyquist are real).
        lmax, mmax = self.transforms.lmax, self.transforms.mmax
        ll, mm, part = torch.meshgrid(torch.arange(lmax), torch.arange(mmax), torch.arange(2),
                                      indexing="ij")
        real_only = (mm == 0) | ((self.nlon % 2 == 0) & (mm == self.nlon // 2))
        valid = (mm <= ll) & ((part == 0) | ~real_only)
        self.slots = valid.reshape(-1).nonzero()[:, 0].to(self.device)  # (n_coef,)
        # a_lm = σ_l w for m = 0; a_lm = σ_l (w_re + i w_im)/√2 for m > 0, so that white w gives
        # E|a_lm|² = σ_l² for every m and a point variance Σ_l σ_l² (2l + 1) / 4π.
        scale = torch.where(real_only, 1.0, 1.0 / math.sqrt(2.0)).reshape(-1)[self.slots.cpu()]
        self.amp = sigma[:, ll.reshape(-1)[self.slots.cpu()]] * scale.to(**f64)  # (K, n_coef)
        self.n_coef = self.slots.numel()
        self.shape_w = (self.n_modes, self.n_coef)

    # ----------------------------------------------------------------------------- U_h
    def u_h(self, w: torch.Tensor) -> torch.Tensor:
        """(..., K, n_coef) -> (..., K, H, W): spectral filter then inverse SHT (unit variance)."""
        lmax, mmax = self.transforms.lmax, self.transforms.mmax
        flat = w.new_zeros(*w.shape[:-1], lmax * mmax * 2)
        flat[..., self.slots] = w * self.amp
        return self.synthesis(flat.reshape(*w.shape[:-1], lmax, mmax, 2))

    def u_h_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """U_hᵀ: (..., K, H, W) -> (..., K, n_coef): the synthesis' transpose, then the filter."""
        flat = self.synthesis.adjoint(g).reshape(*g.shape[:-2], -1)
        return flat[..., self.slots] * self.amp

    # ----------------------------------------------------------------------------- S
    def s(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K, H, W) times the std of each mode and latitude row. Self-adjoint (diagonal)."""
        return x * self.std[:, :, None]

    s_adjoint = s

    # ----------------------------------------------------------------------------- U_v
    def u_v(self, a: torch.Tensor) -> torch.Tensor:
        """(..., K, H, W) mode amplitudes -> (..., K_cv, H, W) levels: X_g = D_g E_g A_g."""
        return torch.einsum("ik,...khw->...ihw", self.vertical, a)

    def u_v_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """U_vᵀ: (..., K_cv, H, W) -> (..., K, H, W): A_g = (D_g E_g)ᵀ X_g."""
        return torch.einsum("ik,...ihw->...khw", self.vertical, x)

    # ----------------------------------------------------------------------------- U_p
    def u_p(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K_cv, H, W) control fields -> (..., C, H, W) normalised increments.

        δx = M(φ) x + winds(ψ̃, χ̃) / std_channel, with M(φ) (C × K_cv per latitude row) holding
        1 where a control field is its channel (q, lone u/v, the unbalanced z, t, msl, t2m) and
        β(φ) where a target is regressed on ψ̃ (target = β ψ̃ + unbalanced); M is applied as
        those two sparse parts, never as a dense matrix.
        """
        out = x.new_zeros(*x.shape[:-3], self.n_channels, self.nlat, self.nlon)
        out = out.index_copy(-3, self.own_channels, x.index_select(-3, self.own_rows))
        for channels, rows, beta in self.regression_blocks:  # target += β(φ) ψ̃
            out = out.index_add(-3, channels, torch.einsum(
                "hij,...jhw->...ihw", beta, x.index_select(-3, rows)))
        return out + self._winds(x) if self.wind_rows else out

    def _winds(self, x: torch.Tensor) -> torch.Tensor:
        """The wind channels from all (ψ̃, χ̃) pairs as a (..., C, H, W) field (0 elsewhere)."""
        psi_rows, chi_rows, channels = self.wind_rows
        u, v = self.wind_map(x[..., psi_rows, :, :], x[..., chi_rows, :, :])
        uv = torch.cat([u, v], dim=-3) * self.wind_scale  # normalised: / std of the channel
        return x.new_zeros(*x.shape[:-3], self.n_channels, self.nlat, self.nlon).index_add(
            -3, channels, uv)

    def u_p_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """U_pᵀ: (..., C, H, W) -> (..., K_cv, H, W): M(φ)ᵀ y + the winds' transpose."""
        x = y.new_zeros(*y.shape[:-3], self.n_cv, self.nlat, self.nlon)
        x = x.index_copy(-3, self.own_rows, y.index_select(-3, self.own_channels))
        for channels, rows, beta in self.regression_blocks:  # ψ̃ += β(φ)ᵀ target
            x = x.index_add(-3, rows, torch.einsum(
                "hij,...ihw->...jhw", beta, y.index_select(-3, channels)))
        if self.wind_rows:
            psi_rows, chi_rows, channels = self.wind_rows
            uv = y.index_select(-3, channels) * self.wind_scale
            n = len(psi_rows)
            g_psi, g_chi = self.wind_map.adjoint(uv[..., :n, :, :], uv[..., n:, :, :])
            x = x.index_add(-3, self.wind_cv_rows, torch.cat([g_psi, g_chi], dim=-3))
        return x

    # ----------------------------------------------------------------------------- U
    def u(self, w: torch.Tensor) -> torch.Tensor:
        """δx = U w = U_p U_v S U_h w: (..., K, n_coef) -> (..., C, H, W)."""
        return self.u_p(self.u_v(self.s(self.u_h(w))))

    def u_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Uᵀ y = U_hᵀ S U_vᵀ U_pᵀ y: (..., C, H, W) -> (..., K, n_coef)."""
        return self.u_h_adjoint(self.s_adjoint(self.u_v_adjoint(self.u_p_adjoint(y))))


