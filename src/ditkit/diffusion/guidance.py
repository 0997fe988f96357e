"""Classifier-free guidance as a model_fn wrapper (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6).

    out = uncond + scale * (cond - uncond)

``cfg(model_fn, scale, null_label=...)`` returns a new ``model_fn(x, t, **kwargs)`` that runs one
doubled batch ``[x; x]`` with labels ``[y; null]`` and combines the two halves. It works for any
process (ε, v or velocity outputs) because samplers only ever see the combined output. A text model
has no null label: its unconditional half gets the encoded empty prompt, ``null_cond={"text": ...,
"text_mask": ...}`` (the trainer drops captions to "" with probability ``caption_dropout_prob``).

Reference DiT 3-channel quirk (``channels=3``)
-----------------------------------------------
DiT's ``forward_with_cfg`` (and SiT's, and LightningDiT's) guides only output channels 0..2, a
leftover from GLIDE's RGB models (DiT issue #41). There the *sampler* state is doubled to
``[z; z]`` with labels ``[y; null]``; the model runs ``[x_half; x_half]`` (x_half = first half of the
state), guides channels 0..2 and returns ``cat([guided, guided])`` along the batch, then concatenates
``rest = out[:, 3:]`` of the *full doubled* output along channels. So in the reference:

* the first (conditional) half sees ``[guided[:3], cond[3:]]``: ε channel 3 and the whole
  learned-variance half come from the **conditional** pass, unguided;
* the second half sees ``[guided[:3], uncond[3:]]``, but that half of the state never feeds the
  model (only x_half does) and is thrown away at the end (``samples.chunk(2)[0]``).

The kept trajectory is therefore exactly the one this wrapper produces on an undoubled batch with
``channels=3``: ``cat([guided[:, :3], cond[:, 3:]], dim=1)``. Deterministic samplers (DDIM with
eta = 0, ODE solvers) match the reference up to float rounding; DDPM matches in distribution only,
since the reference draws its noise for the doubled batch. ``channels=None`` (default) guides all.

Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval"): with
``interval=(lo, hi)`` in network time (see ``ditkit.diffusion``), guidance applies only where
``lo <= t <= hi``; elsewhere the plain conditional output is returned and, when no sample in the
batch is inside the interval, the unconditional pass is skipped. ``scale == 1`` always skips it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ModelFn = Callable[..., torch.Tensor]


def cfg(model_fn: ModelFn, scale: float, *, null_label: int | None = None, cond_key: str = "y",
        channels: int | None = None, interval: tuple[float, float] | None = None,
        null_cond: dict[str, torch.Tensor] | None = None) -> ModelFn:
    """Wrap ``model_fn`` with classifier-free guidance.

    Args:
        model_fn: ``model_fn(x, t, **kwargs) -> (N, C_out, ...)``.
        scale: guidance scale s; 1.0 means no guidance (a single conditional pass).
        null_label: the unconditional ("dropped") label, e.g. 1000 for ImageNet DiT.
        cond_key: the keyword that carries the labels, shape (N,).
        channels: guide only output channels ``[:channels]`` and take the rest from the conditional
            pass (``channels=3`` reproduces the reference DiT quirk); None guides all channels.
        interval: ``(lo, hi)`` in network time; guide only where ``lo <= t <= hi``.
        null_cond: instead of a null label, the unconditional value of each named keyword, e.g. the
            encoded empty prompt ``{"text": (1, L, D), "text_mask": (1, L)}`` of a text model; each is
            broadcast over the batch (leading dim 1 or N) and must match the conditional one's shape.

    Other keyword arguments are passed to both passes unchanged (not doubled).
    """
    if (null_label is None) == (null_cond is None):
        raise ValueError("classifier-free guidance needs exactly one of null_label and null_cond")
    keys = [cond_key] if null_cond is None else list(null_cond)
    if channels is not None and channels <= 0:
        raise ValueError(f"channels must be positive or None, got {channels}")
    if interval is not None and (len(interval) != 2 or interval[0] > interval[1]):
        raise ValueError(f"interval must be (lo, hi) with lo <= hi, got {interval!r}")

    def guided_fn(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        missing = [k for k in keys if k not in kwargs]
        if missing:
            raise ValueError(f"classifier-free guidance needs the conditioning as keyword {missing[0]!r}")
        if scale == 1.0:
            return model_fn(x, t, **kwargs)
        active = torch.ones_like(t, dtype=torch.bool)  # (N,) where guidance applies
        if interval is not None:
            active = (t >= interval[0]) & (t <= interval[1])
            if not bool(active.any()):
                return model_fn(x, t, **kwargs)

        if null_cond is None:
            y = kwargs[cond_key]
            both = {**kwargs, cond_key: torch.cat([y, torch.full_like(y, null_label)])}  # (2N,)
        else:  # (2N, ...) each: [conditional; unconditional]
            both = {**kwargs, **{k: torch.cat([kwargs[k], v.to(kwargs[k].device).expand_as(kwargs[k])])
                                 for k, v in null_cond.items()}}
        out = model_fn(torch.cat([x, x]), torch.cat([t, t]), **both)  # (2N, C_out, ...)
        cond, uncond = out.chunk(2, dim=0)  # (N, C_out, ...) each
        k = cond.shape[1] if channels is None else channels
        mixed = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
        mixed = torch.cat([mixed, cond[:, k:]], dim=1)  # rest from the conditional pass (see module doc)
        if interval is not None:
            mask = active.view(-1, *([1] * (cond.ndim - 1)))  # (N, 1, 1, 1)
            mixed = torch.where(mask, mixed, cond)
        return mixed

    return guided_fn


def autoguidance(model_fn: ModelFn, weak_fn: ModelFn, scale: float) -> ModelFn:
    """Guide a model with a weaker version of itself (Karras et al. 2024, "Guiding a Diffusion Model
    with a Bad Version of Itself", https://arxiv.org/abs/2406.02507, eq. 2):

        out = weak + scale * (model - weak)

    ``weak_fn`` sees the same input and conditioning (e.g. an earlier, smaller snapshot of the same
    training run); its errors are the ones the strong model partly fixed, and extrapolating away from
    them sharpens samples. Compose with classifier-free guidance by wrapping the result in `cfg`
    (both models then receive the doubled [cond; null] batch). ``scale == 1`` is the model alone.
    """
    if scale < 0:
        raise ValueError(f"autoguidance scale must be >= 0, got {scale}")

    def guided_fn(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        out = model_fn(x, t, **kwargs)
        if scale == 1.0:
            return out
        weak = weak_fn(x, t, **kwargs)
        if weak.shape != out.shape:
            raise ValueError(f"autoguidance: the weak model's output {tuple(weak.shape)} does not match "
                             f"the model's {tuple(out.shape)}")
        return weak + scale * (out - weak)

    return guided_fn
