"""Where a wrapper is within a generation: the step record, the generation clock, static schedules.

A wrapper only ever sees ``model_fn(x, t, ...)`` calls, so it must find out by itself when one
generation ends and the next begins — caches must never leak from one image to the next.
`GenerationClock` does that from network time alone (see ``ditkit.diffusion``): within one
generation t moves monotonically (every ditkit sampler; Heun repeats a t, never goes back), so
a call whose t steps against the established direction, or returns to the first t of the
generation, starts a new one. This also covers `pipeline.sample`, which runs one generation per
batch with the same wrapper, and SiT-convention processes whose t grows. ``begin()``/``reset()``
on the wrappers force the same thing explicitly.

Steps are counted in model calls (Heun makes two per step), as TaylorSeer counts its
activated steps in integer indices (Liu et al. 2025, "From Reusing to Forecasting").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Step:
    """One model call: its index in the generation, the total if announced, and network time."""

    index: int  # 0-based model-call index within the generation
    total: int | None  # number of calls in the generation, if announced with begin(total)
    t: float  # network time of the call (max over the batch)

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.total is not None and self.index >= self.total - 1


def periodic(step: Step, interval: int, warmup: int = 0) -> bool:
    """Static schedule (FORA, TaylorSeer): full compute on the first ``warmup`` calls and then on
    every ``interval``-th call; ``interval = 1`` computes every call."""
    return step.index < warmup or (step.index - warmup) % interval == 0


class GenerationClock:
    """Counts the calls of one generation and detects the start of the next from network time."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.index = -1  # index of the current call; -1 before the first
        self._t_start: float | None = None
        self._t_prev: float | None = None
        self._direction = 0.0  # sign of dt within this generation once known (0: not yet)

    def tick(self, t: torch.Tensor | float) -> bool:
        """Register a call at network time ``t``; True when it starts a new generation."""
        tv = float(t.max()) if isinstance(t, torch.Tensor) else float(t)
        new = self._t_start is None
        if not new:
            dt = tv - self._t_prev
            if tv == self._t_start or (self._direction and dt * self._direction < 0):
                new = True
        if new:
            self.index, self._t_start, self._direction = 0, tv, 0.0
        else:
            self.index += 1
            if not self._direction and tv != self._t_prev:
                self._direction = 1.0 if tv > self._t_prev else -1.0
        self._t_prev = tv
        return new
