"""What the text-conditioned DiTs (`cross_dit.CrossDiT`, `mmdit.MMDiT`) share.

* `TextTokenContext` — DiT's `TokenContext` (grid, positions, rotary / sin-cos tables) plus the
  projected text tokens and their padding mask, so a block's signature stays ``block(x, c, ctx)``.
* `ImageStages` — the image half of DiT's staged forward (patch embed + positions, unpatchify),
  reused from `ditkit.models.dit.DiT` so image tokens are laid out exactly as in the class model.
* `key_padding_mask` / `masked_mean` — how a text padding mask enters attention and pooling.

Text conventions. A text encoder returns ``tokens (N, L, D_txt)`` and ``mask (N, L)`` bool, True on
real tokens. Padding positions may hold anything: they are excluded from every attention key set and
from pooling, so padding a prompt to any length leaves the image output unchanged. Every row must
have at least one real token (the encoders emit one even for the empty prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import TextDiTConfig
from .dit import DiT, TokenContext


@dataclass
class TextTokenContext(TokenContext):
    """TokenContext + the text the image tokens attend to (built per call, never cached)."""

    text: torch.Tensor | None = None  # (N, L, D) projected text tokens
    text_mask: torch.Tensor | None = None  # (N, L) bool, True = real token


def check_text(text: torch.Tensor, text_mask: torch.Tensor, batch: int, text_dim: int) -> None:
    if text is None or text_mask is None:
        raise ValueError("this model is text-conditioned: pass text (N, L, D_txt) and text_mask (N, L)")
    if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != text_dim:
        raise ValueError(f"expected text tokens ({batch}, L, {text_dim}), got {tuple(text.shape)}")
    if text_mask.shape != text.shape[:2] or text_mask.dtype != torch.bool:
        raise ValueError(f"expected a bool text_mask {tuple(text.shape[:2])}, got {text_mask.dtype} {tuple(text_mask.shape)}")
    if not bool(text_mask.any(dim=1).all()):
        raise ValueError("every prompt needs at least one unmasked text token")


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """(N, L) bool keys -> (N, 1, 1, L) boolean SDPA mask (True = attend), broadcast over heads and queries."""
    return mask[:, None, None, :]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: (N, L, D), (N, L) -> (N, D)."""
    w = mask.to(tokens.dtype).unsqueeze(-1)  # (N, L, 1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class ImageStages(nn.Module):
    """Image-token stages shared with the class-conditional DiT (same functions, same tables).

    Subclasses define ``config`` (a `TextDiTConfig`), ``x_embedder`` and call ``_init_image_stages()``.
    """

    config: TextDiTConfig

    def _init_image_stages(self) -> None:
        self._ctx_cache: dict[tuple, TokenContext] = {}

    token_context = DiT.token_context  # positions, RoPE and sin-cos tables for a token grid (cached)
    _build_token_context = DiT._build_token_context
    embed_image = DiT.embed  # (N, C, H, W) -> tokens (N, T, D) (+ fixed positions), TokenContext
    unpatchify = DiT.unpatchify  # (N, T, p*p*C_out) -> (N, C_out, H, W)
    num_parameters = DiT.num_parameters

    def text_context(self, ctx: TokenContext, text: torch.Tensor, text_mask: torch.Tensor) -> TextTokenContext:
        return TextTokenContext(ctx.grid, ctx.positions, ctx.rope, ctx.pos_embed, text, text_mask)

    def _apply(self, fn, *args, **kwargs):
        self._ctx_cache.clear()  # device/dtype moves invalidate cached position tables
        return super()._apply(fn, *args, **kwargs)
