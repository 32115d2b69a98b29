"""VAE-Var's per-channel λ (``lam_per_channel``, methods/vaevar/analysis.py ``obs_weight``):

    J_o = ½ Σ_n (H(x(w))_n − y_n)² / (lam · R_eff,n),   R_eff,n = σ_o,n² + s_c² v_c,

v_c = recon_sigma² ("recon_sigma") or the measured per-channel reconstruction error mse_c
("measured"). Checked: "off" is bit for bit the cost as it was; with a linear decoder the
analysis equals the Gaussian closed form with R_eff; J's gradient (Taylor); the measured
reconstruction error; bad settings and states without the measurement are refused.
"""

import dataclasses

import pytest
import torch
from method_fixtures import taylor_errors
from test_vaevar import SPEC, T, U, Z, background, context, coupled_samples, point_obs

from bench.config import ObservationSettings
from bench.observations import observe
from methods.vaevar import VAEVar, VAEVarAnalyser
from methods.vaevar.train import channel_recon_mse
from methods.vaevar.vae import VAE


class PreviousAnalyser(VAEVarAnalyser):
    """The cost function exactly as it was before lam_per_channel existed (copied verbatim),
    the reference for "off"."""

    def cost_function(self, background, obs, increment=None):
        scale = self.scale
        dtype, device = scale.dtype, scale.device
        x_b = background.x_b.to(device=device, dtype=dtype)
        obs = obs.to(device)
        y = obs.values.to(dtype)
        sigma = obs.error_std.to(dtype).clamp_min(self.method.min_obs_error)
        inv_lam = 1.0 / self.method.lam
        increment = increment or self.increment_function()

        def cost(w):
            x = x_b + scale * increment(w)
            j_o = inv_lam * 0.5 * ((obs.operator(x) - y) / sigma).square().sum()
            return 0.5 * w.square().sum() + j_o, j_o

        return cost


@pytest.fixture(scope="module")
def fitted():
    """A small VAE-Var fitted on 128 coupled samples, and the samples."""
    method = VAEVar.for_tests(latent_channels=8, widths=(16, 16), downsamplings=1, epochs=20,
                              batch_size=32, lr=3e-3, lam=1.0)
    samples = coupled_samples(128)
    return method, method.fit(context(samples)), samples


def noisy_obs(seed: int):
    g = torch.Generator().manual_seed(seed)
    x_b = torch.randn(SPEC.shape, generator=g)
    obs = observe(x_b + 0.3 * torch.randn(SPEC.shape, generator=g), SPEC,
                  ObservationSettings(density=0.3, noise_fraction=0.05), cycle=0)
    return x_b, obs


@pytest.mark.parametrize("odd_decoder", [True, False])
def test_off_is_bit_for_bit_the_previous_analysis(fitted, odd_decoder):
    method, state, _ = fitted
    x_b, obs = noisy_obs(3)
    new = dataclasses.replace(method, lam=40.0, odd_decoder=odd_decoder)
    assert new.lam_per_channel == "off"
    analyser = new.load(state, SPEC, "cpu")
    old = PreviousAnalyser(new, analyser.decoder, analyser.scale, analyser.latent_shape,
                           analyser.shape, analyser.training)
    a, b = analyser.analyse(background(x_b), obs), old.analyse(background(x_b), obs)
    assert torch.equal(a.x_a, b.x_a) and a.diagnostics == b.diagnostics
    # and the option does change the analysis (so the equality above is not vacuous)
    other = dataclasses.replace(new, lam_per_channel="recon_sigma").load(state, SPEC, "cpu")
    assert (other.analyse(background(x_b), obs).x_a - a.x_a).abs().max() > 1e-3


def linear_analyser(mode: str, scale, lam: float, recon_sigma: float = 2.0, mse=None):
    """D = identity on a latent of the state's shape: x(w) = x_b + s ⊙ w, B = diag(s_c²)
    (the odd part of a linear D is D itself), so the analysis is the Gaussian closed form."""
    method = VAEVar.for_tests(lam=lam, lam_per_channel=mode, recon_sigma=recon_sigma,
                              outer_iterations=3, inner_iterations=50)
    training = {"history": [], "train_seconds": 0.0, "n_samples": 0,
                "recon_mse_channel": mse}
    return VAEVarAnalyser(method, torch.nn.Identity(),
                          torch.as_tensor(scale, dtype=torch.float64)[:, None, None],
                          SPEC.shape, SPEC.shape, training)


