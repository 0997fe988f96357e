"""Gaussian diffusion: schedules, respacing, parameterisations, posterior and training loss."""

import math

import numpy as np
import pytest
import torch

from ditkit.diffusion.gaussian import (
    GaussianConfig,
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
    space_timesteps,
)


def _t(n, value):
    return torch.full((n,), value, dtype=torch.long)


# -- schedules ------------------------------------------------------------------------------


def test_linear_schedule_closed_form():
    g = GaussianDiffusion()
    ab = g.alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    assert ab[0].item() == pytest.approx(0.9999, rel=1e-12)
    assert ab[499].item() == pytest.approx(0.0785872, rel=1e-6)
    assert ab[999].item() == pytest.approx(4.0358e-5, rel=1e-4)
    # independent numpy computation of the same chain
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    np.testing.assert_allclose(ab.numpy(), np.cumprod(1 - betas), rtol=1e-12)
    # 1000/T scaling: T = 500 doubles the betas
    np.testing.assert_allclose(GaussianDiffusion(GaussianConfig(num_timesteps=500)).betas.numpy(),
                               np.linspace(2e-4, 0.04, 500), rtol=1e-12)


def test_cosine_schedule():
    g = GaussianDiffusion(GaussianConfig(schedule="cosine"))
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert g.alphas_cumprod[0].item() == pytest.approx(f(1 / 1000) / f(0), rel=1e-12)
    assert g.alphas_cumprod[499].item() == pytest.approx(f(0.5) / f(0), rel=1e-9)
    assert (g.betas <= 0.999).all() and (g.betas > 0).all()
    assert (g.alphas_cumprod[1:] < g.alphas_cumprod[:-1]).all()


def test_posterior_log_variance_clipped_and_coefficients():
    g = GaussianDiffusion()
    lv = g.posterior_log_variance_clipped
    assert g.posterior_variance[0].item() == 0.0
    assert lv[0].item() == lv[1].item() == pytest.approx(math.log(g.posterior_variance[1].item()))
    # DDPM eq. 7 at t = 10
    b, ab, ab_prev = g.betas[10].item(), g.alphas_cumprod[10].item(), g.alphas_cumprod[9].item()
    x0, xt = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean, log_var = g.q_posterior(x0, xt, _t(2, 10))
    expect = b * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab) * xt
    torch.testing.assert_close(mean, expect)
    torch.testing.assert_close(log_var, torch.full_like(xt, math.log(b * (1 - ab_prev) / (1 - ab))))


# -- respacing ------------------------------------------------------------------------------


def test_space_timesteps_single_section():
    kept = space_timesteps(1000, "250")
    assert len(kept) == 250 and kept[:4] == [0, 4, 8, 12] and kept[-2:] == [995, 999]
    assert set(kept) == {round(k * 999 / 249) for k in range(250)}
    # the reference accumulates the fractional stride; at N = 21 this keeps 499 where round(10 * 49.95) = 500
    assert 499 in space_timesteps(1000, "21") and 500 not in space_timesteps(1000, "21")
    assert space_timesteps(1000, "1000") == list(range(1000))


def test_space_timesteps_ddim_and_sections():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    kept = space_timesteps(300, "10,15,20")
    assert len(kept) == 45
    assert kept[:10] == list(range(0, 100, 11))  # 100 steps into 10: stride 99/9 = 11
    assert kept[10] == 100 and kept[-1] == 299
    # sections of unequal size: 10 % 3 = 1 -> sizes 4, 3, 3
    assert space_timesteps(10, "2,2,2") == [0, 3, 4, 6, 7, 9]


@pytest.mark.parametrize("spec", ["abc", "ddim", "ddim999", "2000", "0", "10,x"])
def test_space_timesteps_bad_specs(spec):
    with pytest.raises(ValueError):
        space_timesteps(1000, spec)


def test_respaced_process():
    base = GaussianDiffusion()
    g = base.respace("ddim50")
    assert g.num_steps == 50 and g.timestep_map == tuple(range(0, 1000, 20))
    np.testing.assert_allclose(g.alphas_cumprod.numpy(), base.alphas_cumprod[::20].numpy(), rtol=1e-12)
    assert g.betas[3].item() == pytest.approx(1 - base.alphas_cumprod[60].item() / base.alphas_cumprod[40].item())
    # the model is fed the original index as float
    assert g.network_time(torch.tensor([0, 1, 49])).tolist() == [0.0, 20.0, 980.0]
    assert g.network_time(torch.tensor([0])).dtype == torch.float32
    assert g.respace(None).num_steps == 1000
    with pytest.raises(ValueError):
        base.respace("1")


