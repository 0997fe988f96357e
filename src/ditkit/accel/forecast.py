"""Static caching and Taylor forecasting: FORA and TaylorSeer, one policy with an order m.

FORA (Selvaraju et al. 2024, "FORA: Fast-Forward Caching in Diffusion Transformer Acceleration",
arXiv:2407.01425): compute the blocks every ``interval`` calls and reuse the cached features in
between. With ``granularity="branch"`` (the paper's) the cached features are each block's
attention and MLP outputs *before* the adaLN gate; the gates are recomputed from the current
conditioning and the tokens flow through the residual adds as usual. With
``granularity="trunk"`` the single cached feature is the trunk's residual (tokens out minus tokens
in, i.e. the sum of every block's residual), applied to the current input: L times less memory.

TaylorSeer (Liu et al. 2025, "From Reusing to Forecasting: Accelerating Diffusion Models with
TaylorSeers", arXiv:2503.06923): instead of reusing a feature F, forecast it. At each full step
k, with the previous full step k', finite differences build the derivatives
    d_0 = F(k),   d_{i+1} = (d_i(k) - d_i(k')) / (k - k'),   i < m
(an order only once the previous value of the lower one exists), and a skipped step j uses
    F(j) ~ sum_i d_i (j - k)^i / i!.
Order 0 is exactly FORA: ``FORAConfig(...)`` and ``TaylorSeerConfig(order=0, ...)`` with the same
schedule give identical samples. Distances are in model calls (the paper's integer steps).

Schedule: full compute on the first ``warmup`` calls (TaylorSeer's ``first_enhance``), then on
every ``interval``-th call; ``interval=1`` is the baseline, bit for bit.

Under region-adaptive sampling a full step refreshes only the tokens in view; `TaylorFeature`
therefore keeps the last-refresh step per token, and each token is forecast from its own
history (derivative orders that a token has not reached yet are zero for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import CacheConfig, Policy, check_positive_int
from .steps import Step, periodic
from .trunk import Trunk, View

GRANULARITIES = ("branch", "trunk")


class TaylorFeature:
    """Finite-difference derivatives of one cached feature, full size (N, T, ...), see module doc."""

    def __init__(self, order: int):
        self.order = order
        self.derivs: list[torch.Tensor] = []  # d_0 .. d_j, j <= order, each (N, T, ...)
        self.last: torch.Tensor | None = None  # (N, T) float32 call index of each token's last refresh

    @property
    def ready(self) -> bool:
        return bool(self.derivs)

    def tensors(self) -> list[torch.Tensor]:
        return [*self.derivs, self.last]

    def update(self, view: View, value: torch.Tensor, index: int) -> None:
        """Refresh the rows in view with a freshly computed value (N, K, ...) at call ``index``."""
        if not self.derivs:
            if not view.full:
                raise RuntimeError("the first refresh of a cached feature must cover every token")
            self.derivs = [value]
            self.last = torch.full(value.shape[:2], float(index), device=value.device)  # (N, T)
            return
        new = [value]
        if self.order > 0:
            dt = (index - view.take(self.last)).to(value.dtype)  # (N, K): small integers, exact in any float
            dt = dt.view(*value.shape[:2], *([1] * (value.ndim - 2)))  # (N, K, 1, ...)
            for i in range(min(self.order, len(self.derivs))):
                new.append((new[i] - view.take(self.derivs[i])) / dt)
        for i, d in enumerate(new):
            if i < len(self.derivs):
                self.derivs[i] = view.put(self.derivs[i], d)
            else:  # a new order: tokens outside the view have no history for it yet -> 0
                self.derivs.append(view.put(torch.zeros_like(self.derivs[0]), d))
        self.last = view.put(self.last, torch.full(value.shape[:2], float(index), device=value.device))

    def forecast(self, view: View, index: int) -> torch.Tensor:
        """sum_i d_i x^i / i! with x = index - last refresh, for the rows in view (N, K, ...)."""
        out = view.take(self.derivs[0])
        if len(self.derivs) == 1:
            return out  # order 0: the cached value itself (FORA)
        x = (index - view.take(self.last)).to(out.dtype).view(*out.shape[:2], *([1] * (out.ndim - 2)))  # (N, K, 1, ...)
        term = torch.ones_like(x)
        for i in range(1, len(self.derivs)):
            term = term * x / i  # x^i / i!
            out = out + view.take(self.derivs[i]) * term
        return out


class ForecastPolicy(Policy):
    """Reuse (order 0) or Taylor-forecast (order m) cached features between periodic full calls."""

    def __init__(self, interval: int, warmup: int, order: int, granularity: str):
        self.interval, self.warmup, self.order, self.granularity = interval, warmup, order, granularity
        self.features: dict[tuple, TaylorFeature] = {}

    def tensors(self):
        return [t for f in self.features.values() for t in f.tensors()]

    def _feature(self, key: tuple) -> TaylorFeature:
        if key not in self.features:
            self.features[key] = TaylorFeature(self.order)
        return self.features[key]

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        full = periodic(step, self.interval, self.warmup) or not self.features
        k, view, x = step.index, trunk.view, trunk.x
        if self.granularity == "trunk":
            feat = self._feature(("trunk",))
            if not full:
                return x + feat.forecast(view, k)
            h = trunk.run(x)
            feat.update(view, h - x, k)
            return h
        for i in range(trunk.depth):  # "branch": pre-gate attention and MLP outputs of every block
            for branch in ("attn", "mlp"):
                feat = self._feature((i, branch))
                if full:
                    y = trunk.attn_pre(i, x) if branch == "attn" else trunk.mlp_pre(i, x)
                    feat.update(view, y, k)
                else:
                    y = feat.forecast(view, k)
                x = x + trunk.gate(i, branch) * y  # (N, K, D); gates always from the current c
        return x


def _check_schedule(interval: int, warmup: int, granularity: str) -> None:
    check_positive_int("interval", interval)
    check_positive_int("warmup", warmup, minimum=0)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


@dataclass(frozen=True)
class FORAConfig(CacheConfig):
    """FORA static caching: full compute every ``interval`` calls, cached features reused between."""

    interval: int = 3  # N: full compute every N-th call (1 = baseline); the paper's default is 3
    warmup: int = 0  # full-compute calls at the start before the periodic schedule (which starts full)
    granularity: str = "branch"  # "branch": pre-gate attn/MLP outputs per block; "trunk": one residual

    name = "FORA"

    def __post_init__(self):
        _check_schedule(self.interval, self.warmup, self.granularity)

    def build(self, model) -> Policy:
        return ForecastPolicy(self.interval, self.warmup, 0, self.granularity)


@dataclass(frozen=True)
class TaylorSeerConfig(CacheConfig):
    """TaylorSeer: order-m finite-difference forecasts of the cached features between full calls."""

    interval: int = 4  # N: full compute every N-th call (the paper's DiT setting is N=4, m=4)
    order: int = 2  # m: Taylor order (0 = FORA)
    warmup: int = 2  # full-compute calls at the start (the paper's first_enhance)
    granularity: str = "branch"  # as in FORAConfig

    name = "TaylorSeer"

    def __post_init__(self):
        _check_schedule(self.interval, self.warmup, self.granularity)
        check_positive_int("order", self.order, minimum=0)

    def build(self, model) -> Policy:
        return ForecastPolicy(self.interval, self.warmup, self.order, self.granularity)
