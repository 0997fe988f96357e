"""Offline search of a sparse attention pattern per (layer, head) of a video DiT.

Sparse-vDiT (Chen et al. 2025, "Sparse-vDiT: Unleashing the Power of Sparse Attention to
Accelerate Video Diffusion Transformers", §4) observes that each head's attention pattern is
stable across prompts and steps, so it can be chosen once, offline: run dense attention on a few
calibration inputs, measure each candidate pattern's error against dense, and keep the cheapest
candidate whose error is acceptable. STA's training-free "mask search" does the same for window
sizes. Here:

* error of a head under a pattern = ||o_pattern - o_dense|| / ||O_dense||, where o is that head's
  attention output and O the whole layer's (all heads), summed over the calibration inputs; a head
  that contributes little can be dropped ("skip") or thinned more;
* cost = the head's attention FLOPs as a block-sparse kernel computes them (`attention_flops`);
* per head, the cheapest candidate with error <= ``tolerance`` wins (full attention always
  qualifies). Errors are measured layer by layer on dense inputs; how they compound through the
  network is what an end-to-end check (PSNR against dense sampling) measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.video_attention import FULL, Pattern, SparsePlan, attention_flops, dense_mask, head_mask_mod, make_layout
from .attention import WithAttention


@dataclass(frozen=True)
class SearchConfig:
    tolerance: float = 0.05  # max head error relative to the layer's attention output
    block_size: int = 128  # block of the sparse kernel whose cost is counted
    tile: tuple[int, int, int] | None = None  # tile-major token order (STA); costs are counted in that order


def default_candidates(grid: tuple[int, int, int]) -> list[Pattern]:
    """A small candidate set for a (f, h, w) token grid: skip, stripe, diagonals, multi-diagonals and STA windows."""
    f, h, w = grid
    ft = h * w
    cands = [Pattern("skip"), Pattern("stripe", 1), Pattern("diagonal", ft // 2), Pattern("diagonal", ft),
             Pattern("diagonal", 2 * ft), Pattern("multi_diagonal", w), Pattern("multi_diagonal", 2 * w + 1)]
    th, tw = (4 if h % 4 == 0 else h), (4 if w % 4 == 0 else w)
    for wt in (3, 5):
        if wt < f:
            cands.append(Pattern("sta", tile=(1, th, tw), window=(wt, 3, 3)))
    return cands


class Recorder:
    """An attention core that runs dense SDPA and keeps each full-attention layer's (q, k, v) and grid."""

    def __init__(self):
        self.records: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.grid: tuple[int, int, int] | None = None

    def __call__(self, q, k, v, *, layer: int, grid: tuple[int, int, int], axes: str = "all") -> torch.Tensor:
        if axes == "all":
            if self.grid is not None and grid != self.grid:
                raise ValueError(f"calibration inputs must share one token grid, got {self.grid} and {grid}")
            self.grid = grid
            self.records.setdefault(layer, []).append((q.detach(), k.detach(), v.detach()))
        return F.scaled_dot_product_attention(q, k, v)


def head_errors(records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], pattern: Pattern,
                grid: tuple[int, int, int]) -> torch.Tensor:
    """Per-head error of ``pattern`` against dense attention over the records, relative to the layer output: (H,)."""
    num_heads, t = records[0][0].shape[1], records[0][0].shape[2]
    layout = make_layout(grid)
    mask = dense_mask(head_mask_mod([pattern] * num_heads, layout), num_heads, t)[:1]  # (1, T, T): one head's mask
    err = torch.zeros(num_heads, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for q, k, v in records:
        dense = F.scaled_dot_product_attention(q, k, v).double()  # (N, H, T, hd)
        if pattern.kind == "skip":
            sparse = torch.zeros_like(dense)
        else:
            sparse = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.device)).double()
        err += (sparse - dense).pow(2).sum(dim=(0, 2, 3)).cpu()
        total += dense.pow(2).sum().cpu()
    return (err / total.clamp_min(1e-30)).sqrt()


def search_plan(model, calibration: list[tuple], candidates: list[Pattern] | None = None,
                config: SearchConfig | None = None) -> tuple[SparsePlan, dict]:
    """Pick a pattern per (layer, head) of ``model``'s full-attention blocks.

    ``calibration``: ``(x, t, kwargs)`` inputs to run the model on densely (e.g. noisy clips at a
    few sampling times). Returns the plan and a report ``{"layers": {layer: [(pattern, error,
    cost fraction), ...]}, "flops_dense": ..., "flops_plan": ..., "saved": ...}`` (FLOPs of one
    sample, block-sparse counting, full-attention layers only).
    """
    cfg = config or SearchConfig()
    recorder = Recorder()
    net = WithAttention(model, recorder)  # the recorder as this run's attention core
    with torch.no_grad():
        for x, t, kwargs in calibration:
            net(x, t, **kwargs)
    if recorder.grid is None:
        raise ValueError("the model has no full-attention layers to search (factorized attention?)")
    grid = recorder.grid
    candidates = candidates if candidates is not None else default_candidates(grid)
    head_dim = next(iter(recorder.records.values()))[0][0].shape[-1]
    cost = {p: attention_flops([p], grid, head_dim, cfg.block_size, cfg.tile)["block"] for p in candidates + [FULL]}
    dense_cost = cost[FULL]
    ranked = sorted(set(candidates) - {FULL}, key=lambda p: cost[p])
    plan, report, used = SparsePlan(tile=cfg.tile), {}, 0.0
    for layer, records in sorted(recorder.records.items()):
        errors = {p: head_errors(records, p, grid) for p in ranked}
        heads = []
        for h in range(records[0][0].shape[1]):
            best = next((p for p in ranked if float(errors[p][h]) <= cfg.tolerance), FULL)
            err = 0.0 if best == FULL else float(errors[best][h])
            heads.append((best, err, cost[best] / dense_cost))
            used += cost[best]
        plan.layers[layer] = [p for p, _, _ in heads]
        report[layer] = [(str(p), e, c) for p, e, c in heads]
    n_heads = sum(len(v) for v in plan.layers.values())
    total = dense_cost * n_heads
    return plan, {"layers": report, "flops_dense": total, "flops_plan": used, "saved": 1.0 - used / total}
