"""The seeding rule of the samplers and pipelines: sample i's noise depends on the seed and i alone.

A batch of samples lo..hi-1 gets one generator per sample, sample i's seeded ``seed + i``
(`sample_generators`), and every draw takes row i from generator i (`randn`). The noise of a sample
is then the same whatever the batch it is computed in, so ``batch_size`` changes memory and speed,
never results. (Seeds of neighbouring samples overlap across calls: seed 0's sample 1 is seed 1's
sample 0.) `ditkit.sample` draws the initial images of all N samples at once from one generator
seeded ``seed``, which is batch-independent too, and the per-sample generators for the step noise of
the stochastic samplers; the video pipeline draws every noise of a clip (its frames, each rollout
window, the guidance noise of a given frame) from the clip's generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_generators(seed: int, lo: int, hi: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """Generators of samples lo..hi-1 on ``device``: sample i's seeded ``seed + i``."""
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(lo, hi)]


def randn(shape, generator: Generators = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn on the generators' device (so a seed gives the same
    values on every device). ``generator``: None (the global generator), one generator for the whole tensor,
    or one per row of ``shape[0]``, row i drawn from the i-th alone."""
    if generator is None or isinstance(generator, torch.Generator):
        where = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
    rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype).to(device) for g in generator]
    return torch.cat(rows) if rows else torch.empty(shape, device=device, dtype=dtype)


__all__ = ["Generators", "randn", "sample_generators"]
