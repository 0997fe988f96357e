"""Flow matching with the linear (rectified-flow) interpolant.

Process time ``s`` in [0, 1], s = 0 data, s = 1 noise (see ``ditkit.diffusion``):
    x_s = (1 - s) * x0 + s * eps,        target velocity v = dx_s/ds = eps - x0.

References: Lipman et al. 2023 (flow matching); Liu et al. 2023 (rectified flow);
SiT (Ma et al. 2024) for the linear interpolant with a DiT; SD3 (Esser et al. 2024, §3.1)
for logit-normal timestep sampling and the resolution-dependent timestep shift
``s' = shift * s / (1 + (shift - 1) * s)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlowConfig:
    time_sampling: str = "logit_normal"  # "uniform" or "logit_normal" (SD3 §3.1)
    logit_mean: float = 0.0  # logit-normal location m
    logit_std: float = 1.0  # logit-normal scale
    time_scale: float = 1000.0  # network time = time_scale * s
    sit_time: bool = False  # SiT checkpoints: network time = 1 - s, unscaled (t = 0 noise)
    train_shift: float = 1.0  # shift applied to training times (1 = none)


def shift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 timestep shift; shift > 1 spends more steps at high noise. shift = 1 is the identity."""
    if shift == 1.0:
        return s
    return shift * s / (1 + (shift - 1) * s)


class FlowMatching:
    """The process object: interpolation, targets, training loss and network-time mapping."""

    def __init__(self, config: FlowConfig | None = None):
        self.config = config or FlowConfig()
        if self.config.time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit_normal', got {self.config.time_sampling!r}")

    # -- time -------------------------------------------------------------------------
    def network_time(self, s: torch.Tensor) -> torch.Tensor:
        """Process time s (s = 1 noise) -> the t the network is fed."""
        if self.config.sit_time:
            return 1.0 - s
        return s * self.config.time_scale

    def process_time(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of `network_time`: the network's t -> process time s."""
        if self.config.sit_time:
            return 1.0 - t
        return t / self.config.time_scale

    def sample_time(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.config
        if cfg.time_sampling == "uniform":
            s = torch.rand(n, device=device, generator=generator)
        else:
            s = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, device=device, generator=generator))
        return shift_time(s, cfg.train_shift)

    # -- interpolant ------------------------------------------------------------------
    @staticmethod
    def interpolate(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.view(-1, *([1] * (x0.ndim - 1)))  # (N, 1, 1, 1)
        return (1 - s) * x0 + s * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    @staticmethod
    def velocity(model_out: torch.Tensor, channels: int) -> torch.Tensor:
        """Take the velocity from a network output (dropping a learned-sigma half if present)."""
        return model_out[:, :channels]

    def predict_x0(self, x_s: torch.Tensor, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.view(-1, *([1] * (x_s.ndim - 1)))
        return x_s - s * v

    # -- training ---------------------------------------------------------------------
    def training_loss(self, model_fn, x0: torch.Tensor, model_kwargs: dict | None = None,
                      noise: torch.Tensor | None = None, s: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample MSE between predicted and target velocity, shape (N,)."""
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        if s is None:
            s = self.sample_time(x0.shape[0], device=x0.device, generator=generator)
        x_s = self.interpolate(x0, noise, s)
        out = model_fn(x_s, self.network_time(s), **(model_kwargs or {}))
        v = self.velocity(out, x0.shape[1])
        return (v.float() - self.velocity_target(x0, noise).float()).pow(2).flatten(1).mean(1)
