"""The policy protocol: how a cache method decides, per call, what of the trunk to compute.

A method is two small things:

* a frozen dataclass **config** (subclass of `CacheConfig`) holding its settings, validated on
  construction, with a ``build(model)`` that returns a fresh policy;
* a stateful **policy** with one method, ``trunk(trunk, step) -> tokens``: given the call's
  `Trunk` (tokens in, blocks and branches on demand, see ``trunk.py``) and its `Step`
  (``steps.py``), return the tokens leaving the last block for the rows in view. What it keeps
  between calls is its cache; ``tensors()`` lists it so the runner can report its memory.

The runner (``runner.py``) owns everything else — the stages before and after the trunk, one
policy per batch signature (guidance may switch between N and 2N rows), resetting at each new
generation by dropping the policies, region-adaptive token selection, and compute accounting.
So a policy never sees another generation's state, and policies compose with RAS and guidance
without knowing about them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from .steps import Step
from .trunk import Trunk


class Policy:
    """Per-stream state of one cache method. Subclasses implement ``trunk`` and ``tensors``."""

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def tensors(self) -> Iterable[torch.Tensor]:
        """Every tensor held between calls (for the cache-memory report)."""
        return ()


class FullCompute(Policy):
    """No caching: every block on every call (the baseline, and the trunk under RAS alone)."""

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        return trunk.run(trunk.x)


@dataclass(frozen=True)
class CacheConfig:
    """Base of the cache-method configs; ``name`` is used in reports and error messages."""

    name: ClassVar[str] = "cache"

    def build(self, model) -> Policy:
        raise NotImplementedError

    def describe(self) -> str:
        """``Name(field=value, ...)`` of the fields that differ from the defaults."""
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name[0] != "_" and getattr(self, f.name) != f.default]
        return f"{self.name}({', '.join(parts)})"


def check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def relative_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean|a - b| / mean|b| over the whole batch (one decision per call); inf if b is all zeros."""
    den = b.abs().mean().item()
    num = (a - b).abs().mean().item()
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def unique_tensors(items: Iterable[torch.Tensor | None]) -> Iterator[torch.Tensor]:
    """Yield the distinct tensors (by storage) among ``items``, skipping None."""
    seen: set[int] = set()
    for t in items:
        if t is None:
            continue
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            yield t


def tensor_bytes(items: Iterable[torch.Tensor | None]) -> int:
    """Bytes held by the distinct storages among ``items``."""
    return sum(t.untyped_storage().nbytes() for t in unique_tensors(items))
