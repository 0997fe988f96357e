"""Samplers: plain loops over a ``model_fn(x, t, **model_kwargs)`` callable.

``t`` handed to ``model_fn`` is always network time, a float tensor of shape (N,) (see
``ditkit.diffusion``). Guidance, caching or compilation are wrappers around ``model_fn``.

Gaussian diffusion (``GaussianDiffusion``; the process passed in is already respaced, one model
call per kept step, noisiest first; output = ε or v in the first C channels, a learned-variance
half, if any, in the next C):
    * ``ddpm_sample``: ancestral sampling, Ho et al. 2020 Alg. 2 with the IDDPM learned variance.
    * ``ddim_sample``: Song et al. 2021 ("DDIM") eq. 12 with eta; the variance half is ignored.
    * ``dpm_solver_2m_sample``: DPM-Solver++(2M), Lu et al. 2022 ("DPM-Solver++"), Alg. 2.
Flow matching (``FlowMatching``; s from 1 = noise to 0 = data; output = velocity in the first C
channels):
    * ``euler_sample``, ``heun_sample`` (Heun's 2nd-order method, last step Euler, as in
      Karras et al. 2022, "EDM", Alg. 1) and ``dpm_solver_2m_sample`` (alpha_s = 1 - s, sigma_s = s).

``run_sampler(...)`` dispatches by name and validates its inputs (`ditkit.sample` builds on it: guidance,
batches, seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ditkit.diffusion.flow import FlowMatching, shift_time
from ditkit.diffusion.gaussian import GaussianDiffusion
from ditkit.diffusion.noise import Generators, randn

ModelFn = Callable[..., torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step_index, network time (N,), x after the step)

GAUSSIAN_SAMPLERS = ("ddpm", "ddim", "dpm++2m")
FLOW_SAMPLERS = ("euler", "heun", "dpm++2m")
SAMPLERS = ("ddpm", "ddim", "dpm++2m", "euler", "heun")


def _steps(n: int, progress: bool):
    if progress:
        from tqdm.auto import tqdm

        return tqdm(range(n))
    return range(n)


def _randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    return randn(x.shape, generator, x.device, x.dtype)  # one generator per row: each sample's own stream


def flow_time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps + 1`` process times from 1 (noise) to 0 (data), uniform then SD3-shifted, float64."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


# -- Gaussian diffusion --------------------------------------------------------------------


@torch.no_grad()
def ddpm_sample(model_fn: ModelFn, noise: torch.Tensor, process: GaussianDiffusion, *,
                model_kwargs: dict | None = None, clip_denoised: bool = False,
                generator: Generators = None, progress: bool = False,
                callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling: x_{t-1} = mu(x_t, t) + 1[t > 0] exp(½ log var) z (DDPM Alg. 2).

    Noise z is drawn (with ``generator``) once per step with t > 0, none at the last step.
    """
    kwargs = model_kwargs or {}
    x = noise
    n = x.shape[0]
    for i in _steps(process.num_steps, progress):
        t = torch.full((n,), process.num_steps - 1 - i, dtype=torch.long, device=x.device)  # process index
        t_net = process.network_time(t)  # (N,) original index as float
        p = process.p_mean_variance(model_fn(x, t_net, **kwargs), x, t, clip_denoised=clip_denoised)
        x = p.mean
        if i < process.num_steps - 1:
            x = x + torch.exp(0.5 * p.log_variance) * _randn_like(x, generator)
        if callback is not None:
            callback(i, t_net, x)
    return x


