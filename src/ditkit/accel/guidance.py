"""Guidance-aware savings: refresh the unconditional branch only every k guided calls.

Classifier-free guidance (``ditkit.diffusion.guidance.cfg``) doubles every call. The guidance
direction changes slowly across steps, so `cfg_reuse` runs the doubled batch [x; x] with labels
[y; null] only on every ``every``-th guided call and, in between, the conditional half alone,
combining it with what was cached:

* ``mode="delta"`` (default): cache the guidance direction g = cond - uncond and use
  out = cond + (scale - 1) g — the "CFG-Cache" of FasterCache (Lv et al. 2024, "FasterCache:
  Training-Free Video Diffusion Model Acceleration with High Quality", arXiv:2410.19355), which
  reuses the cond/uncond residual rather than the unconditional output;
* ``mode="uncond"``: cache the unconditional output itself and use uncond + scale (cond - uncond).

Refresh calls return exactly ``cfg(...)``'s output, so ``every=1`` is plain guidance, bit for bit.
The guidance interval (Kynkäänniemi et al. 2024) and the reference 3-channel variant behave as in
``cfg``; outside the interval only the conditional pass runs. State resets at each new generation
(detected from network time, as in ``steps.GenerationClock``, or with ``reset()``).

Stack it *outside* an accelerated model — ``cfg_reuse(accelerate(model, ...), scale, ...)`` —
whose per-batch-signature streams then keep the doubled and the conditional-only calls apart.
With ``ditkit.sample`` pass ``cfg_scale=1`` and ``model_wrapper=lambda m: cfg_reuse(m, scale, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .policy import check_positive_int
from .steps import GenerationClock

MODES = ("delta", "uncond")


class GuidanceReuse:
    """A ``model_fn(x, t, **kwargs)`` with classifier-free guidance that reuses the uncond branch."""

    def __init__(self, model_fn: Callable[..., torch.Tensor], scale: float, *, null_label: int, every: int = 2,
                 mode: str = "delta", cond_key: str = "y", channels: int | None = None,
                 interval: tuple[float, float] | None = None):
        check_positive_int("every", every)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if channels is not None and channels <= 0:
            raise ValueError(f"channels must be positive or None, got {channels}")
        if interval is not None and (len(interval) != 2 or interval[0] > interval[1]):
            raise ValueError(f"interval must be (lo, hi) with lo <= hi, got {interval!r}")
        self.model_fn, self.scale, self.null_label = model_fn, float(scale), null_label
        self.every, self.mode, self.cond_key, self.channels, self.interval = every, mode, cond_key, channels, interval
        self.uncond_passes = 0  # doubled calls made (for reports)
        self.reused = 0  # guided calls that reused the cache
        self._clock = GenerationClock()
        self.reset()

    @property
    def config(self):
        return getattr(self.model_fn, "config", None)

    def reset(self) -> None:
        self._clock.reset()
        self._cached: torch.Tensor | None = None  # (N, k, ...) guidance direction or uncond output
        self._guided = 0  # guided calls in this generation

    def cache_bytes(self) -> int:
        return 0 if self._cached is None else self._cached.untyped_storage().nbytes()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        if self._clock.tick(t):
            self._cached, self._guided = None, 0
        if self.cond_key not in kwargs:
            raise ValueError(f"classifier-free guidance needs the labels as keyword {self.cond_key!r}")
        if self.scale == 1.0:
            return self.model_fn(x, t, **kwargs)
        active = torch.ones_like(t, dtype=torch.bool)  # (N,)
        if self.interval is not None:
            active = (t >= self.interval[0]) & (t <= self.interval[1])
            if not bool(active.any()):
                return self.model_fn(x, t, **kwargs)

        refresh = self._guided % self.every == 0 or self._cached is None or self._cached.shape[0] != x.shape[0]
        self._guided += 1
        if refresh:
            y = kwargs[self.cond_key]
            both = {**kwargs, self.cond_key: torch.cat([y, torch.full_like(y, self.null_label)])}  # (2N,)
            cond, uncond = self.model_fn(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2, dim=0)
            k = cond.shape[1] if self.channels is None else self.channels
            self._cached = cond[:, :k] - uncond[:, :k] if self.mode == "delta" else uncond[:, :k]
            self.uncond_passes += 1
            uncond_k = uncond[:, :k]
        else:
            cond = self.model_fn(x, t, **kwargs)
            k = cond.shape[1] if self.channels is None else self.channels
            uncond_k = cond[:, :k] - self._cached if self.mode == "delta" else self._cached
            self.reused += 1
        mixed = uncond_k + self.scale * (cond[:, :k] - uncond_k)  # the cfg formula (ditkit.diffusion.guidance)
        mixed = torch.cat([mixed, cond[:, k:]], dim=1)
        if self.interval is not None:
            mask = active.view(-1, *([1] * (cond.ndim - 1)))  # (N, 1, 1, 1)
            mixed = torch.where(mask, mixed, cond)
        return mixed


def cfg_reuse(model_fn: Callable[..., torch.Tensor], scale: float, *, null_label: int, every: int = 2,
              mode: str = "delta", cond_key: str = "y", channels: int | None = None,
              interval: tuple[float, float] | None = None) -> GuidanceReuse:
    """Classifier-free guidance that refreshes the unconditional branch every ``every`` guided calls.

    Arguments as in ``ditkit.diffusion.guidance.cfg``, plus ``every`` (1 = plain cfg) and ``mode``
    ("delta": reuse cond - uncond; "uncond": reuse the unconditional output). See the module doc.
    """
    return GuidanceReuse(model_fn, scale, null_label=null_label, every=every, mode=mode, cond_key=cond_key,
                         channels=channels, interval=interval)
