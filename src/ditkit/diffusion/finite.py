"""NaN and Inf caught where they appear: in a sampler's latent after each step, in a training step's loss.

A non-finite value never becomes an image, a clip or a checkpoint: the first step that produces one
raises `NonFiniteError` (a ValueError, so the command line prints it as one line and exits 2), naming
the step. The check is one reduction over the latent per step, small next to a model call.
"""

from __future__ import annotations

import torch


class NonFiniteError(ValueError):
    """Sampling or training produced NaN or Inf values."""


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` if every value is finite, else NonFiniteError("<what> produced NaN or Inf values")."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{what} produced NaN or Inf values (a guidance scale, shift or weight out of range?)")
    return x
