"""Samplers: parity with the reference DiT DDIM loop, DDPM formulas, ODE convergence, validation."""

import math

import numpy as np
import pytest
import torch

from ditkit.diffusion.flow import FlowConfig, FlowMatching
from ditkit.diffusion.gaussian import GaussianConfig, GaussianDiffusion
from ditkit.diffusion.guidance import cfg
from ditkit.diffusion.samplers import (
    ddim_sample,
    ddpm_sample,
    dpm_solver_2m_sample,
    euler_sample,
    flow_time_grid,
    heun_sample,
    run_sampler,
)

# -- a toy DiT: 4 input channels, 8 output channels (eps + learned-variance half) -----------


class ToyDiT:
    """Fixed random 1x1 linear map of x plus a function of t and the label; 1001 label rows (1000 = null)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.eye(8, 4) * 0.8 + 0.2 * torch.randn(8, 4, generator=g)
        self.b_t = torch.randn(8, generator=g)
        self.emb = 0.5 * torch.randn(1001, 8, generator=g)
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append(t.clone())
        out = torch.einsum("oc,nchw->nohw", self.w, x)  # (N, 8, H, W)
        cond = torch.sin(t.float() / 150.0)[:, None] * self.b_t + self.emb[y.long()]  # (N, 8)
        out = out + cond[:, :, None, None]
        return torch.cat([out[:, :4], torch.tanh(out[:, 4:])], dim=1)  # variance values in [-1, 1]


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# -- an independent re-implementation of the reference DiT DDIM loop -------------------------
# Written from the documented formulas of facebookresearch/DiT diffusion/ (respace.py, gaussian_diffusion.py,
# models.py forward_with_cfg): numpy float64 schedules, coefficients cast to float32 per step, the respaced
# chain rebuilt from new betas, a wrapped model that maps respaced indices to original ones, the sampler's
# batch doubled [z; z] with labels [y; 1000] under guidance, and the first half kept at the end.


def _ref_spaced_schedule(stride):
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    base_ab = np.cumprod(1.0 - betas)
    use = set(range(0, 1000, stride))  # "ddimN"
    last, new_betas, timestep_map = 1.0, [], []
    for i, a in enumerate(base_ab):
        if i in use:
            new_betas.append(1 - a / last)
            last = a
            timestep_map.append(i)
    ab = np.cumprod(1.0 - np.array(new_betas))
    ab_prev = np.append(1.0, ab[:-1])
    return timestep_map, ab, ab_prev


def _ref_forward_with_cfg(model, x, t, y, scale):
    half = x[: len(x) // 2]
    out = model(torch.cat([half, half]), t, y)
    eps, rest = out[:, :3], out[:, 3:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


def _ref_ddim_loop(model, z, y, stride, cfg_scale=None):
    timestep_map, ab, ab_prev = _ref_spaced_schedule(stride)
    sqrt_recip, sqrt_recipm1 = np.sqrt(1.0 / ab), np.sqrt(1.0 / ab - 1)
    if cfg_scale is not None:
        z, y = torch.cat([z, z]), torch.cat([y, torch.full_like(y, 1000)])
        fn = lambda x, t, y: _ref_forward_with_cfg(model, x, t, y, cfg_scale)
    else:
        fn = model
    x = z
    f32 = lambda arr, t: torch.from_numpy(arr)[t].float().view(-1, 1, 1, 1)
    for i in reversed(range(len(timestep_map))):
        t = torch.tensor([i] * x.shape[0])
        out = fn(x, torch.tensor(timestep_map)[t], y)  # the wrapped model sees original indices
        eps, _ = torch.split(out, 4, dim=1)  # variance half unused by DDIM
        x0 = f32(sqrt_recip, t) * x - f32(sqrt_recipm1, t) * eps
        eps = (f32(sqrt_recip, t) * x - x0) / f32(sqrt_recipm1, t)
        a, a_prev = f32(ab, t), f32(ab_prev, t)
        sigma = 0.0 * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
        x = x0 * torch.sqrt(a_prev) + torch.sqrt(1 - a_prev - sigma**2) * eps
    return x.chunk(2)[0] if cfg_scale is not None else x


@pytest.mark.parametrize("cfg_scale", [None, 4.0])
def test_ddim_matches_reference(cfg_scale):
    model = ToyDiT()
    z = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([207, 360, 3])
    ref = _ref_ddim_loop(model, z, y, stride=20, cfg_scale=cfg_scale)
    fn = model if cfg_scale is None else cfg(model, cfg_scale, null_label=1000, channels=3)
    ours = run_sampler(fn, z, process=GaussianDiffusion(), sampler="ddim", steps=50, spacing="ddim50",
                  model_kwargs={"y": y})
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, ref) <= 1e-4
    if cfg_scale is not None:  # the quirk matters: all-channel guidance gives a different sample
        all_ch = run_sampler(cfg(model, cfg_scale, null_label=1000), z, process=GaussianDiffusion(), sampler="ddim",
                        steps=50, spacing="ddim50", model_kwargs={"y": y})
        assert _rel_err(all_ch, ref) > 1e-3


def test_ddim_feeds_original_timesteps_as_float():
    model = ToyDiT()
    run_sampler(model, torch.randn(2, 4, 2, 2), process=GaussianDiffusion(), sampler="ddim", steps=25,
           model_kwargs={"y": torch.tensor([1, 2])})
    ts = [c[0].item() for c in model.calls]
    assert model.calls[0].dtype == torch.float32 and model.calls[0].shape == (2,)
    assert ts[0] == 999.0 and ts[-1] == 0.0 and len(ts) == 25
    assert ts == sorted(ts, reverse=True)


# -- DDPM against the formulas --------------------------------------------------------------


def test_ddpm_matches_formulas():
    model, y = ToyDiT(), torch.tensor([5, 6])
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    ours = run_sampler(model, z, process=GaussianDiffusion(), sampler="ddpm", steps=10, model_kwargs={"y": y},
                  generator=torch.Generator().manual_seed(3))
    # reference ancestral step (DDPM eq. 7 + IDDPM learned range), float64 schedule of "10"
    base_ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    kept = [round(k * 999 / 9) for k in range(10)]
    ab = base_ab[kept]
    ab_prev = np.append(1.0, ab[:-1])
    betas = 1 - ab / ab_prev
    post_var = betas * (1 - ab_prev) / (1 - ab)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    gen, x = torch.Generator().manual_seed(3), z
    for i in reversed(range(10)):
        out = model(x, torch.full((2,), float(kept[i])), y)
        eps, v = out[:, :4], out[:, 4:]
        x0 = math.sqrt(1 / ab[i]) * x - math.sqrt(1 / ab[i] - 1) * eps
        mean = (betas[i] * math.sqrt(ab_prev[i]) / (1 - ab[i])) * x0 \
            + ((1 - ab_prev[i]) * math.sqrt(1 - betas[i]) / (1 - ab[i])) * x
        frac = (v + 1) / 2
        log_var = frac * math.log(betas[i]) + (1 - frac) * post_logvar[i]
        x = mean + (torch.exp(0.5 * log_var) * torch.randn(x.shape, generator=gen) if i > 0 else 0)
    assert _rel_err(ours, x) <= 1e-5


def test_ddpm_fixed_variance_clip_and_generator():
    g = GaussianDiffusion(GaussianConfig(learn_sigma=False)).respace("20")
    fn = lambda x, t: 3 * x  # a bad eps model; clipping must bound x0
    z = torch.randn(2, 3, 4, 4)
    seen = []
    a = ddpm_sample(fn, z, g, clip_denoised=True, generator=torch.Generator().manual_seed(0),
                    callback=lambda i, t, x: seen.append(i))
    b = ddpm_sample(fn, z, g, clip_denoised=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and seen == list(range(20))
    assert a.abs().max() <= 1.0 + 1e-6  # the last step returns the clipped x0 prediction


def test_ddim_eta_one_is_stochastic_and_reproducible():
    g = GaussianDiffusion().respace("ddim20")
    model, y, z = ToyDiT(), torch.tensor([1]), torch.randn(1, 4, 4, 4)
    run = lambda seed: ddim_sample(model, z, g, eta=1.0, model_kwargs={"y": y},
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))


# -- analytic models: Gaussian data N(mu, tau²) ---------------------------------------------

MU, TAU = 0.7, 0.8


def _eps_oracle():
    """Optimal eps for Gaussian data: E[eps | x_t] = s/(a² tau² + s²) (x_t - a mu); output doubled to 2C channels."""
    ab_base = GaussianDiffusion().alphas_cumprod

    def fn(x, t):
        ab = ab_base[t.long()].view(-1, 1, 1, 1).to(x.dtype)  # t = original index
        a, s = ab.sqrt(), (1 - ab).sqrt()
        return torch.cat([s / (a**2 * TAU**2 + s**2) * (x - a * MU)] * 2, dim=1)

    return fn


def _gaussian_exact(process, z):
    """Probability-flow ODE end point for Gaussian data: an affine map of the starting point."""
    ab = process.alphas_cumprod[-1].item()
    return MU + TAU * (z - math.sqrt(ab) * MU) / math.sqrt(ab * TAU**2 + 1 - ab)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_dpm_solver_2m_gaussian(prediction):
    base = GaussianDiffusion(GaussianConfig(prediction=prediction))
    eps_fn = _eps_oracle()
    if prediction == "v":  # v = sqrt(ab) eps - sqrt(1 - ab) x0, with x0 = (x - sqrt(1-ab) eps)/sqrt(ab)
        def fn(x, t):
            ab = base.alphas_cumprod[t.long()].view(-1, 1, 1, 1).float()
            eps = eps_fn(x, t)[:, :1]
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            return torch.cat([ab.sqrt() * eps - (1 - ab).sqrt() * x0] * 2, dim=1)
    else:
        fn = eps_fn
    z = torch.randn(256, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _gaussian_exact(base.respace("20"), z)
    dpm = run_sampler(fn, z, process=base, sampler="dpm++2m", steps=20)
    ddim = run_sampler(fn, z, process=base, sampler="ddim", steps=20)
    ddim_many = run_sampler(fn, z, process=base, sampler="ddim", steps=1000)
    err = lambda a: (a - exact).abs().max().item()
    assert err(dpm) < 0.2 * err(ddim)  # second order beats first order at equal calls
    assert (dpm - ddim_many).abs().max().item() < 3e-2
    assert err(ddim_many) < 1e-2


# -- flow matching with Gaussian data: exact velocity and exact ODE solution ----------------


def _flow_velocity(x, t, time_scale=1000.0):
    s = (t / time_scale).view(-1, 1, 1, 1).to(x.dtype)
    gain = (s - (1 - s) * TAU**2) / ((1 - s) ** 2 * TAU**2 + s**2)
    return -MU + gain * (x - (1 - s) * MU)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_heun_converge_on_gaussian_flow(shift):
    flow = FlowMatching()
    z = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + TAU * z
    err = lambda fn, steps: (fn(_flow_velocity, z, flow, steps=steps, shift=shift) - exact).abs().max().item()
    n = 16 if shift == 1.0 else 32  # a shifted grid spends its steps at high noise; the toy is hard at low noise
    e_n, e_2n = err(euler_sample, n), err(euler_sample, 2 * n)
    h_n, h_2n = err(heun_sample, n), err(heun_sample, 2 * n)
    assert 1.7 < e_n / e_2n < 2.3  # Euler: first order
    assert h_n / h_2n > 3.2  # Heun: second order (the final Euler step costs O(h²) only)
    assert h_n < e_n / 5  # much more accurate at equal steps
    assert err(dpm_solver_2m_sample, 2 * n) < e_2n / 4  # DPM-Solver++(2M) on the flow parameterisation


def test_flow_samplers_time_grid_calls_and_sit_time():
    grid = flow_time_grid(4, 3.0)
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0 and grid.dtype == torch.float64
    calls = []
    fn = lambda x, t, **kw: calls.append(t[0].item()) or torch.zeros_like(x)
    z = torch.randn(2, 3, 2, 2)
    heun_sample(fn, z, FlowMatching(), steps=4)
    assert len(calls) == 2 * 4 - 1 and calls[0] == 1000.0 and calls[-1] == 250.0
    calls.clear()
    euler_sample(fn, z, FlowMatching(FlowConfig(sit_time=True)), steps=4)
    assert calls == [0.0, 0.25, 0.5, 0.75]  # SiT: network time = 1 - s, unscaled
    # a learned-sigma half in a flow model's output is ignored
    out8 = lambda x, t: torch.cat([_flow_velocity(x, t), torch.full_like(x, 1e3)], dim=1)
    z1 = torch.randn(4, 1, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(run_sampler(out8, z1, process=FlowMatching(), sampler="euler", steps=5),
                               euler_sample(_flow_velocity, z1, FlowMatching(), steps=5))


def test_callback_and_progress():
    seen = []
    z = torch.randn(2, 4, 2, 2)
    run_sampler(ToyDiT(), z, process=GaussianDiffusion(), sampler="dpm++2m", steps=5,
           model_kwargs={"y": torch.tensor([0, 1])}, progress=True,
           callback=lambda i, t, x: seen.append((i, t[0].item(), x.shape)))
    assert [s[0] for s in seen] == list(range(5)) and seen[0][1] == 999.0 and seen[-1][1] == 0.0
    assert all(s[2] == z.shape for s in seen)


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(sampler="plms"),
    dict(steps=0),
    dict(steps=2.5),
    dict(sampler="euler"),  # flow sampler on a Gaussian process
    dict(sampler="ddpm", steps=50, spacing="ddim25"),  # spacing disagrees with steps
    dict(sampler="ddpm", eta=0.5),
    dict(sampler="ddim", eta=-1.0),
    dict(sampler="ddim", shift=2.0),
    dict(sampler="dpm++2m", clip_denoised=True),
])
def test_sample_rejects_bad_inputs_gaussian(kwargs):
    args = dict(process=GaussianDiffusion(), sampler="ddim", steps=10) | kwargs
    with pytest.raises(ValueError):
        run_sampler(lambda x, t: x, torch.randn(1, 4, 2, 2), **args)


@pytest.mark.parametrize("kwargs", [dict(sampler="ddpm"), dict(sampler="ddim"), dict(spacing="10"),
                                    dict(shift=0.0), dict(steps=-3)])
def test_sample_rejects_bad_inputs_flow(kwargs):
    args = dict(process=FlowMatching(), sampler="euler", steps=10) | kwargs
    with pytest.raises(ValueError):
        run_sampler(lambda x, t: x, torch.randn(1, 4, 2, 2), **args)


def test_sample_rejects_bad_noise_and_process():
    with pytest.raises(ValueError):
        run_sampler(lambda x, t: x, torch.zeros(4), process=FlowMatching(), sampler="euler", steps=2)
    with pytest.raises(ValueError):
        run_sampler(lambda x, t: x, torch.zeros(1, 4, 2, 2), process=object(), sampler="euler", steps=2)
    respaced = GaussianDiffusion(GaussianConfig(respacing="250"))
    with pytest.raises(ValueError):  # the process's own respacing keeps 250 steps
        run_sampler(lambda x, t: x, torch.zeros(1, 4, 2, 2), process=respaced, sampler="ddim", steps=50)
