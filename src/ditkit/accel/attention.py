"""`WithAttention`: a video DiT called with an attention core of this run, by wrapping, not by setting it.

An attention core (``core(q, k, v, *, layer, grid, axes) -> out``: a sparse plan or UltraViCo as a
`ditkit.models.video_attention.VideoAttention`, the far-field cache `ditkit.accel.far_cache.FarCachedAttention`,
the recorder of `ditkit.accel.sparse_search`) reaches the model as a keyword of each call,
``model(x, t, ..., attention=core)``: the wrapper is a model (it has the DiT's ``config`` and
parameters), so it goes wherever the DiT goes, and the DiT itself is not touched.

A core that decides per model call what to compute — the far-field cache's refresh schedule — also
wraps the *guided* model function (`WithAttention.schedule`): one decision per sampler call, shared by
the conditional and unconditional rows of guidance, taken from the sampler's time alone.

    net = WithAttention(pipe.model, FarCachedAttention(plan, RefreshSchedule(every=3)))
    fn = net.schedule(guided(net), process)     # what the sampler calls
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class WithAttention(nn.Module):
    """``model`` with ``core`` passed to every call (``model(x, t, *args, attention=core, **kwargs)``)."""

    def __init__(self, model: nn.Module, core):
        super().__init__()
        if core is None:
            raise ValueError("WithAttention needs an attention core")
        self.model = model
        self.core = core

    @property
    def config(self):
        return self.model.config

    def reset(self) -> None:
        """Drop what the core keeps between calls (masks, a cached far field): a new generation starts."""
        if hasattr(self.core, "reset"):
            self.core.reset()

    def schedule(self, fn: Callable, process) -> Callable:
        """The guided model function ``fn(x, t, **kw)`` with the core's per-call decisions (its
        ``wrap_model_fn(fn, process)``), or ``fn`` itself for a core without any."""
        wrap = getattr(self.core, "wrap_model_fn", None)
        return fn if wrap is None else wrap(fn, process)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.model(x, t, *args, attention=self.core, **kwargs)

    def extra_repr(self) -> str:
        return f"core={type(self.core).__name__}"


__all__ = ["WithAttention"]
