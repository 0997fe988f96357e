"""Whole-run time estimates for progress lines: `RunEta` and `format_duration`.

A progress bar's own estimate follows the latest steps, so a slow first step (allocation, warm-up)
makes it promise a day at the start. `RunEta` instead divides the time since the first
``warmup`` steps by the steps made since, and says nothing until that average exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    """A duration for people: ``"42s"``, ``"12m 05s"``, ``"3h 07m"``, ``"2d 04h"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


@dataclass
class RunEta:
    """The time left in a run of ``total`` steps, from the average step time so far.

    Call `step` after each step with the number of steps done (``done`` counts steps of earlier,
    resumed runs too); the first ``warmup`` steps of this process (at least one) are left out of the average.
    """

    total: int
    warmup: int = 2
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _seen: int = field(default=0, init=False)
    _t0: float | None = field(default=None, init=False)
    _done0: int = field(default=0, init=False)
    _last: tuple[int, float] | None = field(default=None, init=False)

    def step(self, done: int) -> None:
        now = self.clock()
        self._seen += 1
        if self._seen == max(1, self.warmup):
            self._t0, self._done0 = now, done
        self._last = (done, now)

    def seconds_per_step(self) -> float | None:
        """The average over the steps after warm-up; None until there is one."""
        if self._t0 is None or self._last is None or self._last[0] <= self._done0:
            return None
        done, now = self._last
        return (now - self._t0) / (done - self._done0)

    def seconds_left(self) -> float | None:
        per = self.seconds_per_step()
        if per is None or self._last is None:
            return None
        return per * max(0, self.total - self._last[0])

    def __str__(self) -> str:
        left = self.seconds_left()
        if left is None:
            return "eta ..."
        return f"eta {format_duration(left)} at {self.seconds_per_step():.2f} s/step"
