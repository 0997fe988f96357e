"""Does a video model read the caption's direction word? A loss probe on held-out clips.

    rows = probe(load_video_pipeline("assets/shapes-t2v"), clips=32, levels=[0.3, 0.8, 0.95])

Real held-out clips that move left / right / up / down (`MovingShapesDataset` at the held-out seed) are
noised to a fixed level s with one noise draw; the velocity loss is computed with the true caption and
with the same caption naming each other direction. Per s: how often the true word gives the lowest loss
(chance 25 %), and the mean loss with the true word against the wrong ones. A model that uses the word has
a clear advantage at high s, where the noisy clip hides the motion. ``context=K`` gives the first K frames
clean (image-to-video, a rollout's context) and scores the other frames only: where the shape starts is
then known, and only the word says where it goes. The command line is ``benchmarks/video_direction_probe.py``.
"""

from __future__ import annotations

import torch

from ..diffusion.forcing import block_times
from ..models.text_video import null_labels
from ..shapes.moving import DIRECTIONS, MovingShapesDataset
from ..train.video import encode_clips
from .video import HELD_OUT_SEED


@torch.no_grad()
def probe(pipe, clips: int, levels: list[float], seed: int = 0, context: int = 0) -> list[dict]:
    """One row per noise level s: ``{"s", "true_word_lowest", "loss_true", "loss_wrong"}`` (see module doc)."""
    frames = pipe.config.num_frames
    if not 0 <= context < frames:
        raise ValueError(f"--context must lie in [0, {frames - 1}], got {context}")
    h = pipe.frame_shape[1]
    data = MovingShapesDataset(clips, seed=HELD_OUT_SEED, frames=frames, image_size=h, motions=DIRECTIONS,
                               labels=list(range(10)))
    specs = [data.clip(i) for i in range(clips)]
    x = torch.stack([data[i][0] for i in range(clips)])  # (N, F, 3, H, W)
    z = encode_clips(pipe.codec, x) if pipe.codec is not None else x  # (N, F, C, h, w)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    truth = torch.tensor([DIRECTIONS.index(s.motion) for s in specs])
    style = pipe.caption_style
    conds = [pipe.encode_prompts([sp.caption(style).replace(f"moving {sp.motion}", f"moving {d}") for sp in specs])[0]
             for d in DIRECTIONS]  # the captions with each direction word, encoded once
    labels = null_labels(pipe.model, clips, z.device)
    rows = []
    for s in levels:
        sf = torch.full((clips, frames), s)
        sf[:, :context] = 0.0  # clean context frames, (N, F)
        sv = sf.view(clips, frames, 1, 1, 1)
        xs = (1 - sv) * z + sv * noise
        t = pipe.process.network_time(block_times(sf, pipe.config.temporal_patch))  # a block at its noisy frames' time
        losses = []
        for cond in conds:
            out = pipe.model(xs, t, labels, **cond)[:, context:, : z.shape[2]]  # the generated frames
            losses.append((out - (noise - z)[:, context:]).pow(2).flatten(1).mean(1))  # (N,)
        table = torch.stack(losses, 1)  # (N, 4)
        true = table[torch.arange(clips), truth]
        wrong = (table.sum(1) - true) / 3
        rows.append({"s": s, "true_word_lowest": (table.argmin(1) == truth).float().mean().item(),
                     "loss_true": true.mean().item(), "loss_wrong": wrong.mean().item()})
    return rows
