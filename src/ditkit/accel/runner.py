"""`Accelerated`: a DiT wrapped with one cache policy and/or region-adaptive sampling.

It is a model (an ``nn.Module`` with the wrapped DiT's ``config`` and parameters, called as
``fast(x, t, y)``), so it goes wherever a model goes — ``ditkit.sample(fast, ...)``, a
``Pipeline``, any sampler, inside ``cfg(...)`` guidance — and it drives the DiT's public stages
itself: ``embed -> condition -> trunk (the policy) -> final``. The model's code is not touched.

State. One policy (and one RAS state) per *stream*, a batch signature (shape, dtype, device):
guidance runs 2N rows per call and N outside its interval, and each stream caches only what it
computed. All streams are dropped when a new generation starts — detected from network time
(see ``steps.GenerationClock``), or forced with ``reset()`` / ``begin(total_calls)`` — so no
state leaks from one generation into the next. ``begin(total_calls)`` also announces how many
calls a generation makes (`calls_per_generation`), which lets policies always compute the last
one; it holds for every later generation until the next ``begin``/``reset``.

Accounting (``fast.stats``): calls, generations, multiply-accumulates executed and those dense
compute would have needed (``ditkit.models.dit.macs_per_forward``), and the peak bytes held by
caches. Decisions (skip, forecast, token selection) are made once per call for the whole batch,
so with caching a sample can depend on what else is in its batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..models.dit import macs_per_forward
from .policy import CacheConfig, FullCompute, Policy, tensor_bytes
from .ras import RASConfig, RASState
from .steps import GenerationClock, Step
from .trunk import MacCounter, Trunk

STAGES = ("embed", "condition", "blocks", "final", "final_layer", "unpatchify", "config")


class UnsupportedCombination(ValueError):
    """Configs (or a config and a model) that ditkit does not combine; raised instead of degrading silently."""


def calls_per_generation(sampler: str, steps: int) -> int:
    """Model calls one generation makes (Heun: 2·steps - 1; every other ditkit sampler: steps)."""
    return 2 * steps - 1 if sampler == "heun" else steps


@dataclass
class AccelStats:
    calls: int = 0
    generations: int = 0
    macs: int = 0  # multiply-accumulates executed
    dense_macs: int = 0  # what full compute of the same calls would have executed
    peak_cache_bytes: int = 0  # largest total held by caches (they only grow within a generation)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def compute_fraction(self) -> float:
        return self.macs / self.dense_macs if self.dense_macs else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops, "compute_fraction": self.compute_fraction}


class _Stream:
    def __init__(self, policy: Policy, ras: RASState | None, dense_macs: int):
        self.policy, self.ras, self.dense_macs = policy, ras, dense_macs

    def tensors(self):
        return [*self.policy.tensors(), *(self.ras.tensors() if self.ras is not None else ())]


class Accelerated(nn.Module):
    """A ditkit DiT with a cache policy and/or RAS; see the module doc and `accelerate`."""

    def __init__(self, model: nn.Module, *configs):
        super().__init__()
        if isinstance(model, Accelerated):
            raise ValueError(f"the model is already accelerated ({model.describe()}); "
                             "pass every config to a single accelerate(model, ...) call")
        missing = [s for s in STAGES if not hasattr(model, s)]
        if missing:
            raise ValueError(f"accelerate() needs a ditkit DiT with the stages {', '.join(STAGES)}; "
                             f"{type(model).__name__} lacks {', '.join(missing)}")
        caches = [c for c in configs if isinstance(c, CacheConfig)]
        ras = [c for c in configs if isinstance(c, RASConfig)]
        other = [c for c in configs if not isinstance(c, (CacheConfig, RASConfig))]
        if other:
            raise ValueError(f"not an acceleration config: {other[0]!r} (guidance reuse wraps the guided model: "
                             "use ditkit.accel.cfg_reuse(accelerated_model, ...))")
        if len(caches) > 1:
            raise UnsupportedCombination(f"unsupported combination: {' + '.join(c.name for c in caches)}; one cache policy at "
                             "a time (RAS and guidance reuse combine with any one of them)")
        if len(ras) > 1:
            raise UnsupportedCombination("unsupported combination: RAS given twice")
        if ras and ras[0].enabled and getattr(model.config, "mlp_type", None) == "mixffn":
            raise UnsupportedCombination("unsupported combination: RAS computes token subsets, and this model's Mix-FFN "
                             "(mlp_type='mixffn') convolves over the full token grid")
        self.model = model
        self.cache_config: CacheConfig | None = caches[0] if caches else None
        self.ras_config: RASConfig | None = ras[0] if ras else None
        if self.cache_config is not None:
            self.cache_config.build(model)  # validate against the model now, not at the first call
        self._stats = AccelStats()
        self._clock = GenerationClock()
        self._streams: dict[tuple, _Stream] = {}
        self._total: int | None = None

    @property
    def config(self):
        return self.model.config

    def describe(self) -> str:
        parts = [c.describe() for c in (self.cache_config, self.ras_config) if c is not None]
        return " + ".join(parts) or "full compute"

    def extra_repr(self) -> str:
        return self.describe()

    # -- generations -----------------------------------------------------------------------
    @property
    def stats(self) -> AccelStats:
        """Counters since construction or `reset_stats` (cache memory: the peak at generation ends so far)."""
        self._note_cache_bytes()
        return self._stats

    def _note_cache_bytes(self) -> None:
        # caches only grow within a generation, so their peak is reached at its end: measured here
        # (before streams are dropped, and when stats are read) rather than after every call
        self._stats.peak_cache_bytes = max(self._stats.peak_cache_bytes, self.cache_bytes())

    def reset(self) -> None:
        """Drop every cache; the next call starts a new generation. Also forgets ``total_calls``."""
        self._note_cache_bytes()
        self._streams.clear()
        self._clock.reset()
        self._total = None

    def begin(self, total_calls: int | None = None) -> None:
        """Start a new generation now, optionally announcing its number of model calls."""
        self.reset()
        self._total = total_calls

    def reset_stats(self) -> None:
        self._stats = AccelStats()

    def cache_bytes(self) -> int:
        """Bytes held by every cache right now."""
        return tensor_bytes(t for s in self._streams.values() for t in s.tensors())

    # -- the call ----------------------------------------------------------------------------
    def _stream(self, x: torch.Tensor) -> _Stream:
        key = (tuple(x.shape), x.dtype, x.device)
        stream = self._streams.get(key)
        if stream is None:
            model = self.model
            policy = self.cache_config.build(model) if self.cache_config is not None else FullCompute()
            ras = RASState(self.ras_config, model) if self.ras_config is not None and self.ras_config.enabled else None
            grid_cfg = model.config.replace(input_size=tuple(x.shape[2:]))
            stream = self._streams[key] = _Stream(policy, ras, macs_per_forward(grid_cfg, x.shape[0]))
        return stream

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self._clock.tick(t):
            self._note_cache_bytes()
            self._streams.clear()
            self._stats.generations += 1
        model, cfg = self.model, self.model.config
        tokens, ctx = model.embed(x)  # (N, T, D)
        c = model.condition(t, y)  # (N, D)
        n, num_tokens, d = tokens.shape
        stream = self._stream(x)
        step = Step(self._clock.index, self._total, float(t.max()))

        counter = MacCounter()
        p2 = cfg.patch_size**2
        counter.add(n * (num_tokens * cfg.in_channels * p2 * d + cfg.frequency_embedding_size * d + d * d))
        view = hooks = rope = None
        if stream.ras is not None:
            view, hooks, rope = stream.ras.plan(step, ctx, num_tokens)
        trunk = Trunk(model, tokens, c, ctx, counter, view, hooks, rope)
        h = stream.policy.trunk(trunk, step)  # (N, K, D)
        out = stream.ras.finish(h, c, ctx) if stream.ras is not None else model.final(h, c, ctx)
        counter.add(n * (trunk.num_rows * d * p2 * cfg.out_channels + 2 * d * d))

        self._stats.calls += 1
        self._stats.macs += counter.macs
        self._stats.dense_macs += stream.dense_macs
        return out


def accelerate(model: nn.Module, *configs) -> Accelerated:
    """Wrap a ditkit DiT with at most one cache config and at most one `RASConfig`.

    Cache configs: `FORAConfig`, `DeltaDiTConfig`, `FirstBlockCacheConfig`, `TeaCacheConfig`,
    `TaylorSeerConfig`, `GatedTaylorConfig`. Unsupported combinations raise `UnsupportedCombination` (a ``ValueError``).
    """
    return Accelerated(model, *configs)
