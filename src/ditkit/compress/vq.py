"""Vector-quantized weights (VQ4DiT, Deng et al. 2025, "VQ4DiT: Efficient Post-Training Vector
Quantization for Diffusion Transformers").

A (N, K) weight is cut into d-dimensional sub-vectors along K, each replaced by the index of its
nearest entry in a per-layer codebook of k vectors found by k-means:

    ŵ[i, j·d:(j+1)·d] = row_scale[i] · C[codes[i, j]],   bits per weight = log2(k) / d

so k = 256, d = 4 gives 2 bits per weight (uint8 codes) and k = 4096, d = 4 gives 3 bits (12-bit
codes, two per three bytes). Rows are first divided by their RMS (``row_scale``, float16), so one
codebook serves rows of different magnitude. The codebook is float16.

`vq_calibrate.py` refines codebook and assignments without data (VQ4DiT's zero-data block-wise
calibration with soft candidate assignments). Compute is simulated: a forward decodes the weight
by table lookup to float32 and runs a float matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 32768  # points per distance block: bounds the (chunk, k) distance matrix


# ----------------------------------------------------------------------------- k-means


def nearest(points: torch.Tensor, centroids: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The n nearest centroids of each point: (indices (P, n), squared distances (P, n)), chunked."""
    c2 = centroids.pow(2).sum(1)  # (k,)
    idx, dist = [], []
    for lo in range(0, points.shape[0], CHUNK):
        p = points[lo:lo + CHUNK]  # (c, d)
        d2 = p.pow(2).sum(1, keepdim=True) - 2 * p @ centroids.t() + c2  # (c, k) = |p - C|^2
        v, i = d2.topk(n, dim=1, largest=False)
        idx.append(i)
        dist.append(v.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


def kmeans(points: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from k distinct random points: (centroids (k, d), assignment (P,)).

    Empty clusters are re-seeded with the points currently farthest from their centroid.
    """
    p = points.shape[0]
    if p < k:
        raise ValueError(f"k-means with {k} centroids needs at least {k} points, got {p}")
    g = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(p, generator=g)[:k]].clone()  # (k, d)
    for _ in range(iters):
        assign, dist = nearest(points, centroids)
        assign, dist = assign[:, 0], dist[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)  # (k, d)
        counts = torch.bincount(assign, minlength=k)  # (k,)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if bool(empty.any()):
            far = dist.topk(int(empty.sum())).indices
            centroids[empty] = points[far]
    return centroids, nearest(points, centroids)[0][:, 0]


# ----------------------------------------------------------------------------- 12-bit codes


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., J) codes < 2^bits -> uint8: 8-bit codes as is, 12-bit codes two per three bytes (J even)."""
    if bits == 8:
        return codes.to(torch.uint8)
    if bits != 12 or codes.shape[-1] % 2:
        raise ValueError(f"code packing supports 8 bits, or 12 bits with an even count; got {bits}, {codes.shape[-1]}")
    c = codes.to(torch.int32).reshape(*codes.shape[:-1], -1, 2)  # (..., J/2, 2)
    a, b = c[..., 0], c[..., 1]
    out = torch.stack((a & 0xFF, (a >> 8) | ((b & 0x0F) << 4), b >> 4), dim=-1)  # (..., J/2, 3)
    return out.to(torch.uint8).flatten(-2)  # (..., 3J/2)


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of `pack_codes`: int64 codes (..., J)."""
    if bits == 8:
        return packed.long()
    t = packed.long().reshape(*packed.shape[:-1], -1, 3)  # (..., J/2, 3)
    a = t[..., 0] | ((t[..., 1] & 0x0F) << 8)
    b = (t[..., 1] >> 4) | (t[..., 2] << 4)
    return torch.stack((a, b), dim=-1).flatten(-2)  # (..., J)


def code_bits(codebook_size: int) -> int:
    if codebook_size <= 256:
        return 8
    if codebook_size <= 4096:
        return 12
    raise ValueError(f"codebook size must be <= 4096, got {codebook_size}")


# ----------------------------------------------------------------------------- the layer


class VQLinear(nn.Module):
    """Linear layer with a k-means codebook over d-dim weight sub-vectors; compute by lookup + float matmul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, codebook_size: int = 256, dim: int = 4):
        super().__init__()
        if dim < 1 or in_features % dim:
            raise ValueError(f"sub-vector dim {dim} must divide in_features={in_features}")
        self.in_features, self.out_features, self.codebook_size, self.dim = in_features, out_features, codebook_size, dim
        self.bits = code_bits(codebook_size)
        j = in_features // dim
        if self.bits == 12 and j % 2:
            raise ValueError(f"12-bit codes need an even number of sub-vectors per row, got {j}")
        self.register_buffer("codebook", torch.zeros(codebook_size, dim, dtype=torch.float16))
        self.register_buffer("codes", torch.zeros(out_features, j * self.bits // 8, dtype=torch.uint8))
        self.register_buffer("row_scale", torch.ones(out_features, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.calls = {"dequant_fp32": 0}

    @classmethod
    def from_linear(cls, linear: nn.Linear, codebook_size: int = 256, dim: int = 4, iters: int = 20,
                    seed: int = 0) -> VQLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, codebook_size, dim)
        w = linear.weight.detach().float()  # (N, K)
        scale = w.pow(2).mean(1).sqrt().clamp_min(1e-8).half()  # (N,) row RMS, as stored
        sub = (w / scale.float()[:, None]).reshape(-1, dim)  # (N*K/d, d)
        centroids, assign = kmeans(sub, min(codebook_size, sub.shape[0]), iters, seed)
        layer.codebook[: centroids.shape[0]] = centroids.half()
        layer.set_codes(assign.reshape(layer.out_features, -1))
        layer.row_scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def set_codes(self, codes: torch.Tensor) -> None:
        """Store (N, K/d) integer codes packed."""
        self.codes.copy_(pack_codes(codes, self.bits))

    def code_indices(self) -> torch.Tensor:
        """(N, K/d) int64 codebook indices."""
        return unpack_codes(self.codes, self.bits)

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) float32: codebook lookup of every sub-vector, times the row scale."""
        w = self.codebook.float()[self.code_indices()]  # (N, K/d, d)
        return w.reshape(self.out_features, self.in_features) * self.row_scale.float()[:, None]

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["dequant_fp32"] += 1
        return F.linear(x.float(), self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, codebook_size={self.codebook_size}, "
                f"dim={self.dim}, bits_per_weight={self.bits / self.dim:g}")
