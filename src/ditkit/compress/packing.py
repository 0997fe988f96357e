"""Two 4-bit values per byte: the storage format of every 4-bit weight in ditkit.

Layout of a packed (N, K/2) uint8 tensor for a logical (N, K) 4-bit tensor: byte [i, j] holds
element [i, 2j] in its low nibble and [i, 2j+1] in its high nibble. Signed values (-8..7) are
stored as two's-complement nibbles, so unpacking them is two shifts (sign extension by an
arithmetic right shift), no subtraction. All functions are vectorised over the whole tensor.
"""

from __future__ import annotations

import torch


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., K) integers in -8..15 (signed -8..7 or unsigned 0..15), K even -> (..., K/2) uint8."""
    if q.shape[-1] % 2:
        raise ValueError(f"packing 4-bit values needs an even last dimension, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 15):
        raise ValueError("4-bit packing takes values in -8..15")
    nib = (q.to(torch.int16) & 0x0F).to(torch.uint8)  # two's complement nibbles for negatives
    pairs = nib.reshape(*q.shape[:-1], q.shape[-1] // 2, 2)  # (..., K/2, 2) = (low, high)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_uint4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) uint8 in 0..15."""
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)  # (..., K/2, 2) -> (..., K)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8 in -8..7 (sign-extended nibbles)."""
    signed = packed.view(torch.int8)
    lo = (signed << 4) >> 4  # low nibble moved up, then arithmetic shift back: sign-extended
    hi = signed >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)  # (..., K/2, 2) -> (..., K)
