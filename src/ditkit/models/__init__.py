"""DiT models: the network, its building blocks and reference-checkpoint interop."""

from ..config import DiTConfig
from .dit import DiT

__all__ = ["DiT", "DiTConfig"]
