"""Region-adaptive sampling (RAS): each call updates only the tokens in focus.

Liu et al. 2025, "Region-Adaptive Sampling for Diffusion Transformers" (arXiv:2502.10389; code
microsoft/RAS). A DiT takes any number of tokens, and the regions a model works on move slowly
from step to step, so on a RAS call only K = round(sample_ratio * T) tokens per sample go
through the trunk and the final layer; the other tokens reuse their model output (velocity, ε)
from the last call that computed them.

* **Metric.** After each call, per token: the standard deviation over output channels (or the
  L2 norm, ``metric="l2norm"``) of the model output, averaged over the token's p x p pixels.
  (The paper scores the solver update (s' - s)·v; the factor is the same for every token of a
  call, so the ranking is the same.)
* **Selection and starvation guard.** ``focus="low"`` (default) computes the tokens with the
  lowest metric and reuses the others, as the public code does with its default ``high_ratio=1``
  (it drops the highest-metric patches); ``focus="high"`` computes the highest-metric tokens
  instead. The keep-score is the metric (high) or its inverse (low) times
  exp(starvation_scale * drops), drops counting how often the token was left out in this
  generation, so a token left out long enough is always recomputed eventually. (The public code
  multiplies its *drop*-ranking metric by that factor, which with its default keeps dropping the
  same patches; ditkit applies it to the keep-score so that it always protects dropped tokens.)
  The K highest keep-scores per sample are computed.
* **Keys and values of dropped tokens.** Dense calls store every block's keys and values (after
  QK-norm and RoPE); on RAS calls the computed tokens' fresh K/V are written into that cache and
  their queries attend over all T cached keys, so dropped tokens stay visible with the K/V of
  the last call that computed them — as in the paper, through ``Attention.forward(kv_hook=...)``.
* **Positions.** The embedded tokens already carry absolute positions (added in ``embed``); RoPE
  tables are gathered per sample for the tokens in view, so positions follow the tokens.
* **Schedule.** RAS calls are those with start <= index <= end (call indices), except the dense
  ``reset_steps`` that refresh every token and K/V. ``sample_ratio = 1`` disables RAS entirely
  (the baseline, bit for bit).

Cache policies run unchanged on the tokens in view (see ``trunk.View``); their decision signals
(first-block residual change, TeaCache's input change, the gate's forecast error) are then
measured on those tokens only, so a threshold tuned without RAS may skip more or less often with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .policy import check_positive_int
from .steps import Step
from .trunk import View

METRICS = ("std", "l2norm")
FOCUS = ("high", "low")


@dataclass(frozen=True)
class RASConfig:
    """Region-adaptive sampling settings (call indices; see the module doc)."""

    sample_ratio: float = 0.5  # fraction of tokens computed on RAS calls (1 = off)
    start: int = 4  # first call index that may be a RAS call (earlier calls are dense)
    end: int | None = None  # last call index that may be a RAS call (None: to the end)
    reset_steps: tuple[int, ...] = ()  # dense calls inside the window that refresh every token and K/V
    starvation_scale: float = 0.1  # s in exp(s * drops)
    metric: str = "std"  # "std" or "l2norm" over output channels, averaged per patch
    focus: str = "low"  # "low": compute the lowest-metric tokens (public code's default); "high": the highest

    name = "RAS"

    def __post_init__(self):
        if not 0 < self.sample_ratio <= 1:
            raise ValueError(f"sample_ratio must lie in (0, 1], got {self.sample_ratio!r}")
        check_positive_int("start", self.start)  # call 0 has no previous output to reuse
        if self.end is not None:
            check_positive_int("end", self.end, minimum=0)
        object.__setattr__(self, "reset_steps", tuple(int(s) for s in self.reset_steps))
        if self.starvation_scale < 0:
            raise ValueError(f"starvation_scale must be >= 0, got {self.starvation_scale!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.focus not in FOCUS:
            raise ValueError(f"focus must be one of {FOCUS}, got {self.focus!r}")

    @property
    def enabled(self) -> bool:
        return self.sample_ratio < 1.0

    def in_window(self, step: Step) -> bool:
        k = step.index
        return k >= self.start and (self.end is None or k <= self.end) and k not in self.reset_steps

    def describe(self) -> str:
        return (f"RAS(sample_ratio={self.sample_ratio}, start={self.start}, end={self.end}, "
                f"focus={self.focus!r})")


class RASState:
    """One stream's RAS state: K/V caches, cached output tokens, metric and drop counts."""

    def __init__(self, cfg: RASConfig, model):
        self.cfg, self.model = cfg, model
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(model.blocks)  # (N, H, T, hd) each
        self.out: torch.Tensor | None = None  # (N, T, p*p*C_out) final-layer output per token
        self.metric: torch.Tensor | None = None  # (N, T)
        self.drops: torch.Tensor | None = None  # (N, T) times each token was left out
        self.view = View()
        self.sparse_calls = 0

    def tensors(self):
        return [t for kv in self.kv if kv is not None for t in kv] + [self.out, self.metric, self.drops]

    # -- before the trunk ------------------------------------------------------------------
    def plan(self, step: Step, ctx, num_tokens: int):
        """(view, kv_hooks, rope) for this call: a per-sample token subset on RAS calls."""
        ready = self.out is not None and self.metric is not None and all(kv is not None for kv in self.kv)
        if not (ready and self.cfg.in_window(step)):
            self.view = View()
            cfg = self.cfg  # record K/V only where a RAS call may follow
            record = step.index >= cfg.start - 1 and (cfg.end is None or step.index < cfg.end)
            return self.view, (self._record_hook if record else None), None
        score = self.metric if self.cfg.focus == "high" else 1.0 / (self.metric + 1e-12)  # (N, T)
        score = score * torch.exp(self.cfg.starvation_scale * self.drops)
        keep = max(1, round(self.cfg.sample_ratio * num_tokens))
        idx = score.topk(keep, dim=1).indices.sort(dim=1).values  # (N, K) tokens in view
        dropped = torch.ones_like(self.drops, dtype=torch.bool).scatter_(1, idx, False)  # (N, T)
        self.drops = self.drops + dropped.to(self.drops.dtype)
        self.view = View(idx)
        self.sparse_calls += 1
        rope = None
        if ctx.rope is not None:
            rope = tuple(table[idx].unsqueeze(1) for table in ctx.rope)  # (N, 1, K, hd) each
        return self.view, self._sparse_hook, rope

    def _record_hook(self, i: int):
        def hook(k: torch.Tensor, v: torch.Tensor):
            self.kv[i] = (k.contiguous(), v.contiguous())  # (N, H, T, hd) each
            return k, v
        return hook

    def _sparse_hook(self, i: int):
        idx = self.view.idx

        def hook(k: torch.Tensor, v: torch.Tensor):
            kc, vc = self.kv[i]  # (N, H, T, hd) each
            index = idx[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])  # (N, H, K, hd)
            kc, vc = kc.scatter(2, index, k), vc.scatter(2, index, v)  # fresh K/V of the tokens in view
            self.kv[i] = (kc, vc)
            return kc, vc
        return hook

    # -- after the trunk -------------------------------------------------------------------
    def finish(self, h: torch.Tensor, c: torch.Tensor, ctx) -> torch.Tensor:
        """Final layer on the tokens in view, cached outputs elsewhere -> (N, C_out, H, W)."""
        model = self.model
        self.out = self.view.put(self.out, model.final_layer(h, c))  # (N, T, p*p*C_out)
        out = model.unpatchify(self.out, ctx.grid)  # (N, C_out, H, W)
        self.metric = token_metric(out[:, : model.config.in_channels], model.config.patch_size, self.cfg.metric)
        if self.drops is None:
            self.drops = torch.zeros_like(self.metric)
        return out


def token_metric(out: torch.Tensor, patch: int, metric: str = "std") -> torch.Tensor:
    """Per-token RAS metric of a model output (N, C, H, W): channel std or L2 norm per pixel,
    averaged over each p x p patch, in token (row-major) order -> (N, T)."""
    if metric == "std":
        per_pixel = out.float().std(dim=1, correction=0)  # (N, H, W)
    else:
        per_pixel = out.float().norm(dim=1)  # (N, H, W)
    pooled = F.avg_pool2d(per_pixel.unsqueeze(1), patch)  # (N, 1, h, w)
    return pooled.flatten(1)  # (N, T)

