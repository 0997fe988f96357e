"""Discrete-time Gaussian diffusion as used by DiT (the DDPM / IDDPM / ADM process).

Forward process (Ho et al. 2020, "DDPM", eq. 4), t = 0 .. T-1 with T-1 the noisiest step:
    x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps,        ab_t = prod_{s<=t} (1 - beta_s).

The network output is read in one of two parameterisations (first C channels):
    * ``"epsilon"``: eps (DDPM eq. 11);
    * ``"v"``: v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho 2022, "Progressive
      distillation", §4 / appendix D).
With ``learn_sigma`` the next C channels hold the learned-range interpolation of
Nichol & Dhariwal 2021 ("Improved DDPM", eq. 15), trained through the variational bound.

Timestep respacing (IDDPM §4; DDIM, Song et al. 2021, §4.2) keeps a subset ``s_0 < s_1 < ...``
of the original steps and rebuilds the chain with ``beta'_k = 1 - ab[s_k] / ab[s_{k-1}]``.
Indices ``t`` handled by this class are *process* indices 0 .. num_steps-1; the network is always
fed the original index ``s_t`` as float (network time, see ``ditkit.diffusion``).

Schedules are held in float64; coefficients are cast to float32 (float64 for float64 inputs)
when they meet a tensor.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianConfig:
    num_timesteps: int = 1000  # length T of the base chain
    schedule: str = "linear"  # "linear" (DDPM, scaled by 1000/T as in IDDPM) or "cosine" (IDDPM eq. 17)
    prediction: str = "epsilon"  # first C output channels: "epsilon" or "v" (Salimans & Ho 2022)
    learn_sigma: bool = True  # next C output channels: learned-range variance (IDDPM eq. 15); DiT default
    fixed_variance: str = "large"  # used when learn_sigma=False: "large" (beta_t, ADM default) or "small"
    respacing: str | None = None  # keep a subset of steps: "250", "ddim50", "10,15,20"; None keeps all


# -- schedules ----------------------------------------------------------------------------


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """DDPM linear betas 1e-4 .. 0.02, scaled by 1000/T so any T gives a similar chain (IDDPM)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(1e-4 * scale, 0.02 * scale, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """IDDPM eq. 17: ab(t) = f(t)/f(0), f(t) = cos²((t/T + 0.008)/1.008 · π/2); beta clipped at 0.999."""

    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_timesteps
    betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


def space_timesteps(num_timesteps: int, spec: str) -> list[int]:
    """Indices of the base chain kept by a respacing string, sorted ascending.

    * ``"ddimN"``: the smallest integer stride k with ``len(range(0, T, k)) == N`` (DDIM §4.2).
    * ``"N"`` or ``"N1,N2,..."``: the chain is cut into len(counts) near-equal sections (the first
      ``T % len`` sections one step longer); a section of ``size`` steps keeps ``count`` indices at
      ``start + round(c_k)`` with stride ``(size - 1)/(count - 1)``. As in the reference
      implementation (IDDPM ``respace.py``), ``c_k`` is accumulated as ``c_{k+1} = c_k + stride``,
      not computed as ``k * stride``; the two differ for some N where ``k * stride`` lands on a
      half integer (e.g. T=1000, N=21 keeps 499, not 500). ``round`` is Python's half-to-even.
    """
    spec = spec.strip()
    if spec.startswith("ddim"):
        try:
            count = int(spec[len("ddim"):])
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}: expected 'ddimN' with an integer N") from None
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot take exactly {count} of {num_timesteps} steps with an integer stride")
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError:
        raise ValueError(f"bad respacing {spec!r}: expected 'N', 'N1,N2,...' or 'ddimN'") from None
    if any(c <= 0 for c in counts):
        raise ValueError(f"bad respacing {spec!r}: section counts must be positive")
    size_per, extra = divmod(num_timesteps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(kept))


# -- Gaussian helpers (IDDPM / ADM) -------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # tanh approximation of Φ (Page 1977), the one the ADM decoder likelihood uses
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) for data quantised to 256 bins on [-1, 1] (DDPM §3.3, decoder L_0), elementwise, nats.

    The outermost bins extend to ±inf.
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)  # (N, ...) -> (N,)


class PMeanVariance(NamedTuple):
    """Moments of p(x_{t-1} | x_t) and the x0 prediction they were built from."""

    mean: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor


# -- the process --------------------------------------------------------------------------


