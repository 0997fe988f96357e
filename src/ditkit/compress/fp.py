"""Floating-point weight formats: FP8 (E4M3, E5M2) and FP4 (E2M1), stored truly low-bit.

FP4DiT (Chen et al. 2025, "FP4DiT: Towards Effective Floating Point Quantization for Diffusion
Transformers") quantizes DiT weights to a scaled minifloat grid x = s·(−1)^b·2^(e−bias)·(1+m/2^M),
and activations token-wise online. Formats here:

    E4M3 (fn)  8 bits, max 448       stored as torch.float8_e4m3fn, one fp32 scale per output channel
    E5M2       8 bits, max 57344     stored as torch.float8_e5m2,   one fp32 scale per output channel
    E2M1       4 bits, values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}, two codes per byte (`packing.py`,
               code = sign·8 + magnitude index), one fp16 scale per group of ``group_size`` inputs
               (32 by default, the OCP MX block size)

E2M1 scales come from a small per-group search over clipping ratios that minimises the weight
MSE (round-to-nearest on the grid; FP4DiT's scale-aware AdaRound is not implemented). Optional
FP8 E4M3 activations use one dynamic scale per token (``act_format="e4m3"``).

Compute is simulated: there is no FP8/FP4 matmul kernel on the CPU (nor used on GPU here), so a
forward decodes the weight to float32 (and rounds activations through FP8 when asked) and runs a
float matmul. Memory and files are real; speed is not — reports label these layers so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .packing import pack_int4, unpack_uint4

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
FORMATS = ("e4m3", "e5m2", "e2m1")


def fp8_max(fmt: str) -> float:
    return float(torch.finfo(FP8_DTYPES[fmt]).max)


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """Round already-scaled values to the nearest E2M1 value: uint8 codes 0..15 (bit 3 = sign)."""
    mags = torch.tensor(E2M1_MAGNITUDES, device=x.device)
    mids = (mags[1:] + mags[:-1]) / 2  # (7,) decision thresholds between neighbouring values
    idx = torch.bucketize(x.abs().clamp(max=E2M1_MAX), mids)  # (...,) magnitude index 0..7
    return (idx + 8 * (x < 0)).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 -> float32 values."""
    mags = torch.tensor(E2M1_MAGNITUDES, device=codes.device)
    table = torch.cat([mags, -mags])  # (16,) code -> value
    return table[codes.long()]


def fake_quant_fp8_per_token(x: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """Round each row of x (M, K) through FP8 with its own absmax scale (simulated activation quantization)."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-12) / fp8_max(fmt)  # (M, 1)
    return (x / scale).to(FP8_DTYPES[fmt]).float() * scale


def _e2m1_groups(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, G, g) -> (codes uint8 (N, G, g), scales fp16 (N, G)) with the MSE-best clipping per group."""
    absmax = w.abs().amax(-1).clamp_min(1e-12)  # (N, G)
    best_err = best_scale = None
    for r in CLIP_RATIOS:
        scale = (r * absmax / E2M1_MAX).half().float()  # (N, G), as stored
        deq = e2m1_decode(e2m1_encode(w / scale[..., None])) * scale[..., None]  # (N, G, g)
        err = (deq - w).pow(2).sum(-1)  # (N, G)
        if best_err is None:
            best_err, best_scale = err, scale
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
    return e2m1_encode(w / best_scale[..., None]), best_scale.half()


class FPLinear(nn.Module):
    """Linear layer with FP8 or FP4 (E2M1) weights; compute by decoding to float32 (simulated)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fmt: str = "e4m3",
                 group_size: int = 32, act_format: str | None = None):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"unknown float format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if act_format not in (None, *FP8_DTYPES):
            raise ValueError(f"activation format must be None, 'e4m3' or 'e5m2', got {act_format!r}")
        if fmt == "e2m1" and (group_size <= 0 or group_size % 2):
            raise ValueError(f"group_size must be a positive even number, got {group_size}")
        self.in_features, self.out_features = in_features, out_features
        self.fmt, self.act_format, self.group_size = fmt, act_format, group_size
        if fmt == "e2m1":
            self.k_padded = -(-in_features // group_size) * group_size
            n_groups = self.k_padded // group_size
            self.register_buffer("qweight", torch.zeros(out_features, self.k_padded // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16))
        else:
            self.k_padded = in_features
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=FP8_DTYPES[fmt]))
            self.register_buffer("scales", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.calls = {"dequant_fp32": 0}

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = "e4m3", group_size: int = 32,
                    act_format: str | None = None) -> FPLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, fmt, group_size, act_format)
        w = linear.weight.detach().float()  # (N, K)
        if fmt == "e2m1":
            w = F.pad(w, (0, layer.k_padded - layer.in_features))  # (N, Kp)
            codes, scales = _e2m1_groups(w.reshape(layer.out_features, -1, group_size))  # (N, G, g), (N, G)
            layer.qweight.copy_(pack_int4(codes.reshape(layer.out_features, layer.k_padded)))
            layer.scales.copy_(scales)
        else:
            scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / fp8_max(fmt)  # (N, 1)
            layer.qweight.copy_((w / scale).to(FP8_DTYPES[fmt]))
            layer.scales.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) float32 decoded weight."""
        if self.fmt == "e2m1":
            vals = e2m1_decode(unpack_uint4(self.qweight)).reshape(self.out_features, -1, self.group_size)  # (N, G, g)
            w = (vals * self.scales.float()[..., None]).reshape(self.out_features, self.k_padded)
            return w[:, : self.in_features]
        return self.qweight.float() * self.scales  # (N, K)

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["dequant_fp32"] += 1
        x = x.float()
        if self.act_format is not None:
            lead = x.shape[:-1]
            x = fake_quant_fp8_per_token(x.reshape(-1, self.in_features), self.act_format).reshape(*lead, -1)
        return F.linear(x, self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, "
                f"group_size={self.group_size if self.fmt == 'e2m1' else None}, act_format={self.act_format}")
