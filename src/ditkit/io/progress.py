"""Whole-run time estimates for progress lines: `RunEta`, `format_duration` and `RunBar`, a bar that shows them.

A progress bar's own estimate follows the latest steps, so a slow first step (allocation, warm-up)
makes it promise a day at the start. `RunEta` instead divides the time since the first
``warmup`` steps by the steps made since, and says nothing until that average exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm


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


# tqdm's bar without its remaining-time field, which follows the latest steps; `RunBar` puts the whole-run one after it
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class RunBar(tqdm):
    """One tqdm bar over a whole run on stderr, showing `RunEta`'s estimate of the time left.

    ``progress``: True shows it, False hides it, None shows it only when stderr is a terminal (so tests and
    logs get nothing). ``total`` may change during the run (a skipped part lowers it, a redraw raises it);
    the estimate follows. With ``unit="s"`` the bar counts seconds of a time-bounded run (update it to the
    elapsed seconds) and the time left is the budget's. ``note`` is appended after the estimate (e.g. a loss).
    """

    def __init__(self, total: int | None, desc: str, progress: bool | None = None, unit: str = "step",
                 warmup: int = 2, **kwargs):
        super().__init__(total=total, desc=desc, unit=unit, disable=None if progress is None else not progress,
                         dynamic_ncols=True, leave=True,
                         bar_format=BAR_FORMAT.replace("{total_fmt}", "{total_fmt} s") if unit == "s" else BAR_FORMAT,
                         **kwargs)
        self.eta = RunEta(total or 0, warmup=warmup)
        self.note = ""

    def update(self, n: float = 1) -> bool | None:
        if not self.disable:
            self.eta.total = self.total or 0
            self.eta.step(self.n + n)
            self.set_postfix_str(self.eta_text(self.n + n) + self.note, refresh=False)
        return super().update(n)

    def eta_text(self, done: float) -> str:
        if self.unit == "s":  # a time budget: what is left of it
            return f"eta {format_duration(max(0, (self.total or 0) - done))}"
        left, per = self.eta.seconds_left(), self.eta.seconds_per_step()
        return "eta ..." if left is None else f"eta {format_duration(left)} at {per:.2f} s/{self.unit}"

    def above(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """``say(line)`` with the bar cleared around it, so the line stands above the bar."""
        def said(line: str) -> None:
            with self.external_write_mode():
                say(line)

        return said

    def skip(self, n: int) -> None:
        """Lower the total by ``n`` steps that the run will not make after all."""
        if self.total is not None:
            self.total = max(self.n, self.total - n)
            self.refresh()

    def finish(self) -> None:
        """Fill the bar to its total: the run is done (e.g. a time-bounded loop that stopped on its step bound)."""
        if self.total is not None and self.n < self.total:
            self.update(self.total - self.n)
