"""Text-conditioned DiT with cross-attention and adaLN-single, after PixArt-α
(Chen et al. 2023, "PixArt-α: Fast Training of Diffusion Transformer for Photorealistic
Text-to-Image Synthesis", §2.3 and Fig. 4).

Differences from the class-conditional DiT block (`ditkit.models.dit.DiTBlock`):

* adaLN-single. The timestep embedding ``t_emb`` (N, D) goes through ONE shared MLP ``t_block``
  (SiLU -> Linear(D, 6D)); block i adds its own learned table E_i (6, D):
  ``[shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp] = t_block(t_emb) + E_i``.
  This replaces DiT's per-block adaLN MLPs (27 % of DiT-XL's parameters, PixArt-α §2.3).
* Cross-attention to the text tokens between self-attention and the MLP, on the un-normalised
  residual stream and without a gate, as in PixArt-α: ``x += CrossAttn(x, text)``. Its output
  projection starts at zero, so a freshly built model ignores the text until it learns to use it.
* The text (D_txt) is projected to D by the caption projection (Linear -> GELU-tanh -> Linear).
* The final layer modulates with ``E_final (2, D) + t_emb`` (no MLP), as in PixArt-α.

Stages (the layout of `ditkit.models.dit`, with text riding in the token context)::

    tokens, ctx = model.embed(x, text, text_mask)  # (N, T, D); ctx.text (N, L, D), ctx.text_mask (N, L)
    c = model.condition(t)                         # TimeCondition: emb (N, D), mod (N, 6, D)
    for block in model.blocks:
        tokens = block(tokens, c, ctx)             # (N, T, D)
    out = model.final(tokens, c, ctx)              # (N, C_out, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextDiTConfig
from .layers import Attention, PatchEmbed, RMSNorm, TimestepEmbedder, make_mlp, make_norm, modulate, reference_init
from .text_common import ImageStages, TextTokenContext, check_text, key_padding_mask


@dataclass
class TimeCondition:
    """The timestep conditioning of one call: the embedding and the shared adaLN-single modulation."""

    emb: torch.Tensor  # (N, D) timestep embedding (the final layer's input)
    mod: torch.Tensor  # (N, 6, D) t_block(emb): shared by every block before its own table is added


class CrossAttention(nn.Module):
    """Multi-head attention of image tokens (queries) over text tokens (keys/values) with a key padding mask."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x (N, T, D), text (N, L, D), text_mask (N, L) bool -> (N, T, D)."""
        n, t, d = x.shape
        q = self.q(x).reshape(n, t, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, T, hd)
        kv = self.kv(text).reshape(n, text.shape[1], 2, self.num_heads, self.head_dim)  # (N, L, 2, H, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (N, H, L, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(text_mask))  # (N, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class CaptionProjection(nn.Module):
    """Text tokens D_txt -> D: fc1 -> GELU(tanh) -> fc2 (PixArt-α's caption projection)."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(text_dim, dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(text)))  # (N, L, D)


class CrossDiTBlock(nn.Module):
    """x += g1 * SelfAttn(mod(norm x)); x += CrossAttn(x, text); x += g2 * MLP(mod(norm x))."""

    def __init__(self, cfg: TextDiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = make_norm(cfg.norm_type, d, cfg.norm_eps)
        self.attn = Attention(d, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.norm_eps)
        self.cross_attn = CrossAttention(d, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.norm_eps)
        self.norm2 = make_norm(cfg.norm_type, d, cfg.norm_eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = make_mlp(cfg.mlp_type, d, hidden)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)  # E_i (PixArt-α init)

    def modulation(self, c: TimeCondition) -> tuple[torch.Tensor, ...]:
        """(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), each (N, D)."""
        return (c.mod + self.scale_shift_table[None].to(c.mod.dtype)).unbind(1)  # (N, 6, D) -> 6 x (N, D)

    def forward(self, x: torch.Tensor, c: TimeCondition, ctx: TextTokenContext) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), rope=ctx.rope)  # (N, T, D)
        x = x + self.cross_attn(x, ctx.text, ctx.text_mask)  # (N, T, D)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2), ctx.grid)  # (N, T, D)


class CrossFinalLayer(nn.Module):
    """norm -> modulate with (E_final + t_emb) -> Linear(D, p*p*C_out)."""

    def __init__(self, cfg: TextDiTConfig):
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.norm_final = make_norm(cfg.norm_type, d, cfg.norm_eps)
        self.linear = nn.Linear(d, p * p * cfg.out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)

    def forward(self, x: torch.Tensor, c: TimeCondition) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None].to(c.emb.dtype) + c.emb[:, None]).unbind(1)  # 2 x (N, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


class CrossDiT(ImageStages):
    """forward(x (N, C, H, W), t (N,), text (N, L, D_txt), text_mask (N, L) bool) -> (N, C_out, H, W)."""

    def __init__(self, config: TextDiTConfig):
        super().__init__()
        if config.arch != "cross":
            raise ValueError(f"CrossDiT needs arch='cross', got {config.arch!r}")
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size, cfg.timestep_freq_shift)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, bias=True))  # adaLN-single
        self.caption_projection = CaptionProjection(cfg.text_dim, d)
        self.blocks = nn.ModuleList([CrossDiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = CrossFinalLayer(cfg)
        self._init_image_stages()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, zero biases; PixArt-α's choices for the t-MLPs, cross-attention output and head."""
        reference_init(self)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.normal_(self.caption_projection.fc1.weight, std=0.02)
        nn.init.normal_(self.caption_projection.fc2.weight, std=0.02)
        for block in self.blocks:  # text starts switched off
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ------------------------------------------------------------------ stages
    def embed(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, TextTokenContext]:
        check_text(text, text_mask, x.shape[0], self.config.text_dim)
        tokens, ctx = self.embed_image(x)  # (N, T, D)
        return tokens, self.text_context(ctx, self.caption_projection(text), text_mask)  # text (N, L, D)

    def condition(self, t: torch.Tensor) -> TimeCondition:
        emb = self.t_embedder(t)  # (N, D)
        return TimeCondition(emb, self.t_block(emb).unflatten(1, (6, -1)))  # mod (N, 6, D)

    def final(self, tokens: torch.Tensor, c: TimeCondition, ctx: TextTokenContext) -> torch.Tensor:
        return self.unpatchify(self.final_layer(tokens, c), ctx.grid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens, ctx = self.embed(x, text, text_mask)  # (N, T, D)
        c = self.condition(t)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)  # (N, T, D)
        return self.final(tokens, c, ctx)  # (N, C_out, H, W)
