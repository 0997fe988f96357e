"""Building blocks of a DiT: embedders, positions, attention, MLPs, norms.

Module and parameter names follow the reference DiT (`x_embedder.proj`, `t_embedder.mlp`,
`y_embedder.embedding_table`, `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) so that reference
checkpoints map onto ditkit through a short, explicit table (see `models/reference.py`).

Positions are given per token as integer coordinates (T, n_axes) — (row, col) for images,
(frame, row, col) for video — so the same attention and embeddings serve both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- positions


def grid_positions(*sizes: int, device=None) -> torch.Tensor:
    """Integer coordinates of a row-major grid: (prod(sizes), len(sizes)), e.g. (row, col)."""
    axes = [torch.arange(s, device=device) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))  # (T, n_axes)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[sin(pos*w), cos(pos*w)] with w_d = 10000^(-d/(dim/2)) (MAE / DiT), float64: (T, dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.to(torch.float64)[:, None] * omega[None]  # (T, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed 2D sin-cos embedding as in DiT: first half encodes the column, second the row.

    positions: (T, 2) as (row, col). Computed in float64, returned as float32 (T, dim).
    """
    row, col = positions[:, 0], positions[:, 1]
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1).float()


def rope_tables(head_dim: int, positions: torch.Tensor, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-split rotary tables (EVA-02 / LightningDiT layout): (cos, sin), each (T, head_dim).

    head_dim is split evenly over the axes in order (row then col; frame, row, col for video);
    within an axis of d dims the frequencies are theta^(-2k/d), k < d/2, each used for one
    adjacent pair of channels.
    """
    n_axes = positions.shape[1]
    d = head_dim // n_axes
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = [positions[:, a].to(torch.float64)[:, None] * freqs[None] for a in range(n_axes)]  # n_axes x (T, d/2)
    ang = torch.cat(angles, dim=1).repeat_interleave(2, dim=1)  # (T, n_axes * d) pairs adjacent
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (N, H, T, hd). Rotates adjacent channel pairs: x*cos + rotate_half(x)*sin."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (N, H, T, hd/2) each
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)  # (N, H, T, hd)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ----------------------------------------------------------------------------- norms


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    if norm_type == "rmsnorm":
        return RMSNorm(dim, eps)
    return nn.LayerNorm(dim, elementwise_affine=False, eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (N, D) modulation broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ----------------------------------------------------------------------------- embedders


class PatchEmbed(nn.Module):
    """p x p patches -> tokens: Conv2d(C, D, p, stride p), row-major token order."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, T, D)


def reference_init(model: nn.Module) -> None:
    """The reference DiT initialisation every DiT variant starts from (Peebles & Xie 2023, `initialize_weights`).

    Xavier-uniform linears with zero biases; the patch embedding initialised as a Linear over flattened
    patches; N(0, 0.02) for the label table (if any) and the timestep MLP. Each model then closes its own
    residual branches (adaLN-Zero, adaLN-single, cross-attention outputs) on top of this.
    """

    def _basic(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    model.apply(_basic)
    w = model.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear over flattened patches
    nn.init.zeros_(model.x_embedder.proj.bias)
    if getattr(model, "y_embedder", None) is not None:
        nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t (cos first, max period 10000) -> Linear -> SiLU -> Linear.

    ``freq_shift`` = 1 divides by half - 1 instead of half, as diffusers' DiT port does
    (``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)``, docs/reference.md §4).
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, freq_shift: int = 0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.freq_shift = freq_shift
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim)
        )

    @staticmethod
    def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0, freq_shift: int = 0) -> torch.Tensor:
        """emb = [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / (half - freq_shift)), i < half (GLIDE/ADM)."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
                          / (half - freq_shift))
        args = t.float()[:, None] * freqs[None]  # (N, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb  # (N, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = self.timestep_features(t, self.frequency_embedding_size, freq_shift=self.freq_shift)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table with an extra null row (index num_classes) for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace labels by the null class with probability dropout_prob (or where forced)."""
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# ----------------------------------------------------------------------------- attention / MLP


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv (rows [q; k; v], head-contiguous), optional
    QK-norm (RMSNorm over head_dim) and rotary positions. Runs through PyTorch SDPA."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None, kv_hook=None, core=None) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D).

        ``kv_hook(k, v) -> (k, v)``, if given, sees the keys and values of the T query tokens
        (after QK-norm and RoPE, each (N, H, T, hd)) and returns those to attend over, which may
        be longer (N, H, S, hd): a KV cache lets a token subset attend to every token
        (region-adaptive sampling, ``ditkit.accel.ras``). ``rope`` tables may be (T, hd) or
        per sample (N, 1, T, hd). ``core(q, k, v) -> (N, H, T, hd)``, if given, replaces SDPA
        (sparse masks, score modifiers: ``ditkit.models.video_attention``).
        """
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim)  # (N, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, H, T, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv_hook is not None:
            k, v = kv_hook(k, v)  # (N, H, S, hd) each
        if core is not None:
            out = core(q, k, v)  # (N, H, T, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (N, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (the reference DiT / ViT MLP).

    Block MLPs share one call, ``mlp(x, grid)``: the token grid is used by Mix-FFN and ignored here.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 conv over the token grid -> GELU(tanh) -> fc2.

    A local-mixing MLP after SANA's Mix-FFN (Xie et al. 2024, https://arxiv.org/abs/2410.10629),
    itself from SegFormer (Xie et al. 2021): the depthwise conv gives every block a 3x3
    neighbourhood prior, which attention alone must learn from data. Needs the token grid, so
    the tokens must be the whole row-major grid (no token subsets, see `ditkit.accel.ras`). A video
    grid (frames, rows, cols) is convolved within each frame (tokens frame-major).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        n, t, _ = x.shape
        if grid is None or len(grid) not in (2, 3) or math.prod(grid) != t:
            raise ValueError(f"MixFFN needs the full 2D token grid (or a 3D frame grid); got {t} tokens for grid {grid}")
        gh, gw = grid[-2:]
        h = self.fc1(x)  # (N, T, hidden)
        h = h.reshape(-1, gh * gw, h.shape[-1])  # (N*f, gh*gw, hidden): one image per frame
        h = h.transpose(1, 2).reshape(h.shape[0], -1, gh, gw)  # (N*f, hidden, gh, gw)
        h = self.dwconv(h).flatten(2).transpose(1, 2).reshape(n, t, -1)  # (N, T, hidden)
        return self.fc2(self.act(h))  # (N, T, D)


def make_mlp(mlp_type: str, dim: int, hidden: int) -> nn.Module:
    """The block MLP of a config's ``mlp_type`` ("gelu", "swiglu" or "mixffn"), `hidden` = ratio * dim."""
    if mlp_type == "swiglu":
        return SwiGLU(dim, int(2 * hidden / 3))
    if mlp_type == "mixffn":
        return MixFFN(dim, hidden)
    return Mlp(dim, hidden)


class SwiGLU(nn.Module):
    """w3(silu(x1) * x2) with [x1, x2] = w12(x) (Shazeer 2020; LightningDiT hidden = 2/3 * ratio * D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)
