"""Joint-attention text-conditioned DiT (MMDiT), after Stable Diffusion 3
(Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis", §4, Fig. 2).

Image and text are two token streams with separate weights (norms, adaLN modulation, qkv, output
projection, MLP) that meet in one attention over the concatenated sequence [image; text]:

    q = [q_img; q_txt], k = [k_img; k_txt], v = [v_img; v_txt]   (N, H, T + L, hd)
    out = softmax(q k^T / sqrt(hd) + key padding mask) v,  split back into the two streams.

Both streams are modulated adaLN-Zero style (DiT) by one vector c = t_emb + pooled_text (N, D).
SD3 pools CLIP's pooled outputs; ditkit pools the text tokens with a masked mean (any encoder
works), then an MLP (Linear -> SiLU -> Linear). The text tokens enter through a linear
``context_embedder`` (D_txt -> D) and carry no extra positions (the encoder has its own); image
tokens keep DiT's positions (fixed sin-cos and/or RoPE, applied to image queries and keys only).
The last block drops the text stream's output (SD3's ``context_pre_only``): only image queries
are computed there, and the text stream has no output projection or MLP in that block.

Stages (the layout of `ditkit.models.dit`)::

    tokens, ctx = model.embed(x, text, text_mask)  # (N, T, D); ctx.text (N, L, D), ctx.text_mask (N, L)
    c = model.condition(t, text, text_mask)        # (N, D)
    txt = ctx.text
    for block in model.blocks:
        tokens, txt = block(tokens, txt, c, ctx)   # (N, T, D), (N, L, D) (None after the last block)
    out = model.final(tokens, c, ctx)              # (N, C_out, H, W)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextDiTConfig
from .dit import FinalLayer
from .layers import Attention, PatchEmbed, RMSNorm, TimestepEmbedder, apply_rope, make_mlp, make_norm, modulate, reference_init
from .text_common import ImageStages, TextTokenContext, check_text, masked_mean


def _split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, S, 3D) fused projections -> q, k, v each (N, H, S, hd)."""
    n, s, three_d = qkv.shape
    qkv = qkv.reshape(n, s, 3, num_heads, three_d // (3 * num_heads))  # (N, S, 3, H, hd)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


class JointAttention(nn.Module):
    """Attention over [image; text] with per-stream projections. ``self.image`` is a DiT `Attention`
    (same names: qkv, q_norm, k_norm, proj); the text stream has its own ``*_context`` weights."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, context_out: bool):
        super().__init__()
        self.num_heads, self.context_out = num_heads, context_out
        self.image = Attention(dim, num_heads, qk_norm=qk_norm, eps=eps)
        head_dim = dim // num_heads
        self.qkv_context = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm_context = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm_context = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()
        self.proj_context = nn.Linear(dim, dim, bias=True) if context_out else None

    def forward(self, x: torch.Tensor, txt: torch.Tensor, text_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, T, D), txt (N, L, D), text_mask (N, L) -> image (N, T, D), text (N, L, D) or None."""
        n, t, d = x.shape
        img = self.image
        q_x, k_x, v_x = _split_heads(img.qkv(x), self.num_heads)  # (N, H, T, hd) each
        q_x, k_x = img.q_norm(q_x), img.k_norm(k_x)
        if rope is not None:
            q_x, k_x = apply_rope(q_x, *rope), apply_rope(k_x, *rope)
        q_c, k_c, v_c = _split_heads(self.qkv_context(txt), self.num_heads)  # (N, H, L, hd) each
        q_c, k_c = self.q_norm_context(q_c), self.k_norm_context(k_c)
        k = torch.cat([k_x, k_c], dim=2)  # (N, H, T + L, hd)
        v = torch.cat([v_x, v_c], dim=2)  # (N, H, T + L, hd)
        q = torch.cat([q_x, q_c], dim=2) if self.context_out else q_x  # (N, H, T (+ L), hd)
        keep = torch.cat([text_mask.new_ones(n, t), text_mask], dim=1)  # (N, T + L) True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (N, H, T (+ L), hd)
        out = out.transpose(1, 2).reshape(n, -1, d)  # (N, T (+ L), D)
        x_out = img.proj(out[:, :t])  # (N, T, D)
        return x_out, (self.proj_context(out[:, t:]) if self.context_out else None)  # (N, L, D)


class MMDiTBlock(nn.Module):
    """Two adaLN-Zero streams around one joint attention; ``context_out=False`` ends the text stream."""

    def __init__(self, cfg: TextDiTConfig, context_out: bool = True):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.norm_eps
        mlp_eps = eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps
        hidden = int(d * cfg.mlp_ratio)

        def mlp(stream: str):  # Mix-FFN convolves over the image grid: the text stream keeps a plain MLP
            return make_mlp("gelu" if cfg.mlp_type == "mixffn" and stream == "text" else cfg.mlp_type, d, hidden)

        self.context_out = context_out
        self.norm1 = make_norm(cfg.norm_type, d, eps)
        self.norm1_context = make_norm(cfg.norm_type, d, eps)
        self.attn = JointAttention(d, cfg.num_heads, cfg.qk_norm, eps, context_out)
        self.norm2 = make_norm(cfg.norm_type, d, mlp_eps)
        self.mlp = mlp("image")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, bias=True))
        # text: 6 modulation vectors, or only the attention input's (shift, scale) in the last block
        self.adaLN_modulation_context = nn.Sequential(nn.SiLU(), nn.Linear(d, (6 if context_out else 2) * d, bias=True))
        if context_out:
            self.norm2_context = make_norm(cfg.norm_type, d, mlp_eps)
            self.mlp_context = mlp("text")

    def forward(self, x: torch.Tensor, txt: torch.Tensor, c: torch.Tensor,
                ctx: TextTokenContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (N, D)
        mod_c = self.adaLN_modulation_context(c).chunk(6 if self.context_out else 2, dim=1)  # each (N, D)
        a_x, a_c = self.attn(modulate(self.norm1(x), shift1, scale1),
                             modulate(self.norm1_context(txt), mod_c[0], mod_c[1]), ctx.text_mask, rope=ctx.rope)
        x = x + gate1.unsqueeze(1) * a_x  # (N, T, D)
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2), ctx.grid)  # (N, T, D)
        if not self.context_out:
            return x, None
        txt = txt + mod_c[2].unsqueeze(1) * a_c  # (N, L, D)
        txt = txt + mod_c[5].unsqueeze(1) * self.mlp_context(modulate(self.norm2_context(txt), mod_c[3], mod_c[4]))
        return x, txt