def test_config_validation():
    for bad in (dict(schedule="quad"), dict(prediction="x0"), dict(fixed_variance="mid"), dict(num_timesteps=1)):
        with pytest.raises(ValueError):
            GaussianDiffusion(GaussianConfig(**bad))


# -- parameterisations ----------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_predictions_round_trip(prediction):
    g = GaussianDiffusion(GaussianConfig(prediction=prediction, respacing="250"))
    x0, eps = torch.randn(3, 4, 4, 4, dtype=torch.float64), torch.randn(3, 4, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 100, 249])
    x_t = g.q_sample(x0, t, eps)
    ab = g.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    target = g.training_target(x0, eps, t)
    if prediction == "v":  # Salimans & Ho: v = sqrt(ab) eps - sqrt(1 - ab) x0
        torch.testing.assert_close(target, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    torch.testing.assert_close(g.predict_x0(x_t, t, target), x0)
    torch.testing.assert_close(g.predict_eps(x_t, t, target), eps)
    torch.testing.assert_close(g.eps_from_x0(x_t, t, x0), eps)


def test_learned_range_variance():
    g = GaussianDiffusion()
    x = torch.zeros(2, 4, 2, 2)
    t = torch.tensor([0, 500])
    hi = g.model_log_variance(torch.ones_like(x), t, x)
    lo = g.model_log_variance(-torch.ones_like(x), t, x)
    mid = g.model_log_variance(torch.zeros_like(x), t, x)
    torch.testing.assert_close(hi[:, 0, 0, 0], torch.log(g.betas[t]).float())
    torch.testing.assert_close(lo[:, 0, 0, 0], g.posterior_log_variance_clipped[t].float())
    torch.testing.assert_close(mid, (hi + lo) / 2)
    fixed = GaussianDiffusion(GaussianConfig(learn_sigma=False))
    large = fixed.model_log_variance(None, t, x)[:, 0, 0, 0]
    torch.testing.assert_close(large, torch.log(torch.stack([fixed.posterior_variance[1], fixed.betas[500]])).float())


def test_split_output_channel_check():
    g = GaussianDiffusion()
    with pytest.raises(ValueError):
        g.split_output(torch.zeros(1, 4, 2, 2), 4)


# -- likelihood helpers ---------------------------------------------------------------------


def test_normal_kl_and_discretized_likelihood():
    m = torch.randn(5)
    assert normal_kl(m, torch.zeros(5), m, torch.zeros(5)).abs().max() < 1e-7
    assert normal_kl(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1)).item() == pytest.approx(0.5)
    # the 256 bins telescope: probabilities sum to one for any mean and scale
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, -2.0), (0.3, -4.0), (-0.9, 0.5)]:
        ll = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale))
        assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


# -- training loss --------------------------------------------------------------------------


def test_training_loss_mse_and_detached_vb():
    g = GaussianDiffusion(GaussianConfig(respacing="100"))
    x0 = torch.rand(4, 3, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 50, 99])
    var_values = torch.zeros(4, 3, 4, 4, requires_grad=True)
    eps_out = noise.clone().requires_grad_(True)  # a perfect eps prediction
    seen = {}

    def model_fn(x, t_net, y):
        seen["t"], seen["y"] = t_net, y
        return torch.cat([eps_out, var_values], dim=1)

    terms = g.training_losses(model_fn, x0, model_kwargs={"y": 7}, noise=noise, t=t)
    assert seen["t"].tolist() == [g.timestep_map[i] for i in t.tolist()] and seen["y"] == 7
    assert terms["mse"].abs().max().item() < 1e-10
    assert terms["loss"].shape == (4,) and torch.isfinite(terms["vb"]).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    terms["loss"].sum().backward()
    assert eps_out.grad.abs().max().item() == 0.0  # vb never reaches the mean channels
    assert var_values.grad.abs().max().item() > 0.0
    # t > 0: KL in bits between two Gaussians with equal means -> depends on the variances only
    mean_true, lv_true = g.q_posterior(x0, g.q_sample(x0, t, noise), t)
    lv_model = g.model_log_variance(torch.zeros_like(x0), t, x0)
    kl = 0.5 * (-1 + lv_model - lv_true + torch.exp(lv_true - lv_model)).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(terms["vb"][1:], kl[1:], rtol=1e-4, atol=1e-6)


def test_training_loss_v_prediction_and_fixed_variance():
    g = GaussianDiffusion(GaussianConfig(prediction="v", learn_sigma=False))
    x0, noise, t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([5, 400, 999])
    target = g.training_target(x0, noise, t)
    terms = g.training_losses(lambda x, tn: target, x0, noise=noise, t=t)
    assert set(terms) == {"loss", "mse"} and terms["loss"].abs().max().item() < 1e-10
    loss = g.training_loss(lambda x, tn: torch.zeros_like(x), x0, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and (loss > 0).all()
