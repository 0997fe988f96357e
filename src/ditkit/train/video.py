"""Text-to-video training options: the clip, the video trunk around the image config, and how noise
levels are drawn per frame.

A run with ``TrainConfig.video`` trains `TextToVideo` (ditkit's word encoder + `VideoDiT`) on
moving-shape clips (`ditkit.shapes.moving`), encoded frame by frame by the run's autoencoder.
``TrainConfig.model`` stays the per-frame image trunk (a `DiTConfig`), so ``init_from`` an image model
folder loads that model's weights unchanged (`ditkit.models.video_init.init_from_image`: images are
one-frame videos).

Noise levels (`ditkit.diffusion.forcing`): with probability ``per_frame_prob`` a clip gets
independent per-frame times (Diffusion Forcing, Chen et al. 2024; FVDM's PTSS, Liu et al. 2024),
otherwise one time for the clip (plain text-to-video); with probability ``context_prob`` a random
prefix of frames is clean (s = 0) and left out of the loss — the case of image-to-video (one clean
first frame, STIV-style frame replacement) and of long rollouts (the previous window's tail).
With ``context_noise`` > 0 that prefix is fed re-noised to a level drawn per clip from
U(0, context_noise), as a rollout's context is at sampling (``--context-noise``).

Frame-local warm-up (``frame_local_steps``): for the first ``frame_local_steps`` steps a penalty
``frame_local_bias * (1 - step / frame_local_steps)`` is subtracted from every cross-frame attention
logit (`FrameLocalBias`), so a trunk started from an image model trains at first much as the image
model applied frame by frame, and attention opens across frames gradually. Afterwards attention is
the plain full attention the model samples with; no trace of the warm-up is left in the model. A
curriculum in the spirit of ALiBi's distance penalty (Press et al. 2022), applied between frames and
annealed away. Measured on the H100 (`scripts/t2v_sweep.py`): 1,000 warm-up steps lifted text-to-video
shape accuracy at step 1,850 from 49 % to 65 %. The untrained start scores the same with or without
frame-local attention (24 % vs 23 %), so the gain comes during training, not from the first step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import DiTConfig
from ..diffusion.forcing import ForcingConfig
from ..models.video_dit import VideoDiTConfig
from ..shapes.moving import MOTIONS, check_caption_style


@dataclass(frozen=True)
class VideoTrainConfig:
    frames: int = 8  # clip length in frames (also the model's num_frames, the window it is trained on)
    temporal_patch: int = 1
    attention: str = "full"  # "full" 3D attention or "factorized"
    rope_layout: str = "image"  # "image" keeps the image model's RoPE tables at frame 0
    temporal_rope_pairs: int = 4
    frame_embed: bool = False  # learnt frame embedding in every token (`VideoDiTConfig.frame_embed`)
    cross_attention: bool = False  # the caption's tokens also through cross-attention (`VideoDiTConfig.text_dim`)
    frame_text: bool = False  # a per-frame term of (pooled caption, frame) in the conditioning (`VideoDiTConfig.frame_text`)
    text_dim: int = 128  # the word encoder's width = the pooled text the DiT takes
    caption_dropout_prob: float = 0.1  # caption -> "" for guidance
    per_frame_prob: float = 0.3  # independent per-frame noise levels (diffusion forcing)
    context_prob: float = 0.3  # a clean prefix of 1..F-1 frames (image-to-video, rollouts)
    context_noise: float = 0.0  # that prefix re-noised to a level from U(0, context_noise) (rollouts' noised context)
    motion_weight: float = 0.0  # loss weight on what changes over the clip (`diffusion.forcing.motion_weights`)
    motions: tuple[str, ...] = MOTIONS
    frame_local_steps: int = 0  # cross-frame attention penalty annealed to zero over these first steps (0: off)
    frame_local_bias: float = 8.0  # the penalty at step 0 (logit units)
    caption_style: str = "motion-first"  # the clips' captions (`shapes.moving.CAPTION_STYLES`)

    def __post_init__(self):
        if self.frame_local_steps < 0 or self.frame_local_bias < 0:
            raise ValueError("frame_local_steps and frame_local_bias must be >= 0")
        if self.frames < 2:
            raise ValueError(f"a training clip needs at least 2 frames, got {self.frames}")
        if not 0 <= self.caption_dropout_prob < 1:
            raise ValueError(f"caption_dropout_prob must lie in [0, 1), got {self.caption_dropout_prob}")
        check_caption_style(self.caption_style)
        unknown = [m for m in self.motions if m not in MOTIONS]
        if not self.motions or unknown:
            raise ValueError(f"unknown motions {unknown}; choose from {', '.join(MOTIONS)}")
        self.forcing()  # validates the probabilities and the temporal patch

    def forcing(self) -> ForcingConfig:
        return ForcingConfig(per_frame_prob=self.per_frame_prob, block_frames=self.temporal_patch,
                             context_prob=self.context_prob, context_noise=self.context_noise,
                             motion_weight=self.motion_weight)

    def video_model(self, trunk: DiTConfig) -> VideoDiTConfig:
        return VideoDiTConfig(dit=trunk, num_frames=self.frames, temporal_patch=self.temporal_patch,
                              attention=self.attention, rope_layout=self.rope_layout,
                              temporal_rope_pairs=self.temporal_rope_pairs, pooled_text_dim=self.text_dim,
                              frame_embed=self.frame_embed, text_dim=self.text_dim if self.cross_attention else 0,
                              frame_text=self.frame_text)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["motions"] = list(self.motions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VideoTrainConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown VideoTrainConfig keys: {', '.join(unknown)}")
        d = dict(d)
        if "motions" in d:
            d["motions"] = tuple(d["motions"])
        return cls(**d)


class FrameLocalBias:
    """An attention core (``VideoDiT.attention_core``) adding ``-penalty`` to every logit between tokens of
    different latent frames of a full-attention block (SDPA with a float mask); other blocks unchanged."""

    def __init__(self, penalty: float):
        self.penalty = float(penalty)
        self._masks: dict[tuple, torch.Tensor] = {}

    def mask(self, grid: tuple[int, int, int], device, dtype) -> torch.Tensor:
        key = (grid, str(device), dtype)
        if key not in self._masks:
            f, h, w = grid
            frame = torch.arange(f, device=device).repeat_interleave(h * w)  # (T,) frame of each token
            self._masks[key] = ((frame[:, None] != frame[None, :]).to(dtype) * -self.penalty)  # (T, T)
        return self._masks[key]

    def __call__(self, q, k, v, *, layer: int, grid: tuple[int, int, int], axes: str) -> torch.Tensor:
        mask = self.mask(grid, q.device, q.dtype) if axes == "all" and grid[0] > 1 and self.penalty > 0 else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, T, hd)


def frame_local_penalty(cfg: VideoTrainConfig, step: int) -> float:
    """The cross-frame logit penalty of training step ``step`` (0-based): linear from
    ``frame_local_bias`` to 0 over ``frame_local_steps``."""
    if cfg.frame_local_steps <= 0 or step >= cfg.frame_local_steps:
        return 0.0
    return cfg.frame_local_bias * (1.0 - step / cfg.frame_local_steps)


def encode_clips(codec, clips: torch.Tensor) -> torch.Tensor:
    """Frames (N, F, 3, H, W) -> latents (N, F, C, h, w), each frame by the image autoencoder."""
    n, f = clips.shape[:2]
    z = codec.encode(clips.flatten(0, 1)).float()  # (N*F, C, h, w)
    return z.unflatten(0, (n, f))  # (N, F, C, h, w)
