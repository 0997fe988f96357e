"""TeaCache: skip whole calls while the timestep-modulated input has changed little — with a
rescaling polynomial that ditkit fits for each model itself.

Liu et al. 2025, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model"
(arXiv:2411.19108). The signal is block 0's adaLN-modulated normed input m = modulate(norm1(x),
shift, scale): cheap, and it carries both the noisy input and the timestep. Per call

    delta = mean|m_t - m_prev| / mean|m_prev|,   acc += max(poly(delta), 0)

and the trunk is skipped (tokens out = tokens in + the cached trunk residual of the last full call)
while acc < threshold; a full call resets acc to 0. The first call, and the last when announced
with ``begin(total)``, are always full; m_prev is updated on every call. ``threshold <= 0`` never
skips (the polynomial may be negative, so this is an explicit guard): the baseline, bit for bit.
Negative polynomial values are clipped to 0 so that the accumulator never runs backwards.

The polynomial maps the input change to the change of what a skipped call reuses. TeaCache ships
hand-fitted coefficients per model; ditkit fits them from the model itself: `fit_teacache` runs
full-compute trajectories, records for each pair of consecutive calls
    x = relative L1 change of m,  y = relative L1 change of the trunk residual (tokens out - in),
and fits y ~ poly(x) by least squares (numpy.polyfit), reporting R² so a poor fit is visible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .policy import CacheConfig, Policy, relative_l1
from .steps import Step
from .trunk import Trunk


def _poly(coefficients: tuple[float, ...], x: float) -> float:
    y = 0.0
    for c in coefficients:  # Horner, highest degree first (numpy.polyfit order)
        y = y * x + c
    return y


class TeaCachePolicy(Policy):
    def __init__(self, cfg: TeaCacheConfig):
        self.cfg = cfg
        self.prev: torch.Tensor | None = None  # (N, T, D) modulated input of the previous call
        self.residual: torch.Tensor | None = None  # (N, T, D) trunk residual of the last full call
        self.acc = 0.0
        self.skipped = 0

    def tensors(self):
        return [self.prev, self.residual]

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        view, x = trunk.view, trunk.x
        m = trunk.modulated_input(0, x)  # (N, K, D)
        must = self.cfg.threshold <= 0 or self.residual is None or self.prev is None or step.last
        if not must:
            self.acc += max(_poly(self.cfg.coefficients, relative_l1(m, view.take(self.prev))), 0.0)
        self.prev = view.put(self.prev, m)
        if not must and self.acc < self.cfg.threshold:
            self.skipped += 1
            return x + view.take(self.residual)
        self.acc = 0.0
        h = trunk.run(x)
        self.residual = view.put(self.residual, h - x)
        return h


@dataclass(frozen=True)
class TeaCacheConfig(CacheConfig):
    """TeaCache with a polynomial rescaling (highest degree first); fit it with `fit_teacache`."""

    threshold: float = 0.1  # skip while the accumulated rescaled change stays below this (0 = never)
    coefficients: tuple[float, ...] = (1.0, 0.0)  # poly(x); the default (identity) uses the raw change

    name = "TeaCache"

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if not self.coefficients or not all(np.isfinite(self.coefficients)):
            raise ValueError(f"coefficients must be a non-empty sequence of finite numbers, got {self.coefficients!r}")

    def build(self, model) -> Policy:
        return TeaCachePolicy(self)


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class TeaCacheFit:
    """A fitted TeaCache polynomial and how well it fits."""

    coefficients: tuple[float, ...]  # highest degree first
    r2: float  # coefficient of determination on the calibration pairs
    num_pairs: int
    x_range: tuple[float, float]  # range of the input changes seen
    setting: dict = field(default_factory=dict)  # sampler, steps, cfg scale, seeds used

    def config(self, threshold: float) -> TeaCacheConfig:
        return TeaCacheConfig(threshold=threshold, coefficients=self.coefficients)

    def to_dict(self) -> dict:
        return {"coefficients": list(self.coefficients), "r2": self.r2, "num_pairs": self.num_pairs,
                "x_range": list(self.x_range), "setting": self.setting}

    def save(self, path: str | Path) -> None:
        """Write the fit as JSON, atomically (a kill leaves the old file or the new one, never a partial one)."""
        from ..io.atomic import atomic_write

        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TeaCacheFit:
        d = json.loads(Path(path).read_text())
        return cls(tuple(d["coefficients"]), float(d["r2"]), int(d["num_pairs"]), tuple(d["x_range"]),
                   d.get("setting", {}))


class _RecordPolicy(Policy):
    """Full compute; appends (input change, residual change) of consecutive calls to a list."""

    def __init__(self, sink: list):
        self.sink = sink
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None

    def trunk(self, trunk: Trunk, step: Step) -> torch.Tensor:
        x = trunk.x
        m = trunk.modulated_input(0, x)
        h = trunk.run(x)
        r = h - x
        if self.prev is not None:
            self.sink.append((relative_l1(m, self.prev[0]), relative_l1(r, self.prev[1])))
        self.prev = (m, r)
        return h


@dataclass(frozen=True, eq=False)
class _RecordConfig(CacheConfig):
    sink: list = field(default_factory=list)

    name = "TeaCache-calibration"

    def build(self, model) -> Policy:
        return _RecordPolicy(self.sink)


def fit_teacache(model, labels, *, process, sampler: str = "euler", steps: int = 50, seeds=(0,),
                 cfg_scale: float = 1.0, shift: float = 1.0, degree: int = 4, batch_size: int = 64) -> TeaCacheFit:
    """Fit TeaCache's rescaling polynomial for ``model`` on full-compute trajectories.

    Runs ``ditkit.sample`` for each seed with the given labels, sampler, steps and guidance (fit
    with the setting you will sample with: the pairs depend on it), collects one
    (input change, residual change) pair per consecutive pair of calls, and fits a polynomial of
    ``degree`` with numpy.polyfit. Returns coefficients (highest degree first) and R².
    """
    from ..diffusion.sample import sample
    from .runner import Accelerated

    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    sink: list[tuple[float, float]] = []
    runner = Accelerated(model, _RecordConfig(sink))
    for seed in seeds:
        sample(runner, labels, process=process, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=int(seed),
               shift=shift, batch_size=batch_size, progress=False)
    pairs = np.array([p for p in sink if np.isfinite(p).all()], dtype=np.float64)
    if len(pairs) <= degree:
        raise ValueError(f"{len(pairs)} calibration pairs cannot fit a degree-{degree} polynomial; "
                         "use more steps or seeds, or a lower degree")
    x, y = pairs[:, 0], pairs[:, 1]
    coefficients = np.polyfit(x, y, degree)
    ss_res = float(((np.polyval(coefficients, x) - y) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    setting = {"sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "shift": shift, "seeds": [int(s) for s in seeds]}
    return TeaCacheFit(tuple(float(c) for c in coefficients), r2, len(pairs), (float(x.min()), float(x.max())), setting)
