"""Block Hadamard rotations of a Linear layer's input dimension (LRQ-DiT, QuaRot).

For an orthogonal H, X Wᵀ = (X H)(W H)ᵀ. Rotating spreads a few outlier channels over all
channels of their block, so per-token activation quantization and per-channel weight quantization
both see flatter distributions (QuaRot, Ashkboos et al. 2024; LRQ-DiT, Yang et al. 2025, uses a
Hadamard rotation for layers with mild outliers as part of its Adaptive Rotation Scheme).

H here is block diagonal, I_{K/b} ⊗ H_b with H_b the normalised Sylvester Hadamard matrix of
size b (a power of two, symmetric, H_b H_b = I), so any K divisible by b works (DiT-B's 768 =
3·256). In a DiT the inputs of qkv and fc1 are adaLN-modulated (a per-sample channel scale sits
in front), and fc2 follows a GELU, so the rotation cannot be folded into the previous op and is
applied online: one (M·K/b, b) @ (b, b) float32 matmul per call, M·K·b MACs. That is not free
next to an int8 matmul: at DiT-B/2 shapes (M = 512, 1 thread) it took the block linears from
5.2x over fp32 to 3.7x with b = 64 and 2.4x with b = 256 (`python -m ditkit.compress.bench
--schemes w8a8,w8a8-rot64,w8a8-rot256`); a vectorised eager fast Walsh-Hadamard transform was
slower still. Use rotation where its accuracy gain is measured. (attn.proj's rotation could be
folded into the V rows of qkv at zero cost; not done here.)
"""

from __future__ import annotations

import torch


def hadamard_matrix(b: int, dtype=torch.float32) -> torch.Tensor:
    """Normalised Sylvester Hadamard matrix (b, b), b a power of two: symmetric and orthogonal."""
    if b < 1 or b & (b - 1):
        raise ValueError(f"Hadamard block size must be a power of two, got {b}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < b:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)  # [[H, H], [H, -H]]
    return (h / b ** 0.5).to(dtype)


_CACHE: dict[tuple, torch.Tensor] = {}


def shared_hadamard(b: int, device) -> torch.Tensor:
    """One float32 H_b per (size, device), shared by every layer (not a per-layer buffer)."""
    key = (b, str(device))
    if key not in _CACHE:
        _CACHE[key] = hadamard_matrix(b).to(device)
    return _CACHE[key]


def block_size_for(k: int, max_block: int) -> int:
    """The largest power of two <= max_block that divides k (1 = no rotation possible)."""
    b = 1
    while b * 2 <= max_block and k % (b * 2) == 0:
        b *= 2
    return b


def rotate(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ blockdiag(h, ..., h) with h (b, b): each run of b channels rotated."""
    b = h.shape[0]
    lead, k = x.shape[:-1], x.shape[-1]
    return (x.reshape(*lead, k // b, b) @ h).reshape(*lead, k)  # (..., K/b, b) -> (..., K)