@pytest.mark.parametrize("mode", ["off", "recon_sigma", "measured"])
def test_single_observations_match_the_closed_form_with_r_eff(mode):
    """One observation per channel, at separate points: Δx_n = s_c² d_n / (s_c² + lam R_eff,n),
    R_eff,n = σ_o,n² + s_c² v_c (v_c = 0 for "off"): B h (hᵀ B h + R')⁻¹ d per observation."""
    scale = torch.tensor([0.5, 1.5, 0.2], dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.2, 0.05], dtype=torch.float64)
    mse = torch.tensor([0.4, 0.1, 2.5], dtype=torch.float64)
    lam, recon_sigma = 1.7, 0.6
    points = [(Z, 2, 3), (U, 5, 9), (T, 4, 12)]
    d = torch.tensor([0.8, -1.2, 0.5], dtype=torch.float64)
    obs = point_obs(d.float(), points, sigma=1.0)
    obs = dataclasses.replace(obs, error_std=sigma.float())
    analyser = linear_analyser(mode, scale, lam, recon_sigma, mse)
    x_a = analyser.analyse(background(torch.zeros(SPEC.shape)), obs).x_a.double()
    v = {"off": torch.zeros(3, dtype=torch.float64), "recon_sigma": torch.full((3,), 0.36,
         dtype=torch.float64), "measured": mse}[mode]
    sigma = sigma.float().double()  # the observations carry float32 σ_o
    r_eff = sigma**2 + scale**2 * v
    expected = scale**2 * d / (scale**2 + lam * r_eff)
    got = torch.stack([x_a[c, i, j] for c, i, j in points])
    print(mode, "closed form", expected.numpy(), "analysis", got.numpy())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)  # L-BFGS stops near
    # λ_n = lam (1 + s_c² v_c / σ_o,n²) is what obs_weight returns
    weight = analyser.obs_weight(obs, sigma)
    torch.testing.assert_close(torch.as_tensor(weight, dtype=torch.float64).expand(3),
                               1 / (lam * (1 + scale**2 * v / sigma**2)))
    assert float(x_a.abs().sum()) == pytest.approx(float(got.abs().sum()), rel=1e-9)


@pytest.mark.parametrize("mode", ["recon_sigma", "measured"])
def test_taylor_gradient_with_per_channel_lambda(fitted, mode):
    method, state, _ = fitted
    x_b, obs = noisy_obs(1)
    # float64 throughout: a Taylor check of the code, not of float32 round-off
    analyser = dataclasses.replace(method, lam_per_channel=mode,
                                   analysis_dtype="float64").load(state, SPEC, "cpu")
    assert not isinstance(analyser.obs_weight(obs, obs.error_std.double()), float)
    cost = analyser.cost_function(background(x_b), obs)
    g = torch.Generator().manual_seed(5)
    shape = (1, *analyser.latent_shape)
    errors = taylor_errors(cost, shape, g)
    print(mode, "|ratio − 1| for ε = 1e-1 … 1e-6:", ", ".join(f"{e:.1e}" for e in errors))
    assert all(b < 0.2 * a for a, b in zip(errors[1:-1], errors[2:], strict=True))
    assert errors[-1] < 1e-4


def test_fit_measures_the_per_channel_reconstruction_error(fitted):
    """recon_mse_channel = mean (D(μ(e)) − e)² per channel over the samples, e = ε / s,
    computed here independently (whole set at once, no batches)."""
    method, state, samples = fitted
    vae = VAE(SPEC.shape, method.latent_channels, method.widths, method.downsamplings)
    vae.load_state_dict(state["vae"])
    e = samples / state["scale"].float()[:, None, None]
    with torch.no_grad():
        recon = vae.decoder(vae.encoder(e)[0])
    expected = (recon - e).double().square().mean(dim=(0, 2, 3))
    print("per-channel recon mse", state["recon_mse_channel"].numpy())
    torch.testing.assert_close(state["recon_mse_channel"], expected, rtol=1e-5, atol=0)
    assert torch.allclose(channel_recon_mse(vae, samples, scale=state["scale"], batch_size=7),
                          expected, rtol=1e-5)
    assert (state["recon_mse_channel"] > 0).all()


@pytest.mark.parametrize("value", ["on", "", "Recon_Sigma"])
def test_bad_values_are_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="lam_per_channel.*one of"):
        VAEVar.for_tests(lam_per_channel=value)


def test_measured_without_the_measurement_is_refused(fitted):
    method, state, _ = fitted
    old = {k: v for k, v in state.items() if k != "recon_mse_channel"}  # a state cached before
    for mode in ("off", "recon_sigma"):
        dataclasses.replace(method, lam_per_channel=mode).load(old, SPEC, "cpu")
    with pytest.raises(ValueError, match="lam_per_channel = 'measured'.*recon_mse_channel"):
        dataclasses.replace(method, lam_per_channel="measured").load(old, SPEC, "cpu")


def test_lam_per_channel_is_an_analysis_field():
    assert VAEVar(lam_per_channel="measured").cache_config() == VAEVar().cache_config()
    assert type(VAEVar())(**VAEVar(lam_per_channel="recon_sigma").config()) == \
        VAEVar(lam_per_channel="recon_sigma")
