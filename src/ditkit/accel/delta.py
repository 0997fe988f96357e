"""Δ-DiT: cache the residual change of a block range, rear blocks early, front blocks late.

Chen et al. 2024, "Δ-DiT: A Training-Free Acceleration Method Tailored for Diffusion
Transformers" (arXiv:2406.01125). Caching a range's *output* would replace the current input by a
stale one; Δ-Cache instead stores the range's residual Δ = F_range(x) - x on full calls and on
cached calls applies x + Δ to the *current* input x, running the blocks outside the range as usual.
The paper's observation: front blocks lay down outlines (they matter in the noisy early steps),
rear blocks add detail (they matter late). So before the boundary the rear ``num_blocks`` blocks
are cached, after it the front ``num_blocks`` ones.

Schedule: full compute on the first ``warmup`` calls, then every ``interval``-th call, and on the
first call of each phase (the other range's Δ is not a substitute). The boundary is a call index
(``boundary_step``, the paper's b) or, sampler-independent, a network time ``boundary_t``
(see ``ditkit.diffusion``: calls with t > boundary_t are "early"). ``interval=1`` is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import CacheConfig, Policy, check_positive_int
from .steps import Step, periodic
from .trunk import Trunk


class DeltaPolicy(Policy):
    def __init__(self, cfg: DeltaDiTConfig, depth: int):
        self.cfg, self.depth = cfg, depth
        self.n = cfg.num_blocks if cfg.num_blocks is not None else max(1, depth // 2)
        self.delta: torch.Tensor | None = None  # (N, T, D) residual of the cached range
        self.range: tuple[int, int] | None = None  # the block range [lo, hi) that delta belongs to

    def tensors(self):
        return [self.delta]

    def _early(self, step: Step) -> bool:
        if self.cfg.boundary_step is not None:
            return step.index < self.cfg.boundary_step
        return step.t > self.cfg.boundary_t

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        lo, hi = (self.depth - self.n, self.depth) if self._early(step) else (0, self.n)
        full = periodic(step, self.cfg.interval, self.cfg.warmup) or self.range != (lo, hi)
        x = trunk.run(trunk.x, 0, lo)  # (N, K, D)
        if full:
            x_in = x
            x = trunk.run(x, lo, hi)
            self.delta, self.range = trunk.view.put(self.delta, x - x_in), (lo, hi)
        else:
            x = x + trunk.view.take(self.delta)
        return trunk.run(x, hi)


@dataclass(frozen=True)
class DeltaDiTConfig(CacheConfig):
    """Δ-DiT Δ-Cache over ``num_blocks`` rear blocks before the boundary and front blocks after it."""

    interval: int = 2  # full compute every N-th call (1 = baseline)
    num_blocks: int | None = None  # N_c, blocks in the cached range; None = half the depth
    boundary_t: float = 500.0  # network time of the phase switch (t > boundary_t: rear blocks cached)
    boundary_step: int | None = None  # or the paper's step index b (takes precedence when given)
    warmup: int = 0  # extra full-compute calls at the start, before the periodic schedule

    name = "Delta-DiT"

    def __post_init__(self):
        check_positive_int("interval", self.interval)
        check_positive_int("warmup", self.warmup, minimum=0)
        if self.num_blocks is not None:
            check_positive_int("num_blocks", self.num_blocks)
        if self.boundary_step is not None:
            check_positive_int("boundary_step", self.boundary_step, minimum=0)

    def build(self, model) -> Policy:
        depth = len(model.blocks)
        if self.num_blocks is not None and self.num_blocks > depth:
            raise ValueError(f"num_blocks={self.num_blocks} exceeds the model depth {depth}")
        return DeltaPolicy(self, depth)