class GaussianDiffusion:
    """Schedule, parameterisations, posterior, training loss. Samplers live in ``samplers.py``."""

    def __init__(self, config: GaussianConfig | None = None):
        cfg = self.config = config or GaussianConfig()
        if cfg.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {cfg.schedule!r}")
        if cfg.prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction must be 'epsilon' or 'v', got {cfg.prediction!r}")
        if cfg.fixed_variance not in ("large", "small"):
            raise ValueError(f"fixed_variance must be 'large' or 'small', got {cfg.fixed_variance!r}")
        if cfg.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {cfg.num_timesteps}")

        base = linear_betas(cfg.num_timesteps) if cfg.schedule == "linear" else cosine_betas(cfg.num_timesteps)
        if cfg.respacing is None:
            self.timestep_map = tuple(range(cfg.num_timesteps))
            betas = base
        else:
            self.timestep_map = tuple(space_timesteps(cfg.num_timesteps, cfg.respacing))
            if len(self.timestep_map) < 2:
                raise ValueError(f"respacing {cfg.respacing!r} keeps a single step; a chain needs at least 2")
            base_ab = torch.cumprod(1.0 - base, dim=0)
            kept_ab = base_ab[list(self.timestep_map)]  # ab[s_k], (K,)
            prev_ab = torch.cat([kept_ab.new_ones(1), kept_ab[:-1]])  # ab[s_{k-1}], ab[s_{-1}] = 1
            betas = 1.0 - kept_ab / prev_ab  # beta'_k
        self._set_schedule(betas)

    def _set_schedule(self, betas: torch.Tensor) -> None:
        """All derived float64 arrays, shape (K,) with K = num_steps (DDPM §2, eq. 6-7)."""
        self.betas = betas
        self.num_steps = int(betas.shape[0])
        self.alphas_cumprod = ab = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        # posterior q(x_{t-1} | x_t, x0) = N(c1 x0 + c2 x_t, var), DDPM eq. 7
        self.posterior_variance = betas * (1.0 - ab_prev) / (1.0 - ab)
        # var is 0 at t = 0; the log is clipped by repeating index 1 (K >= 2 is checked above)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]]))
        self.posterior_mean_coef1 = betas * ab_prev.sqrt() / (1.0 - ab)
        self.posterior_mean_coef2 = (1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab)
        self._timestep_map = torch.tensor(self.timestep_map, dtype=torch.long)

    def respace(self, spec: str | None) -> GaussianDiffusion:
        """A new process on the same base chain with respacing ``spec`` (relative to the base, not to self)."""
        return GaussianDiffusion(dataclasses.replace(self.config, respacing=spec))

    # -- time -------------------------------------------------------------------------------
    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """Process index t (N,) -> the original step index the network is fed, float (N,)."""
        return self._timestep_map[t.long().cpu()].to(device=t.device, dtype=torch.float32)

    def sample_time(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U{0 .. num_steps-1}, shape (n,), long."""
        return torch.randint(0, self.num_steps, (n,), device=device, generator=generator)

    @staticmethod
    def extract(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] as a (N, 1, ..., 1) tensor broadcastable against ``like`` (float32, or float64 for float64)."""
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        out = arr[t.long().cpu()].to(device=like.device, dtype=dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))  # (N, 1, 1, 1)

    # -- forward process ----------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample q(x_t | x0) (DDPM eq. 4)."""
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        ab = self.alphas_cumprod
        return self.extract(ab.sqrt(), t, x0) * x0 + self.extract((1.0 - ab).sqrt(), t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x0) (DDPM eq. 6-7)."""
        c1, c2 = self.extract(self.posterior_mean_coef1, t, x_t), self.extract(self.posterior_mean_coef2, t, x_t)
        mean = c1 * x0 + c2 * x_t
        return mean, self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    # -- parameterisations --------------------------------------------------------------------
    def split_output(self, model_out: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Network output (N, C_out, ...) -> (prediction (N, C, ...), variance values (N, C, ...) or None)."""
        if self.config.learn_sigma:
            if model_out.shape[1] < 2 * channels:
                raise ValueError(f"learn_sigma needs {2 * channels} output channels, got {model_out.shape[1]}")
            return model_out[:, :channels], model_out[:, channels:2 * channels]
        return model_out[:, :channels], None

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """x0 from the network prediction (eps: DDPM eq. 15; v: x0 = sqrt(ab) x_t - sqrt(1-ab) v)."""
        ab = self.alphas_cumprod
        if self.config.prediction == "v":
            return self.extract(ab.sqrt(), t, x_t) * x_t - self.extract((1.0 - ab).sqrt(), t, x_t) * pred
        return self.extract((1.0 / ab).sqrt(), t, x_t) * x_t - self.extract((1.0 / ab - 1.0).sqrt(), t, x_t) * pred

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """eps from the network prediction (v: eps = sqrt(1-ab) x_t + sqrt(ab) v)."""
        if self.config.prediction == "v":
            ab = self.alphas_cumprod
            return self.extract((1.0 - ab).sqrt(), t, x_t) * x_t + self.extract(ab.sqrt(), t, x_t) * pred
        return pred

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Invert DDPM eq. 4 for eps given x0 (used by DDIM to re-derive eps from a possibly clipped x0)."""
        ab = self.alphas_cumprod
        return (self.extract((1.0 / ab).sqrt(), t, x_t) * x_t - x0) / self.extract((1.0 / ab - 1.0).sqrt(), t, x_t)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.config.prediction == "v":
            ab = self.alphas_cumprod
            return self.extract(ab.sqrt(), t, x0) * noise - self.extract((1.0 - ab).sqrt(), t, x0) * x0
        return noise

    def model_log_variance(self, var_values: torch.Tensor | None, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """log of the reverse-step variance.

        Learned range (IDDPM eq. 15): frac = (v + 1)/2, log var = frac log beta_t + (1 - frac) log var~_t,
        with var~ the clipped posterior log variance. Fixed: "large" is beta_t (with var~_1 at t = 0),
        "small" is var~_t (clipped).
        """
        if var_values is not None:
            min_log = self.extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = self.extract(torch.log(self.betas), t, x_t)
            frac = (var_values + 1) / 2
            return frac * max_log + (1 - frac) * min_log
        if self.config.fixed_variance == "large":
            large = torch.cat([self.posterior_variance[1:2], self.betas[1:]])
            return self.extract(torch.log(large), t, x_t).expand_as(x_t)
        return self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> PMeanVariance:
        """p(x_{t-1} | x_t) from a network output: mean = posterior mean at the predicted x0 (DDPM eq. 7)."""
        pred, var_values = self.split_output(model_out, x_t.shape[1])
        pred_x0 = self.predict_x0(x_t, t, pred)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_x0, x_t, t)
        return PMeanVariance(mean, self.model_log_variance(var_values, t, x_t), pred_x0)

    # -- training -----------------------------------------------------------------------------
    def vb_terms_bpd(self, model_out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """One term of the variational bound in bits per dim, (N,) (IDDPM eq. 4-6).

        KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0; decoder NLL -log p(x0|x1) at t = 0.
        """
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        p = self.p_mean_variance(model_out, x_t, t)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, p.mean, p.log_variance)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance)
        nll = _mean_flat(nll) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def training_losses(self, model_fn, x0: torch.Tensor, model_kwargs: dict | None = None,
                        noise: torch.Tensor | None = None, t: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-sample losses {"loss", "mse"[, "vb"]}, each (N,). ``t`` are process indices (long).

        loss = mean((target - pred)²) + vb, the hybrid objective of IDDPM §3.1 with lambda = 1 as in DiT
        (the loss type is MSE, not RESCALED_MSE). vb uses the prediction detached, so it trains only the
        variance channels.
        """
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        if t is None:
            t = self.sample_time(x0.shape[0], device=x0.device, generator=generator)
        x_t = self.q_sample(x0, t, noise)
        model_out = model_fn(x_t, self.network_time(t), **(model_kwargs or {}))
        pred, var_values = self.split_output(model_out, x0.shape[1])
        target = self.training_target(x0, noise, t)
        terms = {"mse": _mean_flat((target.float() - pred.float()) ** 2)}
        if var_values is not None:
            frozen = torch.cat([pred.detach(), var_values], dim=1)  # (N, 2C, ...)
            terms["vb"] = self.vb_terms_bpd(frozen.float(), x0.float(), x_t.float(), t)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms

    def training_loss(self, model_fn, x0: torch.Tensor, model_kwargs: dict | None = None,
                      noise: torch.Tensor | None = None, t: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample training loss, shape (N,) (same call shape as ``FlowMatching.training_loss``)."""
        return self.training_losses(model_fn, x0, model_kwargs, noise, t, generator)["loss"]
