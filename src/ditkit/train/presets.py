"""Named training recipes: ``ditkit train --preset NAME``.

Each recipe is one explicit ``TrainConfig``: the recipes behind the bundled models (the command that trained
each is recorded in its ``config.json``), the latent recipe for pre-encoded latents, and a tiny one for tests
and smoke runs.
"""

from __future__ import annotations

from ..config import get_preset
from ..diffusion.flow import FlowConfig
from ..models.text_encoder import WordEncoderConfig
from ..shapes.moving import DIRECTIONS, MOTIONS
from .repa import RepaConfig
from .trainer import TrainConfig
from .video import VideoTrainConfig

_WORDS = WordEncoderConfig(dim=128, depth=2, num_heads=2, max_length=16)  # the word encoder trained with text models

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # A few hundred steps of the tiny pixel-space model: tests and smoke runs.
    "shapes-tiny": TrainConfig(
        model=get_preset("shapes-tiny"), steps=200, batch_size=32, lr=1e-3, warmup_steps=20,
        log_every=10, ckpt_every=100, ema_decay=0.99,
    ),
    # assets/shapes-dit: class-conditional latent flow matching on assets/shapes-ae latents, Mix-FFN trunk,
    # REPA on block 3 against assets/repa-encoder; 10,000 steps of batch 64, cosine decay after 300 warm-up steps.
    "shapes-repa": TrainConfig(
        model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=10_000, batch_size=64, lr=1e-3, warmup_steps=300, lr_schedule="cosine",
        log_every=25, ckpt_every=250, snapshot_every=500, ema_decay=0.999,
        autoencoder="assets/shapes-ae", repa=RepaConfig(depth=3),
    ),
    # Class-conditional latent flow matching without REPA: the recipe for latents pre-encoded by `ditkit encode`
    # (``--data latents:DIR``), which REPA cannot use (it aligns with features of the clean images).
    "shapes-latent": TrainConfig(
        model=get_preset("shapes-latent"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=12_000, batch_size=64, lr=1e-3, warmup_steps=300,
        log_every=25, ckpt_every=250, snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae",
    ),
    # assets/shapes-t2i: text to image with cross-attention to the word encoder, 10 % of captions dropped;
    # trained with ``--init-from assets/shapes-dit`` (the image trunk starts from the class-conditional model).
    "shapes-t2i": TrainConfig(
        model=get_preset("shapes-t2i"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=4_000, batch_size=64, lr=5e-4, warmup_steps=200, lr_schedule="cosine",
        log_every=25, ckpt_every=250, snapshot_every=500, ema_decay=0.999,
        autoencoder="assets/shapes-ae", text_encoder=_WORDS,
    ),
    # assets/shapes-t2v: 8-frame text-to-video from assets/shapes-t2i, two frames per token, training times
    # shifted to high noise, directional motions drawn twice as often, motion-weighted loss, re-noised context,
    # attention frame-local for the first 1,000 steps and "sized" captions; 9,000 steps of 16 clips.
    "shapes-t2v-pt2-motion-9k": TrainConfig(
        model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal", train_shift=3.0),
        steps=9_000, batch_size=16, lr=1e-3, warmup_steps=200, lr_schedule="cosine",
        log_every=25, ckpt_every=100, snapshot_every=500, ema_decay=0.999,
        autoencoder="assets/shapes-ae", text_encoder=_WORDS, init_from="assets/shapes-t2i",
        video=VideoTrainConfig(
            temporal_patch=2, frame_embed=True, cross_attention=True, context_noise=0.2, motion_weight=2.0,
            motions=(*DIRECTIONS, *MOTIONS), frame_local_steps=1_000, caption_style="sized",
        ),
    ),
}


def train_preset_names() -> list[str]:
    """The names ``get_train_preset`` accepts, in registry order."""
    return list(TRAIN_PRESETS)


def get_train_preset(name: str) -> TrainConfig:
    """The named recipe; ``ValueError`` naming the choices for an unknown name."""
    try:
        return TRAIN_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}") from None
