"""Text-to-video: ditkit's word encoder and a `VideoDiT` as one trainable module.

The caption enters the video DiT as a pooled sentence embedding added to the timestep embedding
(``VideoDiTConfig.pooled_text_dim``; the pooled-text path of SD3/MMDiT, Esser et al. 2024, and of
Imagen's pooled T5 embedding): the masked mean of the encoder's tokens. On the moving-shapes captions
("a red circle moving left on a blue background") every attribute is global to the clip — shape,
colours, motion — which a per-clip adaLN signal carries well, and the image trunk keeps its exact
layout, so a class-conditional image checkpoint is a drop-in start (`init_from_image`). The class
table of that checkpoint stays in the model and is always fed the null label, so the model starts as
the image model's unconditional branch in every frame; the zero-initialised text projection then
learns the caption. The empty prompt is the unconditional input for classifier-free guidance.

Image-to-video (STIV, Lin et al. 2025, "frame replacement"): the first latent frame of the noisy
clip is replaced by the clean latent of the given image at every step and its time set to 0, so the
model sees it as clean context (diffusion-forcing training with clean prefixes teaches this; see
`ditkit.diffusion.forcing`), with STIV's joint image-text guidance; `ditkit.video_pipeline` does both.
"""

from __future__ import annotations

import torch
from torch import nn

from .text_common import masked_mean
from .text_encoder import WordTextEncoder, shapes_vocabulary
from .video_dit import VideoDiT

MOTION_WORDS = ("an", "moving", "left", "right", "up", "down", "bouncing", "rotating", "turning")


def video_vocabulary() -> tuple[str, ...]:
    """Every word of the moving-shapes captions (`ditkit.data.moving_shapes`): the image words plus motions."""
    return (*shapes_vocabulary(), *MOTION_WORDS)


def null_labels(dit: VideoDiT, n: int, device) -> torch.Tensor | None:
    """The class table's null row for each of n clips (None when the trunk has no class table)."""
    if dit.y_embedder is None:
        return None
    return torch.full((n,), dit.config.dit.num_classes, dtype=torch.long, device=device)


class TextToVideo(nn.Module):
    """forward(x (N, F, C, H, W), t (N,) or (N, F), ids (N, L), ids_mask (N, L)) -> (N, F, C_out, H, W)."""

    def __init__(self, encoder: WordTextEncoder, dit: VideoDiT):
        super().__init__()
        if dit.config.pooled_text_dim != encoder.text_dim:
            raise ValueError(f"the text encoder gives {encoder.text_dim}-dim tokens, the video DiT pools "
                             f"{dit.config.pooled_text_dim}")
        ye = dit.y_embedder
        if ye is not None and ye.embedding_table.num_embeddings <= ye.num_classes:
            raise ValueError("a class-conditional video trunk needs the null class row (class_dropout_prob > 0): "
                             "text-to-video feeds it the null label")
        self.encoder, self.dit = encoder, dit

    @property
    def config(self):
        return self.dit.config

    def pooled(self, ids: torch.Tensor, ids_mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.encoder(ids, ids_mask), ids_mask)  # (N, D_txt)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, ids_mask: torch.Tensor) -> torch.Tensor:
        return self.dit(x, t, null_labels(self.dit, x.shape[0], x.device), self.pooled(ids, ids_mask))
