"""W8A8 integer linear layer: int8 weights, int8 per-token activations, int32 accumulation.

The recipe is ViDiT-Q's (Zhao et al. 2025, "ViDiT-Q: Efficient and Accurate Quantization of
Diffusion Transformers for Image and Video Generation", ICLR) with SmoothQuant channel balancing
(Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for LLMs"):

    weights      W_q = round(W * s / Δw),  Δw = max_j |W_ij s_j| / 127   per output channel i
    activations  X_q = round((X / s) / Δx), Δx = max_j |X_tj / s_j| / 127  per token t, at run time
    output       Y   = (X_q @ W_qᵀ) ⊙ (Δx Δwᵀ) + b                  (int32 accumulate, one rescale)

``s`` is the optional per-input-channel smoothing factor (see `smooth.py`): it moves activation
outliers into the weights, and ``(X / s)(W s)ᵀ = X Wᵀ`` keeps the product exact before rounding.

Timestep awareness. Activation ranges of a DiT change strongly with the diffusion time t
(ViDiT-Q §3). Per-token *dynamic* scales follow those changes by construction, so no static
activation range is ever calibrated. What stays static is the smoothing factor; ViDiT-Q keeps
one per timestep range, and so does this layer when built with G > 1 groups: it then holds G
smoothed weight copies (G× int8 weight memory) and a `TimestepRouter` (see `calibrate.py`) tells
it which group each sample of the batch is in.

The matmul is ``torch._int_mm`` (int8 x int8 -> int32): VNNI / AMX on x86 CPUs, tensor cores on
GPUs. Its shape rules differ by device (CUDA: M > 16 and K, N multiples of 8; the CPU kernel takes
any shape): `int8_mm` pads where the device needs it and otherwise falls back to a float matmul
of the same int8 values, counting which path ran in ``Int8Linear.calls`` so tests and reports
never mistake a fallback for the real kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rotation import hadamard_matrix, shared_hadamard
from .rotation import rotate as rotate_fn

QMAX = 127  # symmetric int8 range [-127, 127] (-128 unused, so negation is exact)
PATH_INT_MM = "int_mm"  # real int8 kernel
PATH_FALLBACK = "fallback_float_mm"  # int8 values multiplied as float32: correct, no int8 speed


# ----------------------------------------------------------------------------- quantizers


def quantize_weight_per_channel(w: torch.Tensor, qmax: int = QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization of ``w`` (N, K): (int8 (N, K), scale fp32 (N,))."""
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / qmax  # (N,)
    q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)  # (N, K)
    return q, scale.float()


