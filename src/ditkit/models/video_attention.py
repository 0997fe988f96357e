"""Sampling-time attention for the video DiT: sparse video patterns and UltraViCo length extrapolation.

`VideoAttention` is a ``core(q, k, v, *, layer, grid, axes)`` of the video DiT, passed per call as
``model(x, t, ..., attention=core)`` (`ditkit.models.video_dit`, `ditkit.accel.attention.WithAttention`);
q, k, v are (N, H, T, hd) after RoPE. Two training-free options:

**Sparse patterns** (Sparse-vDiT, Chen et al. 2025: per-head patterns of video DiTs are stable
across prompts; STA, Zhang et al. 2025, "Fast Video Generation with Sliding Tile Attention").
A `SparsePlan` gives one `Pattern` per (layer, head) of the full-attention blocks:

    full             every key
    diagonal         |q - kv| <= width (token index; frame-major order, so local in time and raster)
    multi_diagonal   |q mod F - kv mod F| <= width, F = tokens per frame (the same place in every frame)
    stripe           keys of the first `width` frames only (global "vertical stripe" columns)
    sta              3D sliding tiles: tile coordinates = coord // tile; the window centre (in tiles)
                     is the query tile clamped to [w//2, n_tiles-1-w//2] per axis; a key tile is
                     kept if within w//2 of the centre on every axis (STA's reference mask)
    skip             the head is dropped (its output is zero; Sparse-vDiT's M4)

With ``tile`` set, tokens are put in tile-major order before attention (and back after), so a
tile is contiguous and STA's kept key tiles form whole blocks of a block-sparse kernel.

**UltraViCo** (Zhao et al. 2025, "UltraViCo: Breaking Extrapolation Limits in Video Diffusion
Transformers"): when the clip is longer than the training window of W latent frames, positive
attention logits between tokens more than W/2 frames' worth of tokens apart are multiplied by
alpha (< 1), and queries of the first frame do not see keys at frame >= W (their public code
sets those logits to -1e4). Inside the training window it is the identity.

Backends: ``"flex"`` runs ``torch.nn.attention.flex_attention`` with a ``BlockMask`` and
``score_mod``. On CPU in eager mode flex_attention works but is unfused (it materialises the
scores; PyTorch warns), so it only saves time under ``compile=True`` (``torch.compile`` of
flex_attention builds a C++ kernel on CPU: ~20 s per new shape, then block-sparse; the first
call of each mask is checked against eager flex and falls back to it, with a warning, if they
disagree), and it has no CPU backward, so with gradients on CPU the core takes the dense path. ``"dense"``
materialises the same mask for SDPA (an explicit softmax when UltraViCo is on); it is the
reference the flex path is tested against. Masks are cached per (layer, grid).

`attention_flops` counts what a block-sparse kernel computes (kept blocks x block^2) and the
exact kept fraction; `ditkit.accel.sparse_search` picks a pattern per (layer, head) offline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PATTERN_KINDS = ("full", "diagonal", "multi_diagonal", "stripe", "sta", "skip")


@dataclass(frozen=True)
class Pattern:
    kind: str = "full"  # one of PATTERN_KINDS
    width: int = 0  # diagonal / multi_diagonal: half-width in tokens; stripe: number of anchor frames
    tile: tuple[int, int, int] = (1, 1, 1)  # sta: tile size in (frame, row, col) tokens
    window: tuple[int, int, int] = (1, 1, 1)  # sta: window in tiles per axis (odd)

    def __post_init__(self):
        if self.kind not in PATTERN_KINDS:
            raise ValueError(f"unknown attention pattern {self.kind!r}; choose from {', '.join(PATTERN_KINDS)}")
        if self.width < 0 or (self.kind == "stripe" and self.width < 1):
            raise ValueError(f"{self.kind} width must be {'>= 1' if self.kind == 'stripe' else '>= 0'}, got {self.width}")
        if self.kind == "sta" and (any(t < 1 for t in self.tile) or any(w < 1 or w % 2 == 0 for w in self.window)):
            raise ValueError(f"sta needs positive tile sizes and odd windows, got tile={self.tile}, window={self.window}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "width": self.width, "tile": list(self.tile), "window": list(self.window)}

    @classmethod
    def from_dict(cls, d: dict) -> Pattern:
        return cls(d["kind"], int(d.get("width", 0)), tuple(d.get("tile", (1, 1, 1))), tuple(d.get("window", (1, 1, 1))))

    def __str__(self) -> str:
        if self.kind == "sta":
            return f"sta{self.tile}w{self.window}"
        return self.kind if self.kind in ("full", "skip") else f"{self.kind}{self.width}"


FULL = Pattern()


@dataclass
class SparsePlan:
    """Patterns per full-attention layer: ``layers[i]`` is one Pattern per head (missing layers are full)."""

    layers: dict[int, list[Pattern]] = field(default_factory=dict)
    tile: tuple[int, int, int] | None = None  # tile-major token order for every planned layer (STA)

    def for_layer(self, layer: int, num_heads: int) -> list[Pattern] | None:
        pats = self.layers.get(layer)
        if pats is None or all(p.kind == "full" for p in pats):
            return None
        if len(pats) != num_heads:
            raise ValueError(f"the plan has {len(pats)} patterns for layer {layer}, the model {num_heads} heads")
        return pats

    def to_dict(self) -> dict:
        return {"tile": None if self.tile is None else list(self.tile),
                "layers": {str(i): [p.to_dict() for p in pats] for i, pats in sorted(self.layers.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> SparsePlan:
        tile = d.get("tile")
        return cls({int(i): [Pattern.from_dict(p) for p in pats] for i, pats in d.get("layers", {}).items()},
                   None if tile is None else tuple(tile))


@dataclass(frozen=True)
class UltraViCoConfig:
    train_frames: int  # W: the training window in latent frames
    alpha: float = 0.9  # factor on positive logits beyond W/2 (the paper's default); 1 = off
    mask_first_frame: bool = True  # first-frame queries ignore keys at frame >= W

    def __post_init__(self):
        if self.train_frames <= 0 or not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"need train_frames > 0 and 0 < alpha <= 1, got {self.train_frames}, {self.alpha}")


# ----------------------------------------------------------------------------- token layout


@dataclass(frozen=True)
class Layout:
    """Where each position of the attended sequence sits in the clip."""

    grid: tuple[int, int, int]  # (f, h, w) tokens
    order: torch.Tensor  # (T,) original frame-major index of sequence position i
    coords: torch.Tensor  # (T, 3) (frame, row, col) of sequence position i

    @property
    def frame_tokens(self) -> int:
        return self.grid[1] * self.grid[2]


def tile_order(grid: tuple[int, int, int], tile: tuple[int, int, int]) -> torch.Tensor:
    """Frame-major indices listed tile by tile (tiles frame-major, tokens frame-major inside a tile): (T,)."""
    f, h, w = grid
    tf, th, tw = tile
    if f % tf or h % th or w % tw:
        raise ValueError(f"grid {grid} does not split into tiles {tile}")
    idx = torch.arange(f * h * w).reshape(f // tf, tf, h // th, th, w // tw, tw)  # (f', tf, h', th, w', tw)
    return idx.permute(0, 2, 4, 1, 3, 5).reshape(-1)  # (T,)


def make_layout(grid: tuple[int, int, int], tile: tuple[int, int, int] | None = None) -> Layout:
    f, h, w = grid
    order = torch.arange(f * h * w) if tile is None else tile_order(grid, tile)
    frame, rest = order // (h * w), order % (h * w)
    return Layout(grid, order, torch.stack([frame, rest // w, rest % w], dim=1))


# ----------------------------------------------------------------------------- masks


def _pattern_fn(p: Pattern, layout: Layout):
    """mask(q, kv) -> bool for sequence positions (broadcasting index tensors, or flex's scalars).

    Lookups are 1D tensors indexed by position (what compiled flex_attention handles best).
    """
    order, ft = layout.order, layout.frame_tokens
    if p.kind == "full":
        return lambda q, kv: (q >= 0) & (kv >= 0)
    if p.kind == "skip":
        return lambda q, kv: q == kv  # cheapest non-empty row; the head's output is zeroed
    if p.kind == "diagonal":
        return lambda q, kv: (order[q] - order[kv]).abs() <= p.width
    if p.kind == "multi_diagonal":
        place = order % ft  # (T,) raster index within the frame
        return lambda q, kv: (place[q] - place[kv]).abs() <= p.width
    if p.kind == "stripe":
        frame = layout.coords[:, 0].contiguous()
        return lambda q, kv: frame[kv] < p.width
    axes = []  # sta: per axis, the key's tile and the query's clamped window centre, (T,) each
    for a in range(3):
        n_tiles = -(-layout.grid[a] // p.tile[a])
        half = p.window[a] // 2
        lo, hi = min(half, n_tiles - 1), max(n_tiles - 1 - half, 0)
        tile_of = (layout.coords[:, a] // p.tile[a]).contiguous()
        axes.append((tile_of, tile_of.clamp(max=hi).clamp(min=lo), half))

    def sta(q, kv):
        (t0, c0, h0), (t1, c1, h1), (t2, c2, h2) = axes
        return ((c0[q] - t0[kv]).abs() <= h0) & ((c1[q] - t1[kv]).abs() <= h1) & ((c2[q] - t2[kv]).abs() <= h2)

    return sta


def head_mask_mod(patterns: list[Pattern], layout: Layout, ultravico: UltraViCoConfig | None = None):
    """FlexAttention mask_mod(b, h, q, kv) with one pattern per head (a head -> pattern-group lookup)."""
    kinds = list(dict.fromkeys(patterns))
    group = torch.tensor([kinds.index(p) for p in patterns])  # (H,)
    fns = [_pattern_fn(p, layout) for p in kinds]
    first = _first_frame_mask(layout, ultravico)

    def mask_mod(b, h, q, kv):
        g = group[h]
        keep = (g == 0) & fns[0](q, kv)
        for i in range(1, len(fns)):
            keep = keep | ((g == i) & fns[i](q, kv))
        return keep if first is None else keep & first(q, kv)

    return mask_mod


def _first_frame_mask(layout: Layout, uv: UltraViCoConfig | None):
    if uv is None or not uv.mask_first_frame or layout.grid[0] <= uv.train_frames:
        return None
    frame = layout.coords[:, 0].contiguous()
    return lambda q, kv: (frame[q] > 0) | (frame[kv] < uv.train_frames)


def ultravico_score_mod(layout: Layout, uv: UltraViCoConfig | None):
    """score_mod(score, b, h, q, kv): alpha * score where score > 0 and |q - kv| > W/2 frames of tokens."""
    if uv is None or uv.alpha == 1.0 or layout.grid[0] <= uv.train_frames:
        return None
    order, reach, alpha = layout.order, uv.train_frames * layout.frame_tokens / 2, uv.alpha

    def score_mod(score, b, h, q, kv):
        far = (order[q] - order[kv]).abs() > reach
        return torch.where(far & (score > 0), score * alpha, score)

    return score_mod


def dense_mask(mask_mod, num_heads: int, length: int) -> torch.Tensor:
    """Materialise a mask_mod: bool (H, T, T)."""
    h = torch.arange(num_heads)[:, None, None]
    q, kv = torch.arange(length)[None, :, None], torch.arange(length)[None, None, :]
    return mask_mod(0, h, q, kv).expand(num_heads, length, length)


# ----------------------------------------------------------------------------- FLOPs


def attention_flops(patterns: list[Pattern], grid: tuple[int, int, int], head_dim: int, block_size: int = 128,
                    tile: tuple[int, int, int] | None = None, complement: bool = False) -> dict[str, float]:
    """Attention FLOPs of one sample in one layer (QK^T and PV: 4 T_q T_k hd per head).

    ``dense``: all pairs; ``kept``: exactly the allowed pairs; ``block``: what a block-sparse kernel
    computes (every block of ``block_size`` x ``block_size`` holding an allowed pair, in the
    sequence order used). Skipped heads cost 0. ``complement``: the same for the pairs the patterns
    leave out (the far part of `ditkit.accel.far_cache`).
    """
    layout = make_layout(grid, tile)
    t = len(layout.order)
    mask = dense_mask(head_mask_mod(patterns, layout), len(patterns), t)  # (H, T, T)
    if complement:
        mask = ~mask
    live = torch.tensor([p.kind != "skip" for p in patterns])
    nb = -(-t // block_size)
    padded = torch.zeros(len(patterns), nb * block_size, nb * block_size, dtype=torch.bool)
    padded[:, :t, :t] = mask
    blocks = padded.reshape(len(patterns), nb, block_size, nb, block_size).any(4).any(2)  # (H, nb, nb)
    rows = torch.full((nb,), block_size)
    rows[-1] = t - block_size * (nb - 1)
    area = rows[:, None] * rows[None, :]  # (nb, nb) real pairs per block (edge blocks are smaller)
    per_pair = 4 * head_dim
    return {
        "dense": float(per_pair * t * t * len(patterns)),
        "kept": float(per_pair * mask[live].sum()),
        "block": float(per_pair * (blocks[live] * area).sum()),
    }


# ----------------------------------------------------------------------------- the core


class VideoAttention:
    """An attention core for ``VideoDiT.attention_core``: sparse plan and/or UltraViCo, flex or dense."""

    def __init__(self, plan: SparsePlan | None = None, ultravico: UltraViCoConfig | None = None, *,
                 backend: str = "flex", compile: bool = False, block_size: int = 128):
        if backend not in ("flex", "dense"):
            raise ValueError(f"backend must be 'flex' or 'dense', got {backend!r}")
        if compile and backend != "flex":
            raise ValueError("compile applies to the flex backend only")
        self.plan, self.ultravico, self.backend, self.block_size = plan, ultravico, backend, block_size
        self._flex = self._eager = None
        if backend == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            self._eager = flex_attention
            self._flex = torch.compile(flex_attention, dynamic=False) if compile else flex_attention
        self._cache: dict[tuple, tuple] = {}
        self._trusted: dict[tuple, bool] = {}  # compile: per mask, did the kernel match eager flex on first use

    def reset(self) -> None:
        self._cache.clear()
        self._trusted.clear()

    def _setup(self, layer: int, grid: tuple[int, int, int], axes: str, num_heads: int, device):
        patterns = self.plan.for_layer(layer, num_heads) if self.plan is not None and axes == "all" else None
        tile = self.plan.tile if patterns is not None else None
        key = (tuple(patterns) if patterns else None, grid, tile, num_heads, str(device))
        if key in self._cache:
            return key, self._cache[key]
        layout = make_layout(grid, tile)
        uv = self.ultravico if axes in ("all", "time") else None
        score_mod = ultravico_score_mod(layout, uv)
        pats = patterns or [FULL] * num_heads
        needs_mask = patterns is not None or _first_frame_mask(layout, uv) is not None
        mask_mod = head_mask_mod(pats, layout, uv) if needs_mask else None
        t = len(layout.order)
        mask = None
        if mask_mod is not None:
            if self.backend == "flex":
                from torch.nn.attention.flex_attention import create_block_mask

                mask = create_block_mask(mask_mod, None, num_heads, t, t, device=str(device), BLOCK_SIZE=self.block_size)
            else:
                mask = dense_mask(mask_mod, num_heads, t).to(device)
        keep = None
        if patterns is not None and any(p.kind == "skip" for p in patterns):
            keep = torch.tensor([p.kind != "skip" for p in patterns], device=device).view(1, -1, 1, 1)
        order = None if tile is None else layout.order.to(device)
        entry = self._cache[key] = (mask, score_mod, keep, order, mask_mod)
        return key, entry

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int,
                 grid: tuple[int, int, int], axes: str = "all") -> torch.Tensor:
        n, heads, t, hd = q.shape
        key, (mask, score_mod, keep, order, mask_mod) = self._setup(layer, grid, axes, heads, q.device)
        if mask is None and score_mod is None:
            return F.scaled_dot_product_attention(q, k, v)  # nothing to change on this layer
        if order is not None:  # tile-major sequence
            q, k, v = q[:, :, order], k[:, :, order], v[:, :, order]  # (N, H, T, hd)
        flex = self._flex_usable(q, v)
        if self.backend == "flex" and not flex:  # flex_attention has no CPU backward: the same mask, densely
            mask = None if mask_mod is None else dense_mask(mask_mod, heads, t).to(q.device)
        if flex:
            out = self._run_flex(key, q, k, v, score_mod, mask)  # (N, H, T, hd)
        elif score_mod is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = masked_attention(q, k, v, mask, score_mod)[0]
        if keep is not None:
            out = out * keep
        if order is not None:
            out = out[:, :, torch.argsort(order)]  # back to frame-major
        return out

    def _flex_usable(self, q: torch.Tensor, v: torch.Tensor) -> bool:
        """The flex backend, unless gradients are wanted on CPU (flex_attention has no CPU backward)."""
        return self.backend == "flex" and not (q.device.type == "cpu" and torch.is_grad_enabled()
                                               and (q.requires_grad or v.requires_grad))

    def _run_flex(self, key, q, k, v, score_mod, mask, return_lse: bool = False):
        """Compiled flex where it has been checked against eager flex on this mask's first call, else eager.

        ``return_lse``: (out, lse) with lse (N, H, T) the natural-log normaliser of each query's row."""
        key = (*key, return_lse)
        extra = {}
        if return_lse:
            from torch.nn.attention.flex_attention import AuxRequest

            extra["return_aux"] = AuxRequest(lse=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            if self._flex is self._eager or self._trusted.get(key) is False:
                return _with_lse(self._eager(q, k, v, score_mod=score_mod, block_mask=mask, **extra), return_lse)
            out = _with_lse(self._flex(q, k, v, score_mod=score_mod, block_mask=mask, **extra), return_lse)
            if key not in self._trusted:
                ref = _with_lse(self._eager(q, k, v, score_mod=score_mod, block_mask=mask, **extra), return_lse)
                got, want = (out[0], ref[0]) if return_lse else (out, ref)
                self._trusted[key] = ok = bool(torch.allclose(got, want, atol=1e-3, rtol=1e-3))
                if not ok:
                    warnings.warn(f"compiled flex_attention disagrees with eager flex for grid {key[1]} "
                                  f"(max diff {(got - want).abs().max().item():.3g}); using eager flex for this mask",
                                  stacklevel=3)
                    return ref
        return out


def _with_lse(result, return_lse: bool):
    """flex_attention's result as out, or (out, lse) when ``return_lse`` (it returns (out, AuxOutput))."""
    return (result[0], result[1].lse) if return_lse else result


def masked_attention(q, k, v, mask: torch.Tensor | None, score_mod=None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(score_mod(q k^T / sqrt(hd)) over the keys ``mask`` (H, T, T) allows) v, in float32.

    Returns (out (N, H, T, hd), lse (N, H, T)), lse the natural-log normaliser of each row. A query
    with no allowed key gets out 0 and lse -inf (FlexAttention's convention). The dense path of
    UltraViCo and of `ditkit.accel.far_cache`."""
    t = q.shape[2]
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5  # (N, H, T, T)
    if score_mod is not None:
        idx = torch.arange(t, device=q.device)
        scores = score_mod(scores, 0, None, idx[:, None], idx[None, :])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    top = scores.amax(-1, keepdim=True)  # (N, H, T, 1)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    p = (scores - top).exp()
    z = p.sum(-1, keepdim=True)  # (N, H, T, 1)
    out = (p @ v.float()) / z.clamp_min(torch.finfo(z.dtype).tiny)
    return out.to(q.dtype), (z.log() + top).squeeze(-1)


__all__ = [
    "FULL", "PATTERN_KINDS", "Layout", "Pattern", "SparsePlan", "UltraViCoConfig", "VideoAttention",
    "attention_flops", "dense_mask", "head_mask_mod", "make_layout", "masked_attention", "tile_order", "ultravico_score_mod",
]
