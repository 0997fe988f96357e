"""A video DiT: the image DiT's blocks over a (frame, row, col) token grid.

Latents are clips (N, F, C, H, W). The model follows the image DiT stage by stage
(`ditkit.models.dit`) so that the same trunk wrappers apply:

    tokens, ctx = model.embed(x, text, m)   # 3D patchify + positions; ctx carries the text  (N, T, D), T = f*h*w
    c = model.condition(t, y, pooled)       # per clip (N, D) or per latent frame (N, f, D)
    for block in model.blocks:
        tokens = block(tokens, c, ctx)
    out = model.final(tokens, c, ctx)       # (N, F, C_out, H, W)

Design, with the papers each choice comes from:

* **3D patches** (ViViT "tubelets", Arnab et al. 2021; CogVideoX, Wan): a token is pt frames x p x p
  pixels of latent, tokens ordered frame-major then row-major.
* **3D RoPE** (Wan / HunyuanVideo): rotary angles are a linear function of the token's (frame, row,
  col). Two layouts (``VideoDiTConfig.rope_layout``):
  - ``"axial"``: head_dim is split into (frame, row, col) chunks, each with its own frequency ladder.
  - ``"image"``: the image DiT's 2D layout (row, col halves) is kept unchanged and the frame axis is
    added to the angle of the ``temporal_rope_pairs`` lowest-frequency pairs of each spatial half
    (a fixed instance of RoPE-Mixed, Heo et al. 2024, where every channel pair has a frequency
    vector over the axes). At frame 0 the tables equal the image tables exactly, so a one-frame
    clip is the image model and an image checkpoint is a drop-in start (`video_init.init_from_image`).
* **Frame embedding** (``frame_embed``; Latte's temporal position embedding, made learnt and
  zero-initialised): RoPE alone tells a token only *relative* frame offsets, on the few pairs that
  turn with the frame, and nothing about the frame enters the residual stream, so a trunk started
  from an image model treats the frames alike and makes still clips. A bias-free Linear, starting at
  zero, maps the sin-cos table of the frame index (minus frame 0's) into every token: the start is
  the model without it (an image or video checkpoint stays a drop-in start, `video_init.init_from_video`).
* **Attention**: full 3D attention over all T tokens, or ``"factorized"`` (Latte, Ma et al. 2024,
  variant 1): blocks alternate spatial attention (within a frame) and temporal attention (across
  frames at one spatial location), with the same block weights as the full model.
* **Per-frame timesteps** (Diffusion Forcing, Chen et al. 2024; FVDM, Liu et al. 2024): t may be
  (N,) for the clip or (N, F) per frame; each latent frame's embedding drives adaLN for that frame's
  tokens only. A constant (N, F) vector equals the scalar case.
* **Conditioning**: class labels (``y``, with the null label for CFG) as in the image DiT, plus a
  hook for text: ``pooled_text`` (N, pooled_text_dim) sentence embeddings are projected and added
  to c (zero-initialised, so it starts as a no-op); and with ``text_dim`` > 0, token-level text:
  every block cross-attends to the caption tokens ``text`` (N, L, text_dim) under ``text_mask``
  after its self-attention, on the residual stream and ungated, with a zero-initialised output
  projection, and the tokens pass PixArt-α's caption projection first (Chen et al. 2023, §2.3; the
  same modules as `ditkit.models.cross_dit`). A pooled vector carries little beyond the caption's
  most frequent distinction (on moving shapes: the shape, not the colours or the direction of travel).
* **Frame-text modulation** (``frame_text``): an MLP of [pooled text, sin-cos frame index], its
  output layer zero-initialised, adds a per-frame term to c, so adaLN can modulate each frame
  differently for each caption. A caption such as "moving left" asks for a position that depends
  on the frame; without this term, c is the same in every frame of a clip at one noise level, and
  only the token paths (cross-attention, self-attention) can make frames differ. Measured on
  moving shapes: 500 steps of fine-tuning with and without it taught the direction words equally
  (the true word's loss advantage at s = 0.8: 7 % vs 8 %), so the presets leave it off.

Sampling-time attention options (sparse patterns, UltraViCo, the far-field cache) are an attention
core, a callable ``core(q, k, v, *, layer, grid, axes) -> out`` (`ditkit.models.video_attention`),
passed per call as ``model(x, t, ..., attention=core)`` (the accelerations of `ditkit.accel` wrap the
model function that way); ``model.attention_core`` is the core of calls that pass none (training's
frame-local bias), None for SDPA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiTConfig
from .cross_dit import CaptionProjection, CrossAttention
from .dit import DiT, DiTBlock, FinalLayer, TokenContext
from .layers import LabelEmbedder, TimestepEmbedder, grid_positions, modulate, reference_init, sincos_1d, sincos_2d
from .text_common import check_text

RopeTables = tuple[torch.Tensor, torch.Tensor]

# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VideoDiTConfig:
    dit: DiTConfig = field(default_factory=DiTConfig)  # per-frame trunk: width, depth, heads, spatial patch p, channels, classes
    num_frames: int = 8  # training clip length in input frames (the window UltraViCo measures beyond)
    temporal_patch: int = 1  # pt: frames per token
    attention: str = "full"  # "full" 3D attention or "factorized" (spatial and temporal blocks alternate, Latte)
    rope_layout: str = "image"  # "image" (image tables + frame on low-frequency pairs) or "axial" (split head_dim)
    temporal_rope_pairs: int = 4  # "image" layout: pairs per spatial half that also rotate with the frame
    rope_dims: tuple[int, int, int] | None = None  # "axial" layout: channels per (frame, row, col); None = ~(1/4, 3/8, 3/8)
    pooled_text_dim: int = 0  # > 0: a pooled text embedding (N, pooled_text_dim) is added to c (zero-initialised Linear)
    frame_embed: bool = False  # add a learnt, zero-initialised projection of the sin-cos frame index to every token
    text_dim: int = 0  # > 0: every block cross-attends to caption tokens (N, L, text_dim) (PixArt-α placement)
    frame_text: bool = False  # a zero-initialised MLP of (pooled text, frame index) adds a per-frame term to c

    def __post_init__(self):
        cfg = self.dit
        if self.num_frames <= 0 or self.temporal_patch <= 0 or self.num_frames % self.temporal_patch:
            raise ValueError(f"num_frames ({self.num_frames}) must be a positive multiple of "
                             f"temporal_patch ({self.temporal_patch})")
        if self.attention not in ("full", "factorized"):
            raise ValueError(f"attention must be 'full' or 'factorized', got {self.attention!r}")
        if self.rope_layout not in ("image", "axial"):
            raise ValueError(f"rope_layout must be 'image' or 'axial', got {self.rope_layout!r}")
        if cfg.use_rope and self.rope_layout == "image" and not 0 < self.temporal_rope_pairs <= cfg.head_dim // 4:
            raise ValueError(f"temporal_rope_pairs must lie in [1, {cfg.head_dim // 4}], got {self.temporal_rope_pairs}")
        if cfg.use_rope and self.rope_layout == "axial":
            dims = self.axial_dims
            if len(dims) != 3 or any(d <= 0 or d % 2 for d in dims) or sum(dims) != cfg.head_dim:
                raise ValueError(f"rope_dims must be three positive even numbers summing to head_dim {cfg.head_dim}, got {dims}")
        if self.pooled_text_dim < 0 or self.text_dim < 0:
            raise ValueError(f"pooled_text_dim and text_dim must be >= 0, got {self.pooled_text_dim}, {self.text_dim}")
        if self.frame_text and self.pooled_text_dim <= 0:
            raise ValueError("frame_text needs the pooled text (pooled_text_dim > 0)")

    @property
    def axial_dims(self) -> tuple[int, int, int]:
        if self.rope_dims is not None:
            return tuple(int(d) for d in self.rope_dims)
        hd = self.dit.head_dim
        spatial = 2 * (3 * hd // 16)  # even, about 3/8 of head_dim each
        return (hd - 2 * spatial, spatial, spatial)

    @property
    def latent_frames(self) -> int:
        return self.num_frames // self.temporal_patch

    def block_axes(self) -> list[str]:
        """Attention axes per block: "all", or alternating "space" / "time" when factorized."""
        if self.attention == "full":
            return ["all"] * self.dit.depth
        return ["space" if i % 2 == 0 else "time" for i in range(self.dit.depth)]

    def replace(self, **changes) -> VideoDiTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dit"] = self.dit.to_dict()
        if d["rope_dims"] is not None:
            d["rope_dims"] = list(d["rope_dims"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VideoDiTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VideoDiTConfig keys: {', '.join(unknown)}")
        d = dict(d)
        d["dit"] = DiTConfig.from_dict(d.get("dit", {}))
        if d.get("rope_dims") is not None:
            d["rope_dims"] = tuple(d["rope_dims"])
        return cls(**d)


# ----------------------------------------------------------------------------- positions


def rope_frequencies(cfg: VideoDiTConfig) -> torch.Tensor:
    """Per channel pair, its angular frequency along (frame, row, col): float64 (head_dim/2, 3).

    angle(pair) = positions @ omega[pair] (linear in the position, so attention stays relative).
    """
    hd, theta = cfg.dit.head_dim, cfg.dit.rope_theta
    if cfg.rope_layout == "image":
        d = hd // 2  # the image layout: row half then col half, ladder theta^(-2k/d) (layers.rope_tables)
        ladder = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
        omega = torch.zeros(hd // 2, 3, dtype=torch.float64)
        omega[: d // 2, 1] = ladder
        omega[d // 2:, 2] = ladder
        m = cfg.temporal_rope_pairs
        temporal = theta ** (-torch.arange(0, 2 * m, 2, dtype=torch.float64) / (2 * m))  # (m,) from 1 downwards
        omega[d // 2 - m: d // 2, 0] = temporal  # the lowest-frequency row pairs ...
        omega[hd // 2 - m:, 0] = temporal  # ... and col pairs also turn with the frame
        return omega
    chunks = []
    for axis, d in enumerate(cfg.axial_dims):
        block = torch.zeros(d // 2, 3, dtype=torch.float64)
        block[:, axis] = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        chunks.append(block)
    return torch.cat(chunks)  # (hd/2, 3)


def rope_tables_3d(omega: torch.Tensor, positions: torch.Tensor) -> RopeTables:
    """(cos, sin), each (T, head_dim) float32, adjacent channels paired (as ``layers.apply_rope``)."""
    ang = (positions.to(torch.float64) @ omega.T).repeat_interleave(2, dim=1)  # (T, hd)
    return ang.cos().float(), ang.sin().float()


@dataclass
class VideoTokenContext(TokenContext):
    """TokenContext of a clip: grid (f, h, w); rotary tables for full, spatial and temporal attention."""

    rope_space: RopeTables | None = None  # (h*w, hd): frame 0's tables (the frame angle cancels within a frame)
    rope_time: RopeTables | None = None  # (f, hd): tables at (frame, 0, 0) (the spatial angle cancels across frames)
    core: object | None = None  # attention core for this call (see module doc), or None for SDPA
    frame_pe: torch.Tensor | None = None  # (1, T, D) sin-cos of each token's frame minus frame 0's (``frame_embed``)
    text: torch.Tensor | None = None  # (N, L, D) projected caption tokens of this call (``text_dim``)
    text_mask: torch.Tensor | None = None  # (N, L) bool, True = real token


# ----------------------------------------------------------------------------- modules


class PatchEmbed3D(nn.Module):
    """pt x p x p tubelets -> tokens. Weight stored as Conv3d (D, C, pt, p, p), applied as one Linear."""

    def __init__(self, temporal_patch: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.pt, self.p = temporal_patch, patch_size
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=(temporal_patch, patch_size, patch_size),
                              stride=(temporal_patch, patch_size, patch_size), bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, frames, c, height, width = x.shape
        pt, p = self.pt, self.p
        f, h, w = frames // pt, height // p, width // p
        x = x.reshape(n, f, pt, c, h, p, w, p)  # (N, f, pt, C, h, p, w, p)
        x = x.permute(0, 1, 4, 6, 3, 2, 5, 7).reshape(n, f * h * w, c * pt * p * p)  # (N, T, C*pt*p*p)
        weight = self.proj.weight.reshape(self.proj.weight.shape[0], -1)  # (D, C*pt*p*p), Conv3d order
        return F.linear(x, weight, self.proj.bias)  # (N, T, D)


def _frames_view(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Tokens (N, T, D) as (N, f, T/f, D) to match a per-frame modulation m (N, f, D)."""
    n, t, d = x.shape
    f = m.shape[1]
    return x.reshape(n, f, t // f, d), t  # (N, f, hw, D)


def modulate_frames(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN with per-clip (N, D) modulation (== ``layers.modulate``) or per-frame (N, f, D)."""
    if shift.ndim == 2:
        return modulate(x, shift, scale)
    xf, t = _frames_view(x, shift)
    return (xf * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).reshape(x.shape[0], t, -1)  # (N, T, D)


def gate_frames(gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """gate * y with a per-clip (N, D) or per-frame (N, f, D) gate; y (N, T, D)."""
    if gate.ndim == 2:
        return gate.unsqueeze(1) * y
    yf, t = _frames_view(y, gate)
    return (gate.unsqueeze(2) * yf).reshape(y.shape[0], t, -1)  # (N, T, D)


class VideoDiTBlock(DiTBlock):
    """The image DiT block (same parameters) with per-frame adaLN and space / time / full attention."""

    def __init__(self, cfg: DiTConfig, layer_index: int, axes: str = "all", cross: bool = False):
        super().__init__(cfg)
        if axes not in ("all", "space", "time"):
            raise ValueError(f"axes must be 'all', 'space' or 'time', got {axes!r}")
        self.layer_index, self.axes = layer_index, axes
        d = cfg.hidden_size
        self.cross_attn = CrossAttention(d, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.norm_eps) if cross else None

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Six (N, D) tensors for a per-clip c (N, D), or six (N, f, D) for a per-frame c (N, f, D)."""
        return self.adaLN_modulation(c).chunk(6, dim=-1)

    def attend(self, h: torch.Tensor, ctx: VideoTokenContext) -> torch.Tensor:
        """Self-attention over the axes of this block; h (N, T, D) -> (N, T, D)."""
        n, t, d = h.shape
        f, hh, ww = ctx.grid
        core = None
        if ctx.core is not None:
            grid = {"all": (f, hh, ww), "space": (1, hh, ww), "time": (f, 1, 1)}[self.axes]
            core = partial(ctx.core, layer=self.layer_index, grid=grid, axes=self.axes)
        if self.axes == "all":
            return self.attn(h, rope=ctx.rope, core=core)
        if self.axes == "space":
            out = self.attn(h.reshape(n * f, hh * ww, d), rope=ctx.rope_space, core=core)  # (N*f, hw, D)
            return out.reshape(n, t, d)
        ht = h.reshape(n, f, hh * ww, d).transpose(1, 2).reshape(n * hh * ww, f, d)  # (N*hw, f, D)
        out = self.attn(ht, rope=ctx.rope_time, core=core)  # (N*hw, f, D)
        return out.reshape(n, hh * ww, f, d).transpose(1, 2).reshape(n, t, d)  # (N, T, D)

    def attn_branch(self, x, mod, ctx: VideoTokenContext) -> torch.Tensor:
        shift, scale, gate = mod[0], mod[1], mod[2]
        return gate_frames(gate, self.attend(modulate_frames(self.norm1(x), shift, scale), ctx))

    def mlp_branch(self, x, mod, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        shift, scale, gate = mod[3], mod[4], mod[5]  # grid: Mix-FFN convolves within each frame
        return gate_frames(gate, self.mlp(modulate_frames(self.norm2(x), shift, scale), grid))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: VideoTokenContext) -> torch.Tensor:
        mod = self.modulation(c)
        x = x + self.attn_branch(x, mod, ctx)  # (N, T, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(x, ctx.text, ctx.text_mask)  # (N, T, D), PixArt-α: ungated
        return x + self.mlp_branch(x, mod, ctx.grid)  # (N, T, D)


# ----------------------------------------------------------------------------- model


class VideoDiT(nn.Module):
    """forward(x (N, F, C, H, W), t (N,) or (N, F), y (N,) long, pooled_text (N, P),
    text (N, L, D_txt), text_mask (N, L), *, attention=core) -> (N, F, C_out, H, W)."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = config
        cfg = config.dit
        d, pt, p = cfg.hidden_size, config.temporal_patch, cfg.patch_size
        self.x_embedder = PatchEmbed3D(pt, p, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size, cfg.timestep_freq_shift)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes > 0 else None
        self.pooled_text_embedder = nn.Linear(config.pooled_text_dim, d) if config.pooled_text_dim > 0 else None
        self.frame_embedder = nn.Linear(d, d, bias=False) if config.frame_embed else None
        self.caption_projection = CaptionProjection(config.text_dim, d) if config.text_dim > 0 else None
        self.frame_text_embedder = (nn.Sequential(nn.Linear(config.pooled_text_dim + d, d), nn.SiLU(), nn.Linear(d, d))
                                    if config.frame_text else None)
        cross = config.text_dim > 0
        self.blocks = nn.ModuleList([VideoDiTBlock(cfg, i, axes, cross) for i, axes in enumerate(config.block_axes())])
        self.final_layer = FinalLayer(cfg)
        self.final_layer.linear = nn.Linear(d, pt * p * p * cfg.out_channels, bias=True)  # (pt, p, p, C_out) per token
        self.attention_core = None  # the core of calls that pass none (training's frame-local bias), see module doc
        self._ctx_cache: dict[tuple, VideoTokenContext] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The reference DiT initialisation (adaLN-Zero: every branch and the output start at zero)."""
        reference_init(self)
        for extra in (self.pooled_text_embedder, self.frame_embedder):  # video-only inputs start as no-ops
            if extra is not None:
                nn.init.zeros_(extra.weight)
        if self.frame_text_embedder is not None:
            nn.init.zeros_(self.frame_text_embedder[-1].weight)
            nn.init.zeros_(self.frame_text_embedder[-1].bias)
        if self.caption_projection is not None:  # PixArt-α's init; the text starts switched off
            nn.init.normal_(self.caption_projection.fc1.weight, std=0.02)
            nn.init.normal_(self.caption_projection.fc2.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        for m in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ stages
    token_context = DiT.token_context  # the image DiT's cache over `_build_token_context` below

    def _build_token_context(self, grid: tuple[int, int, int], device) -> VideoTokenContext:
        cfg = self.config.dit
        f, h, w = grid
        pos = grid_positions(f, h, w)  # (T, 3) as (frame, row, col), frame-major
        rope = rope_space = rope_time = None
        if cfg.use_rope:
            omega = rope_frequencies(self.config)  # (hd/2, 3) float64
            rope = rope_tables_3d(omega, pos)
            rope_space = rope_tables_3d(omega, pos[: h * w])  # frame 0
            rope_time = rope_tables_3d(omega, pos[:: h * w])  # (frame, 0, 0)
            rope, rope_space, rope_time = (tuple(a.to(device) for a in r) for r in (rope, rope_space, rope_time))
        pe = None
        if cfg.use_abs_pos:  # the image model's 2D table in every frame, plus a frame term that is 0 at frame 0
            pe = sincos_2d(cfg.hidden_size, pos[:, 1:])  # (T, D)
            if not cfg.use_rope:  # the only source of frame order then
                frame = pos[:, 0]
                pe = pe + (sincos_1d(cfg.hidden_size, frame) - sincos_1d(cfg.hidden_size, frame * 0)).float()
            pe = pe.to(device).unsqueeze(0)  # (1, T, D)
        frame_pe = None
        if self.config.frame_embed:
            frame = pos[:, 0]
            frame_pe = (sincos_1d(cfg.hidden_size, frame) - sincos_1d(cfg.hidden_size, frame * 0)).float()  # (T, D)
            frame_pe = frame_pe.to(device).unsqueeze(0)  # (1, T, D)
        return VideoTokenContext(grid, pos.to(device), rope, pe, rope_space, rope_time, frame_pe=frame_pe)

    def embed(self, x: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
              attention=None) -> tuple[torch.Tensor, VideoTokenContext]:
        """Tokens (N, T, D) and their context; ``attention``: this call's attention core (default the model's)."""
        cfg, pt = self.config.dit, self.config.temporal_patch
        p = cfg.patch_size
        if x.ndim != 5 or x.shape[2] != cfg.in_channels or x.shape[1] % pt or x.shape[3] % p or x.shape[4] % p:
            raise ValueError(f"expected clips (N, F, {cfg.in_channels}, H, W) with F divisible by {pt} and H, W by {p}, "
                             f"got {tuple(x.shape)}")
        ctx = self.token_context((x.shape[1] // pt, x.shape[3] // p, x.shape[4] // p), x.device)
        core = self.attention_core if attention is None else attention
        if core is not None:
            ctx = dataclasses.replace(ctx, core=core)
        if self.caption_projection is not None:  # per call: never in the cached context
            check_text(text, text_mask, x.shape[0], self.config.text_dim)
            ctx = dataclasses.replace(ctx, text=self.caption_projection(text.to(self.caption_projection.fc1.weight.dtype)),
                                      text_mask=text_mask)  # (N, L, D)
        elif text is not None:
            raise ValueError("this model has no token-level text conditioning (text_dim = 0)")
        tokens = self.x_embedder(x)  # (N, T, D)
        if ctx.pos_embed is not None:
            tokens = tokens + ctx.pos_embed.to(tokens.dtype)
        if self.frame_embedder is not None:
            tokens = tokens + self.frame_embedder(ctx.frame_pe.to(self.frame_embedder.weight.dtype)).to(tokens.dtype)
        return tokens, ctx

    def frame_times(self, t: torch.Tensor, n: int, frames: int) -> torch.Tensor:
        """t (N,) stays per clip; t (N, F) -> (N, f) per latent frame (equal within a temporal patch)."""
        if t.ndim == 1 and t.shape[0] == n:
            return t
        pt = self.config.temporal_patch
        if t.ndim != 2 or t.shape != (n, frames):
            raise ValueError(f"t must have shape ({n},) or ({n}, {frames}), got {tuple(t.shape)}")
        tf = t.reshape(n, frames // pt, pt)  # (N, f, pt)
        if pt > 1 and not bool((tf == tf[..., :1]).all()):
            raise ValueError(f"per-frame times must be equal within each group of {pt} frames (one temporal patch)")
        return tf[..., 0]  # (N, f)

    def condition(self, t: torch.Tensor, y: torch.Tensor | None = None,
                  pooled_text: torch.Tensor | None = None, frames: int | None = None) -> torch.Tensor:
        """c (N, D) for per-clip t (N,), or (N, f, D) for per-latent-frame t (N, f) or with ``frame_text``
        (which needs ``frames``, the clip's latent frames, when t is per clip)."""
        c = self.t_embedder(t.reshape(-1)).reshape(*t.shape, -1)  # (N, D) or (N, f, D)
        extra = 0
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass labels y")
            extra = extra + self.y_embedder(y, self.training)  # (N, D)
        if pooled_text is not None:
            if self.pooled_text_embedder is None:
                raise ValueError("this model has no pooled-text conditioning (pooled_text_dim = 0)")
            extra = extra + self.pooled_text_embedder(pooled_text.to(self.pooled_text_embedder.weight.dtype))  # (N, D)
        if torch.is_tensor(extra):
            c = c + (extra.unsqueeze(1) if c.ndim == 3 else extra)
        if self.frame_text_embedder is not None and pooled_text is not None:
            frames = c.shape[1] if c.ndim == 3 else frames
            c = (c if c.ndim == 3 else c.unsqueeze(1)) + self._frame_text(pooled_text, frames)  # (N, f, D)
        return c

    def _frame_text(self, pooled_text: torch.Tensor, frames: int | None) -> torch.Tensor:
        """The per-frame text term (N, f, D): the MLP of [pooled text, sin-cos of the frame index]."""
        if frames is None:
            raise ValueError("frame_text needs the number of latent frames")
        mlp = self.frame_text_embedder
        dtype = mlp[0].weight.dtype
        frame = torch.arange(frames)
        pe = sincos_1d(self.config.dit.hidden_size, frame) - sincos_1d(self.config.dit.hidden_size, frame * 0)  # (f, D)
        pe = pe.to(pooled_text.device, dtype)
        n = pooled_text.shape[0]
        inp = torch.cat([pooled_text.to(dtype)[:, None].expand(n, frames, -1),
                         pe[None].expand(n, frames, -1)], dim=-1)  # (N, f, P + D)
        return mlp(inp)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        pt, p, c_out = self.config.temporal_patch, self.config.dit.patch_size, self.config.dit.out_channels
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, p, p, c_out)  # (N, f, h, w, pt, p, p, C)
        x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # (N, f, pt, C, h, p, w, p)
        return x.reshape(x.shape[0], f * pt, c_out, h * p, w * p)  # (N, F, C, H, W)

    def final(self, tokens: torch.Tensor, c: torch.Tensor, ctx: VideoTokenContext) -> torch.Tensor:
        fl = self.final_layer
        if c.ndim == 2:
            out = fl(tokens, c)  # (N, T, pt*p*p*C)
        else:
            shift, scale = fl.adaLN_modulation(c).chunk(2, dim=-1)  # (N, f, D) each
            out = fl.linear(modulate_frames(fl.norm_final(tokens), shift, scale))  # (N, T, pt*p*p*C)
        return self.unpatchify(out, ctx.grid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                pooled_text: torch.Tensor | None = None, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, *, attention=None) -> torch.Tensor:
        tokens, ctx = self.embed(x, text, text_mask, attention)  # (N, T, D)
        c = self.condition(self.frame_times(t, x.shape[0], x.shape[1]), y, pooled_text,
                           frames=x.shape[1] // self.config.temporal_patch)  # (N, D) or (N, f, D)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)  # (N, T, D)
        return self.final(tokens, c, ctx)  # (N, F, C_out, H, W)

    # ------------------------------------------------------------------ bookkeeping
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _apply(self, fn, *args, **kwargs):
        self._ctx_cache.clear()
        return super()._apply(fn, *args, **kwargs)


# ----------------------------------------------------------------------------- image -> video


def video_config_from_image(image: DiTConfig, **video_options) -> VideoDiTConfig:
    """A VideoDiTConfig whose trunk is the image model's (``video_options`` set the rest)."""
    return VideoDiTConfig(dit=image, **video_options)