def quantize_per_token(x: torch.Tensor, inv_smooth: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric absmax quantization of each row of ``x`` (M, K), after ``x * inv_smooth``.

    One elementwise pass per step (smooth, abs, divide+round, cast), no clamp needed: |x| / Δ <= 127
    by construction. Returns (int8 (M, K), scale fp32 (M, 1)); all-zero rows get scale 1e-12 / 127.
    """
    if inv_smooth is not None:
        x = x * inv_smooth  # (M, K), the SmoothQuant X / s
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-12).div_(QMAX)  # (M, 1)
    q = (x / scale).round_().to(torch.int8)  # (M, K)
    return q, scale


def dequantize_output(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """(M, N) int32 -> fp32: acc * x_scale (M, 1) * w_scale (N,) + bias, in place on one new buffer."""
    out = acc.to(torch.float32).mul_(x_scale).mul_(w_scale)  # (M, N), a single allocation
    return out.add_(bias) if bias is not None else out


# ----------------------------------------------------------------------------- int8 matmul


def int_mm_padding(m: int, k: int, n: int, device: torch.device) -> tuple[int, int, int]:
    """Rows / inner / output padding that ``torch._int_mm`` needs on ``device`` for (M, K) @ (K, N).

    CUDA requires M > 16 and K, N multiples of 8; the CPU kernel (torch >= 2.2) takes any shape.
    """
    if device.type != "cuda":
        return 0, 0, 0
    return max(0, 17 - m), (-k) % 8, (-n) % 8


def int8_mm(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, str]:
    """int8 (M, K) @ int8 (K, N) -> (int32 (M, N), path), padding for the kernel where needed.

    Falls back to a float32 matmul of the int8 values (path ``PATH_FALLBACK``) when the kernel is
    unavailable or refuses the shape; products of int8 stay exact in float32 up to K ~ 1000 and
    within float rounding beyond.
    """
    m, k = a.shape
    n = b.shape[1]
    pm, pk, pn = int_mm_padding(m, k, n, a.device)
    try:
        if pm or pk:
            a = F.pad(a, (0, pk, 0, pm))  # (M + pm, K + pk)
        if pk or pn:
            b = F.pad(b, (0, pn, 0, pk))  # (K + pk, N + pn)
        acc = torch._int_mm(a, b)  # (M + pm, N + pn) int32
        return (acc[:m, :n] if pm or pn else acc), PATH_INT_MM
    except (RuntimeError, NotImplementedError):
        acc = a[:m, :k].float() @ b[:k, :n].float()  # (M, N)
        return acc.round_().to(torch.int32), PATH_FALLBACK


# ----------------------------------------------------------------------------- the layer


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` computing in int8 (W8A8, per-channel weights, per-token activations).

    Buffers (saved in files): ``qweight`` int8 (G, N, K) — W*s per group, rows in output order;
    ``w_scale`` fp32 (G, N); ``inv_smooth`` fp32 (G, K) or None (1 / s); ``bias`` fp32 (N,) or None;
    ``t_bounds`` fp32 (G-1,) — group g holds timesteps in [t_bounds[g-1], t_bounds[g]).
    ``rotate`` = b > 1 applies a block Hadamard rotation (`rotation.py`) after smoothing: the
    weight is stored as W diag(s) H and the input becomes (X / s) H, so the product is unchanged.
    There is no ``weight`` attribute on purpose: code that reads ``layer.weight.dtype`` to pick a
    float dtype must not silently get int8.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, groups: int = 1, smooth: bool = False,
                 rotate: int = 1):
        super().__init__()
        if rotate < 1 or in_features % rotate or rotate & (rotate - 1):
            raise ValueError(f"rotation block {rotate} must be a power of two dividing in_features={in_features}")
        self.in_features, self.out_features, self.groups, self.rotate = in_features, out_features, groups, rotate
        self.register_buffer("qweight", torch.zeros(groups, out_features, in_features, dtype=torch.int8))
        self.register_buffer("w_scale", torch.ones(groups, out_features))
        self.register_buffer("inv_smooth", torch.ones(groups, in_features) if smooth else None)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("t_bounds", torch.zeros(groups - 1))
        self.router = None  # a TimestepRouter when groups > 1 (not a submodule, not saved)
        self.calls = {PATH_INT_MM: 0, PATH_FALLBACK: 0}

    @classmethod
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None = None,
                    t_bounds: torch.Tensor | None = None, rotate: int = 1) -> Int8Linear:
        """Quantize ``linear``; ``smooth`` (G, K) or (K,) are SmoothQuant factors s (None: no smoothing),
        ``rotate`` a Hadamard block size (1: none)."""
        w = linear.weight.detach().float()  # (N, K)
        if smooth is not None and smooth.ndim == 1:
            smooth = smooth[None]  # (1, K)
        groups = 1 if smooth is None else smooth.shape[0]
        if groups > 1 and (t_bounds is None or t_bounds.numel() != groups - 1):
            raise ValueError(f"{groups} smoothing groups need {groups - 1} timestep bounds")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, groups, smooth is not None, rotate)
        for g in range(groups):
            s = None if smooth is None else smooth[g].float().clamp_min(1e-12)  # (K,)
            wg = w if s is None else w * s  # W diag(s): columns scaled
            if rotate > 1:
                wg = rotate_fn(wg, hadamard_matrix(rotate))  # (N, K) = W diag(s) H
            q, scale = quantize_weight_per_channel(wg)
            layer.qweight[g], layer.w_scale[g] = q, scale
            if s is not None:
                layer.inv_smooth[g] = 1.0 / s
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        if t_bounds is not None:
            layer.t_bounds.copy_(t_bounds.float())
        return layer.to(linear.weight.device)

    def dequantized_weight(self, group: int = 0) -> torch.Tensor:
        """The fp32 weight this layer effectively applies to the unsmoothed input: (N, K)."""
        w = self.qweight[group].float() * self.w_scale[group][:, None]  # (N, K) = W diag(s) H
        if self.rotate > 1:
            w = rotate_fn(w, hadamard_matrix(self.rotate))  # H is symmetric and H H = I
        return w if self.inv_smooth is None else w * self.inv_smooth[group]

    def weight_bytes(self) -> int:
        """Resident bytes of every buffer this layer holds (int8 weights, scales, smoothing, bias)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def _matmul(self, x2: torch.Tensor, g: int) -> torch.Tensor:
        inv = None if self.inv_smooth is None else self.inv_smooth[g]
        if self.rotate > 1:
            x2 = rotate_fn(x2 if inv is None else x2 * inv, shared_hadamard(self.rotate, x2.device))  # (M, K)
            inv = None
        xq, xs = quantize_per_token(x2, inv)  # (M, K) int8, (M, 1)
        acc, path = int8_mm(xq, self.qweight[g].t())  # (M, N) int32
        self.calls[path] += 1
        return dequantize_output(acc, xs, self.w_scale[g], self.bias)  # (M, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.float()
        if self.groups == 1:
            return self._matmul(x.reshape(-1, self.in_features), 0).reshape(*lead, self.out_features)
        gid = self._group_ids(x.shape[0])  # (N,) group of each sample
        if bool((gid == gid[0]).all()):
            return self._matmul(x.reshape(-1, self.in_features), int(gid[0])).reshape(*lead, self.out_features)
        out = x.new_empty(*lead, self.out_features)
        for g in gid.unique().tolist():  # samples of the batch at different timestep groups
            idx = (gid == g).nonzero().squeeze(1)
            xg = x[idx].reshape(-1, self.in_features)  # (n_g * T, K)
            out[idx] = self._matmul(xg, g).reshape(len(idx), *lead[1:], self.out_features)
        return out

    def _group_ids(self, batch: int) -> torch.Tensor:
        t = None if self.router is None else self.router.t
        if t is None:
            raise RuntimeError("timestep-grouped Int8Linear needs the model's t: attach a TimestepRouter to the model")
        t = t.reshape(-1).float().to(self.t_bounds.device)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise RuntimeError(f"TimestepRouter holds {t.numel()} timesteps for a batch of {batch}")
        return torch.bucketize(t, self.t_bounds, right=True)  # (N,)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"groups={self.groups}, smooth={self.inv_smooth is not None}, rotate={self.rotate}")


class Int8WeightOnlyLinear(nn.Module):
    """W8A16: int8 per-output-channel weights, float activations (no activation quantization).

    Meant for layers that run on few rows but hold many weights — a DiT's adaLN modulation
    layers act on N conditioning vectors, not N·T tokens, yet hold a third of DiT-B's weights.
    Compute is simulated: x @ float(W_q)ᵀ, then the per-channel scale (one (N, K) cast per call).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("w_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.calls = {"dequant_fp32": 0}

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        layer.qweight, layer.w_scale = quantize_weight_per_channel(linear.weight.detach().float())
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.w_scale[:, None]  # (N, K)

    def weight_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["dequant_fp32"] += 1
        out = F.linear(x.float(), self.qweight.float()).mul_(self.w_scale)  # (..., N): scale after the matmul
        return out.add_(self.bias) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
