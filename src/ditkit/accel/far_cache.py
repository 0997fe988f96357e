"""Sparse video attention with a cached far field: the local pattern every step, the rest every few steps.

A fixed sparse pattern applied at every sampling step (frame-local, STA tiles, diagonals; see
`ditkit.models.video_attention`) moves a small video DiT's samples far from the dense model's
(13 dB PSNR for STA 3x3x3 on the stage-5 text-to-video model,
docs/results/video/sparse-attention-stage5.json): the keys it drops carry real weight. Two observations
of the sparse-attention literature recover most of it:

* the first, noisiest steps lay out the video and are kept dense (the dense warm-up steps of STA,
  Zhang et al. 2025, and Sparse VideoGen, Xi et al. 2025);
* attention outputs change slowly between neighbouring steps, so the part a sparse kernel drops
  can be computed now and then and reused in between (the same premise as the cross-step reuse
  of FORA and Δ-DiT, and of sparse "delta" attention such as Chipmunk, 2025).

The split is exact. For each query, the pattern's keys (*local*) and the others (*far*) give two
partial attentions with log-sum-exp normalisers lse_l, lse_f (natural log); attention over all
keys is their merge

    out = w_l out_l + w_f out_f,   w_x = exp(lse_x - logaddexp(lse_l, lse_f))

On a *refresh* call both parts are computed (the result is dense attention, to float rounding;
a block-sparse kernel computes the local and far blocks, so the FLOPs of a dense call when the
pattern is block-aligned) and (out_f, lse_f) is kept per layer. Other calls compute the local
part only and merge it with the kept far part. `FarCachedAttention.wrap_model_fn` decides which
calls refresh, from the sampler's time alone (`RefreshSchedule`), so any sampler that calls a
plain model function works; a call noisier than the one before starts a new trajectory (a new
sampling run, or the next window of a rollout) and refreshes.

Not supported (a clear ValueError): "skip" heads (no far part to cache) and UltraViCo (its score
modifier changes the split).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.video_attention import SparsePlan, VideoAttention, dense_mask, masked_attention


@dataclass(frozen=True)
class RefreshSchedule:
    """Which model calls compute the far field (refresh) and which reuse it.

    ``dense_above``: calls whose noisiest frame has process time s > this (s = 1 noise) refresh
    (dense warm-up). Below it a call refreshes when ``every`` calls have passed since the last refresh.
    """

    dense_above: float = 0.9
    every: int = 3

    def __post_init__(self):
        if not 0.0 <= self.dense_above <= 1.0:
            raise ValueError(f"dense_above is a process time in [0, 1], got {self.dense_above}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


def merge(out_l: torch.Tensor, lse_l: torch.Tensor, out_f: torch.Tensor, lse_f: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two disjoint key sets from the partial results: (N, H, T, hd)."""
    lse = torch.logaddexp(lse_l, lse_f)  # (N, H, T)
    w_l, w_f = (lse_l - lse).exp().unsqueeze(-1), (lse_f - lse).exp().unsqueeze(-1)  # (N, H, T, 1)
    return (w_l * out_l.float() + w_f * out_f.float()).to(out_l.dtype)


class FarCachedAttention(VideoAttention):
    """An attention core (passed per call, `ditkit.accel.attention.WithAttention`): the plan's patterns as the
    local part, the far part cached.

    ``refresh`` (set by the `wrap_model_fn` wrapper, or by hand) says whether the next calls compute
    the far part; without a kept far part for a layer (or for another batch shape) a call refreshes
    anyway. ``calls`` counts model-call-level decisions: {"refresh": n, "local": m}.
    """

    def __init__(self, plan: SparsePlan, schedule: RefreshSchedule | None = None, *, backend: str = "flex",
                 compile: bool = False, block_size: int = 128):
        if plan is None or not plan.layers:
            raise ValueError("far-field caching needs a sparse plan (the local pattern) for at least one layer")
        if any(p.kind == "skip" for pats in plan.layers.values() for p in pats):
            raise ValueError("far-field caching does not support 'skip' heads: a skipped head has no far part to cache")
        super().__init__(plan, None, backend=backend, compile=compile, block_size=block_size)
        self.schedule = schedule or RefreshSchedule()
        self.refresh = True
        self._far: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._far_masks: dict[tuple, object] = {}
        self.calls = {"refresh": 0, "local": 0}

    def reset(self) -> None:
        super().reset()
        self._far.clear()
        self._far_masks.clear()
        self.refresh = True
        self.calls = {"refresh": 0, "local": 0}

    def _far_mask(self, key, mask_mod, heads: int, t: int, device):
        if key not in self._far_masks:
            def far_mod(b, h, q, kv):
                return ~mask_mod(b, h, q, kv)

            if self.backend == "flex":
                from torch.nn.attention.flex_attention import create_block_mask

                self._far_masks[key] = create_block_mask(far_mod, None, heads, t, t, device=str(device),
                                                         BLOCK_SIZE=self.block_size)
            else:
                self._far_masks[key] = dense_mask(far_mod, heads, t).to(device)
        return self._far_masks[key]

    def _partial(self, key, q, k, v, mask) -> tuple[torch.Tensor, torch.Tensor]:
        if self._flex_usable(q, v):
            out, lse = self._run_flex(key, q, k, v, None, mask, return_lse=True)
            return out, lse.float()
        if not isinstance(mask, torch.Tensor):  # a flex BlockMask under autograd: materialise it
            mask = dense_mask(mask.mask_mod, q.shape[1], q.shape[2]).to(q.device)
        return masked_attention(q, k, v, mask)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int,
                 grid: tuple[int, int, int], axes: str = "all") -> torch.Tensor:
        n, heads, t, _ = q.shape
        key, (mask, _, _, order, mask_mod) = self._setup(layer, grid, axes, heads, q.device)
        if mask_mod is None:  # no pattern on this layer: dense
            return F.scaled_dot_product_attention(q, k, v)
        if order is not None:  # tile-major sequence
            q, k, v = q[:, :, order], k[:, :, order], v[:, :, order]  # (N, H, T, hd)
        out_l, lse_l = self._partial(key, q, k, v, mask)
        kept = self._far.get(layer)
        if self.refresh or kept is None or kept[0].shape != out_l.shape:
            far_key = (*key, "far")
            kept = self._partial(far_key, q, k, v, self._far_mask(far_key, mask_mod, heads, t, q.device))
            self._far[layer] = kept
        out = merge(out_l, lse_l, *kept)  # (N, H, T, hd)
        if order is not None:
            out = out[:, :, torch.argsort(order)]  # back to frame-major
        return out

    def wrap_model_fn(self, fn, process):
        """``fn(x, t, **kw)`` -> the same function with this core's refresh decided per call by the schedule.

        ``process`` maps the network's t back to process time (``process.process_time``)."""
        sched = self.schedule
        state = {"last": None, "since": 0}

        def wrapped(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
            s = float(process.process_time(t).max())  # the noisiest frame
            fresh_run = state["last"] is None or s > state["last"] + 1e-6
            state["last"] = s
            state["since"] += 1
            self.refresh = fresh_run or s > sched.dense_above + 1e-6 or state["since"] >= sched.every
            if self.refresh:
                state["since"] = 0
            self.calls["refresh" if self.refresh else "local"] += 1
            return fn(x, t, **kwargs)

        return wrapped


__all__ = ["FarCachedAttention", "RefreshSchedule", "merge"]
