"""First-block cache: skip blocks 1..L-1 while block 0's residual barely moves.

The idea of ParaAttention's First-Block Cache (chengzeyi/ParaAttention) and diffusers'
``FirstBlockCacheConfig``: block 0 is always computed, and its residual r = B_0(x) - x serves as a
cheap indicator of how much the whole network's output would change. With r_ref the block-0
residual of the last full call,

    diff = mean|r - r_ref| / mean|r_ref|    (over the whole batch: one decision per call)

the remaining blocks are skipped when diff < threshold, and the tokens leaving the trunk are
B_0(x) + R, R being the cached residual of blocks 1..L-1 (their output minus their input) from the
last full call. r_ref and R change only on full calls. ``threshold <= 0`` never skips: the
baseline, bit for bit. ``force_last`` computes the final call fully when the number of calls was
announced (``begin(total)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import CacheConfig, Policy, relative_l1
from .steps import Step
from .trunk import Trunk


class FirstBlockPolicy(Policy):
    def __init__(self, cfg: FirstBlockCacheConfig):
        self.cfg = cfg
        self.ref: torch.Tensor | None = None  # (N, T, D) block-0 residual at the last full call
        self.rest: torch.Tensor | None = None  # (N, T, D) residual of blocks 1..L-1 at the last full call
        self.skipped = 0

    def tensors(self):
        return [self.ref, self.rest]

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        view, x = trunk.view, trunk.x
        x1 = trunk.block(0, x)  # (N, K, D)
        r = x1 - x
        if self.cfg.threshold > 0 and self.ref is not None and not (self.cfg.force_last and step.last):
            if relative_l1(r, view.take(self.ref)) < self.cfg.threshold:
                self.skipped += 1
                return x1 + view.take(self.rest)
        h = trunk.run(x1, 1)
        self.ref, self.rest = view.put(self.ref, r), view.put(self.rest, h - x1)
        return h


@dataclass(frozen=True)
class FirstBlockCacheConfig(CacheConfig):
    """First-block cache with a relative-L1 threshold on block 0's residual."""

    threshold: float = 0.05  # skip when block 0's residual changed less than this (0 = never skip)
    force_last: bool = True  # always compute the last call (when begin(total) announced it)

    name = "FirstBlockCache"

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")

    def build(self, model) -> Policy:
        return FirstBlockPolicy(self)
