"""Confidence-gated Taylor forecasting: compute block 0, forecast the rest, fall back when unsure.

After "Forecasting When to Forecast: Accelerating Diffusion Models with Confidence-Gated Taylor"
(CG-Taylor, 2025; code liuxiao-guan/CG-Taylor-DiT):
forecast only what leaves the trunk (little memory, unlike per-block TaylorSeer), and decide
each call whether the forecast can be trusted with a check that costs one block:

1. always compute block 0: x_1 = B_0(x);
2. once ``min_full`` full calls have built a history, forecast x_1 with a Taylor expansion of
   order ``block_order`` and measure  e = mean|x̂_1 - x_1| / mean|x_1|  (one decision per call);
3. if e < threshold, accept: the tokens leaving the trunk are x_1 + R̂, R̂ the order-``order``
   Taylor forecast of the residual of blocks 1..L-1; blocks 1..L-1 are skipped;
4. otherwise run blocks 1..L-1 and refresh both forecasts (x_1 and that residual) at this call.

ditkit forecasts the residual of blocks 1..L-1 on top of the freshly computed x_1 (as the
first-block cache reuses it) rather than the last hidden state itself, so the part of the state
that is known exactly this call is never replaced by a forecast. Derivatives are finite
differences over full calls, as in TaylorSeer (``forecast.py``). ``threshold <= 0`` never accepts:
the baseline, bit for bit. The last call is full when announced with ``begin(total)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .forecast import TaylorFeature
from .policy import CacheConfig, Policy, check_positive_int, relative_l1
from .steps import Step
from .trunk import Trunk


class GatedTaylorPolicy(Policy):
    def __init__(self, cfg: GatedTaylorConfig):
        self.cfg = cfg
        self.first = TaylorFeature(cfg.block_order)  # block 0's output
        self.rest = TaylorFeature(cfg.order)  # residual of blocks 1..L-1
        self.full_calls = 0
        self.accepted = 0

    def tensors(self):
        return [*self.first.tensors(), *self.rest.tensors()]

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        view, k = trunk.view, step.index
        x1 = trunk.block(0, trunk.x)  # (N, K, D)
        if self.cfg.threshold > 0 and self.full_calls >= self.cfg.min_full and not step.last:
            if relative_l1(self.first.forecast(view, k), x1) < self.cfg.threshold:
                self.accepted += 1
                return x1 + self.rest.forecast(view, k)
        h = trunk.run(x1, 1)
        self.first.update(view, x1, k)
        self.rest.update(view, h - x1, k)
        self.full_calls += 1
        return h


@dataclass(frozen=True)
class GatedTaylorConfig(CacheConfig):
    """CG-Taylor: Taylor forecast of the trunk, gated by block 0's forecast error."""

    threshold: float = 0.01  # accept while block 0's relative forecast error is below this (0 = never)
    order: int = 1  # Taylor order of the forecast of blocks 1..L-1 (the paper's max_order)
    block_order: int = 2  # Taylor order of block 0's forecast used by the gate (max_block_order)
    min_full: int = 2  # full calls before the gate may accept (the paper's mid_cor)

    name = "GatedTaylor"

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")
        check_positive_int("order", self.order, minimum=0)
        check_positive_int("block_order", self.block_order, minimum=0)
        check_positive_int("min_full", self.min_full)

    def build(self, model) -> Policy:
        if len(model.blocks) < 2:
            raise ValueError("GatedTaylor needs a model with at least 2 blocks")
        return GatedTaylorPolicy(self)