@torch.no_grad()
def ddim_sample(model_fn: ModelFn, noise: torch.Tensor, process: GaussianDiffusion, *, eta: float = 0.0,
                model_kwargs: dict | None = None, clip_denoised: bool = False,
                generator: Generators = None, progress: bool = False,
                callback: Callback | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12 and 16), stepping between consecutive kept steps.

    x0 from the model; eps re-derived from x0 (so clipping is honoured);
    sigma = eta sqrt((1 - ab_prev)/(1 - ab)) sqrt(1 - ab/ab_prev);
    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma²) eps + 1[t > 0] sigma z.
    The last step lands on ab_prev = 1, i.e. returns the x0 prediction.
    """
    kwargs = model_kwargs or {}
    x = noise
    n = x.shape[0]
    for i in _steps(process.num_steps, progress):
        t = torch.full((n,), process.num_steps - 1 - i, dtype=torch.long, device=x.device)
        t_net = process.network_time(t)
        pred, _ = process.split_output(model_fn(x, t_net, **kwargs), x.shape[1])
        x0 = process.predict_x0(x, t, pred)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        eps = process.eps_from_x0(x, t, x0)
        ab = process.extract(process.alphas_cumprod, t, x)  # (N, 1, 1, 1)
        ab_prev = process.extract(process.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        x = x0 * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
        if eta > 0 and i < process.num_steps - 1:
            x = x + sigma * _randn_like(x, generator)
        if callback is not None:
            callback(i, t_net, x)
    return x


# -- DPM-Solver++(2M), for both processes ----------------------------------------------------


def _log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma), with the endpoints alpha = 0 -> -inf and sigma = 0 -> +inf."""
    if alpha == 0.0:
        return -math.inf
    if sigma == 0.0:
        return math.inf
    return math.log(alpha) - math.log(sigma)


