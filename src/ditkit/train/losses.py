"""What a training step minimises, for each kind of run: class-conditional images, text to image, text to video.

A `Task` is one row of plain functions; the trainer picks the row once from its config (`task_of`)
and calls its parts in this order every step:

    times(process, cfg, n, generator)       the noise levels of the global batch, (n,) or per frame (n, F)
    encode(codec, x)                        clean pixels -> latents (only with an autoencoder)
    conditions(model, y, drop, cfg)         labels or captions -> the model's condition keywords, CFG drop applied
    loss(process, model_fn, batch, cfg)     the mean loss of one micro-batch (a `Batch`)

Conditions are built once for this process's rows of the step and then sliced into micro-batches,
so captions are tokenised (and padded) together whatever ``grad_accum`` is. The random draws come
from the step's generator in `Trainer._batch`, in a fixed order (batch indices, noise, times, CFG
drop), which is what makes a resumed run repeat an uninterrupted one exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config import is_text_config
from ..diffusion.flow import FlowMatching
from ..diffusion.forcing import forcing_loss, sample_frame_times
from .video import FrameLocalBias, encode_clips, frame_local_penalty


@dataclass(frozen=True)
class Batch:
    """Rows of one step on this process, on its device: clean inputs, conditions and the step's noise."""

    x: torch.Tensor  # clean images or latents (B, C, H, W), or clips (B, F, C, h, w)
    cond: dict[str, torch.Tensor]  # the model's condition keywords (labels or word ids), CFG drop applied
    noise: torch.Tensor  # the shape of x
    s: torch.Tensor  # process times (B,), or per frame (B, F)
    context_level: torch.Tensor | None = None  # video: the noise level of each clip's clean context frames (B,)

    def rows(self, sl: slice) -> Batch:
        """The micro-batch of rows `sl`."""
        level = None if self.context_level is None else self.context_level[sl]
        return Batch(self.x[sl], {k: v[sl] for k, v in self.cond.items()}, self.noise[sl], self.s[sl], level)


# ----------------------------------------------------------------------------- noise levels


def image_times(process: FlowMatching, cfg, n: int, generator: torch.Generator) -> torch.Tensor:
    """One process time per image, (n,), from the process's training distribution."""
    return process.sample_time(n, generator=generator)


def clip_times(process: FlowMatching, cfg, n: int, generator: torch.Generator) -> torch.Tensor:
    """Per-frame times (n, F): diffusion forcing and clean prefixes (`ditkit.diffusion.forcing`)."""
    return sample_frame_times(process, n, cfg.video.frames, cfg.video.forcing(), generator=generator)


# ----------------------------------------------------------------------------- encoding


def encode_images(codec, x: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) -> latents (B, C, h, w) in float32."""
    return codec.encode(x).float()


# ----------------------------------------------------------------------------- conditions


def class_conditions(model: nn.Module, labels: torch.Tensor, drop: torch.Tensor, cfg) -> dict[str, torch.Tensor]:
    """Class labels (B,), the dropped ones replaced by the null class ``num_classes`` (CFG)."""
    labels = labels.to(drop.device)
    return {"y": torch.where(drop.bool(), torch.full_like(labels, cfg.model.num_classes), labels)}


def caption_conditions(model: nn.Module, captions: Sequence[str], drop: torch.Tensor, cfg) -> dict[str, torch.Tensor]:
    """Captions as word ids (B, L) and mask, the dropped ones replaced by the empty prompt (CFG)."""
    ids, mask = model.encoder.tokenize(["" if d else c for c, d in zip(captions, drop.tolist())])
    return {"ids": ids.to(drop.device), "ids_mask": mask.to(drop.device)}


# ----------------------------------------------------------------------------- losses


def image_loss(process: FlowMatching, model_fn: Callable, batch: Batch, cfg) -> torch.Tensor:
    """Class- or text-conditioned images: the flow-matching velocity MSE, averaged over the micro-batch."""
    return process.training_loss(model_fn, batch.x, batch.cond, noise=batch.noise, s=batch.s).mean()


def video_loss(process: FlowMatching, model_fn: Callable, batch: Batch, cfg) -> torch.Tensor:
    """Text to video: the diffusion-forcing loss (per-frame noise levels, clean context frames left out)."""
    return forcing_loss(process, model_fn, batch.x, cfg.video.forcing(), batch.cond, noise=batch.noise, s=batch.s,
                        context_level=batch.context_level).mean()


# ----------------------------------------------------------------------------- per-step model settings


def frame_local_warm_up(model: nn.Module, cfg, step: int) -> None:
    """The cross-frame attention penalty of `step` (`ditkit.train.video`), or plain attention once it is over."""
    if cfg.video.frame_local_steps:
        penalty = frame_local_penalty(cfg.video, step)
        model.dit.attention_core = FrameLocalBias(penalty) if penalty > 0 else None


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """The parts of a training step that depend on what the run trains (see the module doc)."""

    name: str
    times: Callable[..., torch.Tensor]
    encode: Callable[..., torch.Tensor]
    conditions: Callable[..., dict[str, torch.Tensor]]
    loss: Callable[..., torch.Tensor]
    before_step: Callable[..., None] | None = None  # (model, cfg, step): a per-step setting of the model


CLASS = Task("class", image_times, encode_images, class_conditions, image_loss)
TEXT = Task("text", image_times, encode_images, caption_conditions, image_loss)
VIDEO = Task("video", clip_times, encode_clips, caption_conditions, video_loss, before_step=frame_local_warm_up)


def task_of(cfg) -> Task:
    """The task of a `TrainConfig`: text to video with ``cfg.video``, text to image with a text-DiT config, else class."""
    if cfg.video is not None:
        return VIDEO
    return TEXT if is_text_config(cfg.model) else CLASS