class PooledTextEmbedder(nn.Module):
    """Masked mean of the text tokens (N, D_txt) -> Linear -> SiLU -> Linear -> (N, D)."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(text_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(masked_mean(text, text_mask))  # (N, D)


class MMDiT(ImageStages):
    """forward(x (N, C, H, W), t (N,), text (N, L, D_txt), text_mask (N, L) bool) -> (N, C_out, H, W)."""

    def __init__(self, config: TextDiTConfig):
        super().__init__()
        if config.arch != "mmdit":
            raise ValueError(f"MMDiT needs arch='mmdit', got {config.arch!r}")
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size, cfg.timestep_freq_shift)
        self.pooled_embedder = PooledTextEmbedder(cfg.text_dim, d)
        self.context_embedder = nn.Linear(cfg.text_dim, d)
        self.blocks = nn.ModuleList([MMDiTBlock(cfg, context_out=i < cfg.depth - 1) for i in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        self._init_image_stages()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, zero biases; adaLN-Zero in both streams and the head (as DiT)."""
        reference_init(self)
        nn.init.normal_(self.pooled_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.pooled_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            for mod in (block.adaLN_modulation, block.adaLN_modulation_context):
                nn.init.zeros_(mod[-1].weight)
                nn.init.zeros_(mod[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ stages
    def embed(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, TextTokenContext]:
        check_text(text, text_mask, x.shape[0], self.config.text_dim)
        tokens, ctx = self.embed_image(x)  # (N, T, D)
        return tokens, self.text_context(ctx, self.context_embedder(text), text_mask)  # text (N, L, D)

    def condition(self, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.t_embedder(t) + self.pooled_embedder(text, text_mask)  # (N, D)

    def final(self, tokens: torch.Tensor, c: torch.Tensor, ctx: TextTokenContext) -> torch.Tensor:
        return self.unpatchify(self.final_layer(tokens, c), ctx.grid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens, ctx = self.embed(x, text, text_mask)  # (N, T, D)
        c = self.condition(t, text, text_mask)  # (N, D)
        txt = ctx.text
        for block in self.blocks:
            tokens, txt = block(tokens, txt, c, ctx)  # (N, T, D), (N, L, D) or None
        return self.final(tokens, c, ctx)  # (N, C_out, H, W)
