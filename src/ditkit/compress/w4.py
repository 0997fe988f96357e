"""Packed 4-bit weight layers: W4A16 (float activations) and W4A8 (int8 activations, int8 matmul).

Both store two 4-bit weights per byte (`packing.py`) with one scale per group of ``group_size``
consecutive input channels (Q-DiT, Chen et al. 2025, uses groups of 128 for W4A8 DiTs), so a
(N, K) weight costs N·K/2 bytes plus the scales — ≥ 3.5× smaller than float32 in RAM and on disk.

W4A16Linear — asymmetric min-max per group: w ≈ q·Δ + m, q in 0..15, Δ and m in float16.
    No int4 x float kernel is used: each forward unpacks and dequantizes the weight to float32 and
    runs a float matmul (reported as "dequant-fp32", simulated compute). This saves memory, not time. (PyTorch's
    CPU int4 kernel ``_weight_int4pack_mm_for_cpu`` needs bf16 activations to be fast and keeps
    its own opaque layout; it is not used.)

W4A8Linear — two-level symmetric scales as in QServe (Lin et al. 2024, "QServe: W4A8KV4
Quantization and System Co-design", progressive group quantization):
    w ≈ s_i · (u_ig · q),  s_i fp32 per output channel, u_ig in 1..17 an integer per group,
    q in -7..7, so u·q lies in -119..119 and is itself an int8 weight. A forward unpacks q,
    multiplies by u in int8 (no float pass over the weight) and runs ``torch._int_mm`` on int8
    per-token activations exactly as `Int8Linear` does (reported as "int_mm").
    ``rotate=b`` adds a block Hadamard rotation of the input dimension (`rotation.py`).
    ``cache_int8=True`` keeps the unpacked int8 weight after the first forward: W8A8 speed, but
    the resident weight is then int8-sized (the file stays packed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .int8 import PATH_FALLBACK, PATH_INT_MM, dequantize_output, int8_mm, quantize_per_token
from .packing import pack_int4, unpack_int4, unpack_uint4
from .rotation import hadamard_matrix, shared_hadamard
from .rotation import rotate as rotate_fn

W4A8_ROW_MAX = 119  # 7 * 17: the largest int8 value the two-level scheme produces


def _padded(k: int, group_size: int) -> int:
    return -(-k // group_size) * group_size


class _W4Base(nn.Module):
    """Shared bookkeeping: shapes, K padding to whole groups, bias, byte counts."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int):
        super().__init__()
        if group_size <= 0 or group_size % 2:
            raise ValueError(f"group_size must be a positive even number, got {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.k_padded = _padded(in_features, group_size)
        self.n_groups = self.k_padded // group_size
        self.register_buffer("qweight", torch.zeros(out_features, self.k_padded // 2, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.calls = {PATH_INT_MM: 0, PATH_FALLBACK: 0, "dequant_fp32": 0}

    def _grouped_weight(self, linear: nn.Linear, smooth: torch.Tensor | None, rotate: int = 1) -> torch.Tensor:
        w = linear.weight.detach().float()  # (N, K)
        if smooth is not None:
            w = w * smooth.float().reshape(-1)  # W diag(s)
        if rotate > 1:
            w = rotate_fn(w, hadamard_matrix(rotate))  # W diag(s) H
        w = F.pad(w, (0, self.k_padded - self.in_features))  # (N, Kp), zero columns in the padding
        return w.reshape(self.out_features, self.n_groups, self.group_size)  # (N, G, g)

    def _set_bias(self, linear: nn.Linear) -> None:
        if linear.bias is not None:
            self.bias.copy_(linear.bias.detach().float())

    def _pad_input(self, x2: torch.Tensor) -> torch.Tensor:
        pad = self.k_padded - self.in_features
        return F.pad(x2, (0, pad)) if pad else x2  # (M, Kp)

    def weight_bytes(self) -> int:
        """Resident bytes of the persistent buffers (packed weight, scales, bias, smoothing)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")


class W4A16Linear(_W4Base):
    """4-bit asymmetric group-quantized weights, float activations, dequantize-then-matmul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 128):
        super().__init__(in_features, out_features, bias, group_size)
        self.register_buffer("scales", torch.ones(out_features, self.n_groups, dtype=torch.float16))
        self.register_buffer("mins", torch.zeros(out_features, self.n_groups, dtype=torch.float16))

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128) -> W4A16Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size)
        w = layer._grouped_weight(linear, None)  # (N, G, g)
        lo, hi = w.amin(-1), w.amax(-1)  # (N, G)
        step = ((hi - lo) / 15).clamp_min(1e-8).half()
        low = lo.half()
        q = torch.round((w - low.float()[..., None]) / step.float()[..., None]).clamp_(0, 15)  # (N, G, g)
        layer.qweight.copy_(pack_int4(q.reshape(layer.out_features, layer.k_padded)))
        layer.scales.copy_(step)
        layer.mins.copy_(low)
        layer._set_bias(linear)
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) float32: q·Δ + m per group, padding cropped."""
        q = unpack_uint4(self.qweight).reshape(self.out_features, self.n_groups, self.group_size)  # (N, G, g)
        w = torch.addcmul(self.mins.float()[..., None], q.float(), self.scales.float()[..., None])  # (N, G, g)
        return w.reshape(self.out_features, self.k_padded)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["dequant_fp32"] += 1
        return F.linear(x.float(), self.dequantized_weight(), self.bias)


class W4A8Linear(_W4Base):
    """4-bit two-level weights (int8 group scales), int8 per-token activations, int8 matmul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 128,
                 smooth: bool = False, cache_int8: bool = False, rotate: int = 1):
        super().__init__(in_features, out_features, bias, group_size)
        if rotate < 1 or in_features % rotate or rotate & (rotate - 1):
            raise ValueError(f"rotation block {rotate} must be a power of two dividing in_features={in_features}")
        self.rotate = rotate
        self.register_buffer("group_scales", torch.ones(out_features, self.n_groups, dtype=torch.int8))
        self.register_buffer("w_scale", torch.ones(out_features))
        self.register_buffer("inv_smooth", torch.ones(in_features) if smooth else None)
        self.cache_int8 = cache_int8
        self._w8: torch.Tensor | None = None  # unpacked int8 weight, only with cache_int8

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, smooth: torch.Tensor | None = None,
                    cache_int8: bool = False, rotate: int = 1) -> W4A8Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size,
                    smooth is not None, cache_int8, rotate)
        w = layer._grouped_weight(linear, smooth, rotate)  # (N, G, g) = W diag(s) H
        row = w.abs().amax(dim=(1, 2)).clamp_min(1e-12) / W4A8_ROW_MAX  # (N,) step of the int8 level
        gmax = w.abs().amax(-1) / row[:, None]  # (N, G) group max in int8 units, <= 119
        u = torch.ceil(gmax / 7 - 1e-6).clamp_(1, 17)  # (N, G) integer group scale, 7u >= gmax
        q = torch.round(w / (row[:, None, None] * u[..., None])).clamp_(-7, 7)  # (N, G, g)
        layer.qweight.copy_(pack_int4(q.reshape(layer.out_features, layer.k_padded)))
        layer.group_scales.copy_(u.to(torch.int8))
        layer.w_scale.copy_(row)
        if smooth is not None:
            layer.inv_smooth.copy_(1.0 / smooth.float().reshape(-1).clamp_min(1e-12))
        layer._set_bias(linear)
        return layer.to(linear.weight.device)

    def int8_weight(self) -> torch.Tensor:
        """(N, Kp) int8 = u·q, unpacked and scaled in int8 (cached with ``cache_int8``)."""
        if self._w8 is not None:
            return self._w8
        q = unpack_int4(self.qweight).reshape(self.out_features, self.n_groups, self.group_size)  # (N, G, g)
        w8 = (q * self.group_scales[..., None]).reshape(self.out_features, self.k_padded)  # (N, Kp), |w8| <= 119
        if self.cache_int8:
            self._w8 = w8
        return w8

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) float32 weight applied to the unsmoothed input."""
        w = (self.int8_weight().float() * self.w_scale[:, None])[:, : self.in_features]
        if self.rotate > 1:
            w = rotate_fn(w, hadamard_matrix(self.rotate))  # undo H (symmetric, H H = I)
        return w if self.inv_smooth is None else w * self.inv_smooth

    def weight_bytes(self, include_cache: bool = True) -> int:
        extra = self._w8.numel() if (include_cache and self._w8 is not None) else 0
        return super().weight_bytes() + extra

    def _apply(self, fn, *args, **kwargs):
        self._w8 = None  # device moves drop the cache; it is rebuilt on the next forward
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.float().reshape(-1, self.in_features)  # (M, K)
        inv = self.inv_smooth
        if self.rotate > 1:
            x2 = rotate_fn(x2 if inv is None else x2 * inv, shared_hadamard(self.rotate, x2.device))  # (M, K)
            inv = None
        xq, xs = quantize_per_token(x2, inv)  # (M, K) int8, (M, 1)
        acc, path = int8_mm(self._pad_input(xq), self.int8_weight().t())  # (M, N) int32
        self.calls[path] += 1
        return dequantize_output(acc, xs, self.w_scale, self.bias).reshape(*lead, self.out_features)