@torch.no_grad()
def dpm_solver_2m_sample(model_fn: ModelFn, noise: torch.Tensor, process: GaussianDiffusion | FlowMatching, *,
                         steps: int | None = None, shift: float = 1.0, model_kwargs: dict | None = None,
                         progress: bool = False, callback: Callback | None = None,
                         lower_order_final: int | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep data prediction (Lu et al. 2022, Alg. 2), ``steps`` model calls.

    For x_t = alpha_t x0 + sigma_t eps and lambda = log(alpha/sigma), h_i = lambda_i - lambda_{i-1}:
        D_i = x0_i + (x0_i - x0_{i-1}) / (2 r_i),   r_i = h_{i-1} / h_i   (first step: D_i = x0_i)
        x_i = (sigma_i / sigma_{i-1}) x_{i-1} + (alpha_i - sigma_i alpha_{i-1} / sigma_{i-1}) D_i
    (the second coefficient is -alpha_i (e^{-h_i} - 1), written so that alpha = 0 at the start of a
    flow is finite). The first step is first order (no history) and so is the final one: the grid
    ends at sigma = 0 (pure data), where r = 0, and the final step returns the last x0 prediction.

    Gaussian: the grid is the respaced ``process`` (``steps`` must be None or ``process.num_steps``),
    ending at ab = 1 like DDIM, i.e. after the kept step 0 comes a "denoise to zero" step. The step
    *into* step 0 is also taken first order (Lu et al.'s "lower order final" rule): on uniform-t
    grids it spans a much longer log-SNR interval than the step before it (h_i / h_{i-1} ≈ 3-5 for
    the linear schedule), and the 2M extrapolation overshoots there.
    Flow: ``flow_time_grid(steps, shift)``, alpha = 1 - s, sigma = s. The grid starts at s = 1 where
    lambda = -inf, so h_1 = inf and the second step is first order too (r = inf).

    ``lower_order_final`` (>= 1) overrides how many final steps are first order: None keeps the rule above
    (2 on a Gaussian grid, 1 on a flow grid); 1 is diffusers' ``DPMSolverMultistepScheduler`` with
    ``final_sigmas_type="zero"`` (tests/test_scheduler_parity.py).
    """
    kwargs = model_kwargs or {}
    x = noise
    n, c = x.shape[:2]
    if isinstance(process, GaussianDiffusion):
        if steps is not None and steps != process.num_steps:
            raise ValueError(f"steps={steps} but the respaced process has {process.num_steps} steps")
        steps = process.num_steps
        ab = process.alphas_cumprod.flip(0).tolist() + [1.0]  # noisiest first, ends at ab = 1
        alphas = [math.sqrt(a) for a in ab]
        sigmas = [math.sqrt(1.0 - a) for a in ab]
        first_order_from = steps - 2  # the step into kept step 0, and the denoise-to-zero step
    else:
        if steps is None:
            raise ValueError("dpm_solver_2m_sample on a flow process needs steps")
        grid = flow_time_grid(steps, shift).tolist()
        alphas = [1.0 - s for s in grid]
        sigmas = grid
        first_order_from = steps - 1  # the step into s = 0
    if lower_order_final is not None:
        if lower_order_final < 1:
            raise ValueError(f"lower_order_final must be >= 1 (the step into sigma = 0 is first order), got {lower_order_final}")
        first_order_from = steps - lower_order_final

    def denoise(x: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(process, GaussianDiffusion):
            t = torch.full((n,), steps - 1 - i, dtype=torch.long, device=x.device)
            t_net = process.network_time(t)
            pred, _ = process.split_output(model_fn(x, t_net, **kwargs), c)
            return process.predict_x0(x, t, pred), t_net
        v, t_net = _velocity(model_fn, process, x, sigmas[i], kwargs)
        return x - sigmas[i] * v, t_net  # x0 = x_s - s v (FlowMatching.predict_x0 with a Python-float s)

    x0_prev, h_prev = None, None
    for i in _steps(steps, progress):
        x0, t_net = denoise(x, i)
        a_s, s_s, a_t, s_t = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        h = _log_snr(a_t, s_t) - _log_snr(a_s, s_s)
        if x0_prev is None or i >= first_order_from:
            d = x0  # first order (DPM-Solver++(1) = DDIM)
        else:
            d = x0 + (h / (2.0 * h_prev)) * (x0 - x0_prev)  # 1/(2 r_i) = h_i / (2 h_{i-1}); 0 if h_{i-1} = inf
        x = (s_t / s_s) * x + (a_t - s_t * a_s / s_s) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, t_net, x)
    return x


# -- flow matching --------------------------------------------------------------------------


def _velocity(model_fn: ModelFn, process: FlowMatching, x: torch.Tensor, s: float, kwargs: dict):
    s_vec = torch.full((x.shape[0],), s, dtype=torch.float32, device=x.device)  # (N,)
    t_net = process.network_time(s_vec)
    return process.velocity(model_fn(x, t_net, **kwargs), x.shape[1]), t_net


@torch.no_grad()
def euler_sample(model_fn: ModelFn, noise: torch.Tensor, process: FlowMatching, *, steps: int, shift: float = 1.0,
                 model_kwargs: dict | None = None, progress: bool = False,
                 callback: Callback | None = None) -> torch.Tensor:
    """Euler on dx/ds = v(x, s) from s = 1 to s = 0: x_{i+1} = x_i + (s_{i+1} - s_i) v(x_i, s_i). ``steps`` calls."""
    kwargs = model_kwargs or {}
    grid = flow_time_grid(steps, shift).tolist()
    x = noise
    for i in _steps(steps, progress):
        v, t_net = _velocity(model_fn, process, x, grid[i], kwargs)
        x = x + (grid[i + 1] - grid[i]) * v
        if callback is not None:
            callback(i, t_net, x)
    return x


@torch.no_grad()
def heun_sample(model_fn: ModelFn, noise: torch.Tensor, process: FlowMatching, *, steps: int, shift: float = 1.0,
                model_kwargs: dict | None = None, progress: bool = False,
                callback: Callback | None = None) -> torch.Tensor:
    """Heun's method (explicit trapezoid; EDM Alg. 1) with a plain Euler last step: 2·steps - 1 calls."""
    kwargs = model_kwargs or {}
    grid = flow_time_grid(steps, shift).tolist()
    x = noise
    for i in _steps(steps, progress):
        ds = grid[i + 1] - grid[i]
        v, t_net = _velocity(model_fn, process, x, grid[i], kwargs)
        x_euler = x + ds * v
        if i < steps - 1:
            v_next, _ = _velocity(model_fn, process, x_euler, grid[i + 1], kwargs)
            x = x + ds * 0.5 * (v + v_next)
        else:
            x = x_euler
        if callback is not None:
            callback(i, t_net, x)
    return x


# -- dispatch -------------------------------------------------------------------------------


def run_sampler(model_fn: ModelFn, noise: torch.Tensor, *, process: GaussianDiffusion | FlowMatching, sampler: str,
           steps: int, model_kwargs: dict | None = None, generator: Generators = None,
           progress: bool = False, callback: Callback | None = None, eta: float = 0.0,
           clip_denoised: bool = False, shift: float = 1.0, spacing: str | None = None) -> torch.Tensor:
    """Draw samples starting from ``noise`` (N, C, ...) with the named sampler.

    Args:
        sampler: "ddpm", "ddim", "dpm++2m" (Gaussian); "euler", "heun", "dpm++2m" (flow).
        steps: integration steps. Gaussian: number of kept timesteps = model calls. Flow: intervals
            of the time grid (Euler and DPM++ make ``steps`` calls, Heun ``2·steps - 1``).
        spacing: Gaussian only; the respacing string applied to the base chain (e.g. "ddim50",
            "10,15,20"). Defaults to the process's own ``config.respacing``, else ``str(steps)``
            (DiT's ``create_diffusion(str(steps))``). It must keep exactly ``steps`` timesteps.
        eta: DDIM noise scale (0 = deterministic). clip_denoised: clamp x0 to [-1, 1] (DDPM/DDIM).
        shift: flow only; SD3 time shift of the grid (1 = uniform).
        generator: random source for DDPM / DDIM with eta > 0 (or one generator per row of noise).
        callback: ``callback(step_index, t, x)`` after every step, t = network time (N,).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(noise, torch.Tensor) or noise.ndim < 2 or not noise.is_floating_point():
        raise ValueError("noise must be a floating-point tensor of shape (N, C, ...)")
    if eta < 0 or (eta != 0 and sampler != "ddim"):
        raise ValueError(f"eta={eta} is only valid (and must be >= 0) for the 'ddim' sampler")
    if clip_denoised and sampler not in ("ddpm", "ddim"):
        raise ValueError("clip_denoised is only supported by the 'ddpm' and 'ddim' samplers")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    common = dict(model_kwargs=model_kwargs, progress=progress, callback=callback)

    if isinstance(process, GaussianDiffusion):
        if sampler not in GAUSSIAN_SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is for flow matching; Gaussian diffusion takes {GAUSSIAN_SAMPLERS}")
        if shift != 1.0:
            raise ValueError("shift applies to flow matching only")
        spec = spacing if spacing is not None else (process.config.respacing or str(steps))
        spaced = process.respace(spec)
        if spaced.num_steps != steps:
            raise ValueError(f"respacing {spec!r} keeps {spaced.num_steps} timesteps but steps={steps}")
        if sampler == "ddpm":
            return ddpm_sample(model_fn, noise, spaced, clip_denoised=clip_denoised, generator=generator, **common)
        if sampler == "ddim":
            return ddim_sample(model_fn, noise, spaced, eta=eta, clip_denoised=clip_denoised, generator=generator,
                               **common)
        return dpm_solver_2m_sample(model_fn, noise, spaced, **common)

    if isinstance(process, FlowMatching):
        if sampler not in FLOW_SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is for Gaussian diffusion; flow matching takes {FLOW_SAMPLERS}")
        if spacing is not None:
            raise ValueError("spacing applies to Gaussian diffusion only; use shift for flow matching")
        fn = {"euler": euler_sample, "heun": heun_sample, "dpm++2m": dpm_solver_2m_sample}[sampler]
        return fn(model_fn, noise, process, steps=steps, shift=shift, **common)

    raise ValueError(f"process must be a GaussianDiffusion or FlowMatching, got {type(process).__name__}")
