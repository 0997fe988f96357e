"""Learning-rate schedule shared by every training loop: linear warm-up, then constant or cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup: int, total: int, *, min_ratio: float = 0.0, cosine: bool = True) -> float:
    """lr at `step`: linear warm-up over `warmup` steps, then cosine from lr down to min_ratio * lr at `total`
    (or constant lr when cosine is False)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if not cosine:
        return lr
    cos = math.cos(math.pi * (min(step, total) - warmup) / max(1, total - warmup))
    return lr * min_ratio + lr * (1 - min_ratio) * 0.5 * (1 + cos)
