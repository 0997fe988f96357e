"""Text-to-video: ditkit's word encoder and a `VideoDiT` as one trainable module.

The caption enters the video DiT two ways: as a pooled sentence embedding added to the timestep
embedding (``VideoDiTConfig.pooled_text_dim``; the pooled-text path of SD3/MMDiT, Esser et al. 2024):
the masked mean of the encoder's tokens; and, with ``VideoDiTConfig.text_dim``, token by token through
cross-attention in every block (PixArt-α). The pooled path alone was measured to carry the shape word
and little else: after 1,300 steps of the first shapes-t2v run, changing the colour word moved the
conditioning vector by 0.003 and the direction word by 0.02-0.06 (the shape word: 0.4-1.0), and
clips followed neither. The image trunk keeps its exact layout, so a class-conditional image
checkpoint is a drop-in start (`ditkit.models.video_init.init_from_image`). The class table of that checkpoint stays in the
model and is always fed the null label, so the model starts as the image model's unconditional
branch in every frame; the zero-initialised text paths then learn the caption. The empty prompt is
the unconditional input for classifier-free guidance.

Image-to-video (STIV, Lin et al. 2025, "frame replacement"): the first latent frame of the noisy
clip is replaced by the clean latent of the given image at every step and its time set to 0, so the
model sees it as clean context (diffusion-forcing training with clean prefixes teaches this; see
`ditkit.diffusion.forcing`), with STIV's joint image-text guidance; `ditkit.pipelines.video` does both.
"""

from __future__ import annotations

import torch
from torch import nn

from .text_common import masked_mean
from .text_encoder import WordTextEncoder
from .video_dit import VideoDiT


def null_labels(dit: VideoDiT, n: int, device) -> torch.Tensor | None:
    """The class table's null row for each of n clips (None when the trunk has no class table)."""
    if dit.y_embedder is None:
        return None
    return torch.full((n,), dit.config.dit.num_classes, dtype=torch.long, device=device)


def check_text_dims(text_dim: int, config) -> None:
    """The encoder's token width must be what the video DiT pools and cross-attends to (ValueError)."""
    wanted = {d for d in (config.pooled_text_dim, config.text_dim) if d > 0}
    if not wanted:
        raise ValueError("the video DiT takes no text (pooled_text_dim = text_dim = 0)")
    if wanted != {text_dim}:
        raise ValueError(f"the text encoder gives {text_dim}-dim tokens, the video DiT takes "
                         f"pooled {config.pooled_text_dim} / tokens {config.text_dim}")


def text_conditioning(config, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The video DiT's text keywords from encoder tokens (N, L, D) and mask (N, L): the pooled mean
    (``pooled_text``) and / or the tokens themselves (``text``, ``text_mask``), as the config takes."""
    cond = {}
    if config.pooled_text_dim > 0:
        cond["pooled_text"] = masked_mean(tokens, mask)  # (N, D)
    if config.text_dim > 0:
        cond["text"], cond["text_mask"] = tokens, mask
    return cond


class TextToVideo(nn.Module):
    """forward(x (N, F, C, H, W), t (N,) or (N, F), ids (N, L), ids_mask (N, L)) -> (N, F, C_out, H, W)."""

    def __init__(self, encoder: WordTextEncoder, dit: VideoDiT):
        super().__init__()
        check_text_dims(encoder.text_dim, dit.config)
        ye = dit.y_embedder
        if ye is not None and ye.embedding_table.num_embeddings <= ye.num_classes:
            raise ValueError("a class-conditional video trunk needs the null class row (class_dropout_prob > 0): "
                             "text-to-video feeds it the null label")
        self.encoder, self.dit = encoder, dit

    @property
    def config(self):
        return self.dit.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, ids_mask: torch.Tensor) -> torch.Tensor:
        cond = text_conditioning(self.dit.config, self.encoder(ids, ids_mask), ids_mask)
        return self.dit(x, t, null_labels(self.dit, x.shape[0], x.device), **cond)
