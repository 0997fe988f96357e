"""The text-to-image pipelines a video pipeline draws on: a first-frame model and an image expert.

* First frames (factorized text-to-video, Emu Video): `first_frames` draws each clip's first frame from its
  image caption (`image_captions`), and `redraw_first_frames` draws again the ones a check refuses.
* `expert_guidance`: a text-to-image model's guidance over the frames (`ditkit.diffusion.image_expert`).

Used by `ditkit.pipelines.video.VideoPipeline.generate`; the text-to-image pipeline is given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.image_expert import image_expert_guidance
from .options import VideoOptions


def image_captions(image_prompts, n: int, caption_for_image: Callable[[str], str] | None = None) -> list[str]:
    """One image caption per clip for a text-to-image model, ``caption_for_image(p)`` of each prompt (the prompt
    itself without one); ValueError unless there are ``n`` prompts, all strings."""
    if isinstance(image_prompts, str) or len(image_prompts) != n:
        raise ValueError(f"give one image prompt per prompt ({n})")
    if not all(isinstance(p, str) for p in image_prompts):
        raise ValueError("give the image prompts as a list of strings")
    return [p if caption_for_image is None else caption_for_image(p) for p in image_prompts]


def first_frames(pipe, frame_shape: tuple[int, ...], captions: list[str], seed: int, batch_size: int,
                 bar=None) -> torch.Tensor:
    """Each clip's first frame (N, 3, H, W) drawn by a text-to-image pipeline from the clip's image caption;
    each of its sampler steps moves ``bar`` by one. ValueError unless its images are
    ``frame_shape`` (C, H, W), the video model's frames."""
    if getattr(pipe, "text_encoder", None) is None:
        raise ValueError("the first-frame model must be a text-to-image model folder")
    tick = None if bar is None else (lambda *_: bar.update(1))
    frames = pipe.generate(prompts=captions, seed=seed, batch_size=batch_size, progress=False, callback=tick)
    if tuple(frames.shape[1:]) != tuple(frame_shape):
        raise ValueError(f"the first-frame model draws {'x'.join(map(str, frames.shape[1:]))} images, this "
                         f"video model's frames are {'x'.join(map(str, frame_shape))}")
    return frames.float().clamp(-1, 1)


def redraw_first_frames(pipe, frame_shape: tuple[int, ...], image: torch.Tensor, captions: list[str],
                        prompts: list[str], seed: int, batch_size: int, rounds: int, check, bar=None) -> torch.Tensor:
    """``image`` (N, 3, H, W) with each frame that fails ``check(frame, prompt)`` drawn again (seed + r in
    round r, only the failing clips' captions), up to ``rounds`` times; each redraw adds its steps to ``bar``."""
    image = image.clone()
    for r in range(1, rounds + 1):
        bad = [i for i in range(len(image)) if not check(image[i], prompts[i])]
        if not bad:
            break
        if bar is not None and bar.total is not None:
            bar.total += -(-len(bad) // batch_size) * pipe.defaults.steps
            bar.refresh()
        image[bad] = first_frames(pipe, frame_shape, [captions[i] for i in bad], seed + r, batch_size, bar)
    return image


def expert_guidance(video, pipe, opts: VideoOptions, captions: list[str], text: dict):
    """Check a text-to-image pipeline against the video pipeline ``video``, put its encoded ``captions`` (one per
    clip) into ``text`` (as ``image_text`` / ``image_text_mask``, N rows) and return ``fn -> guided fn``."""
    if getattr(pipe, "text_encoder", None) is None:
        raise ValueError("the image expert must be a text-to-image model folder")
    icfg = pipe.config
    if (icfg.in_channels, tuple(icfg.hw)) != (video.config.dit.in_channels, tuple(video.config.dit.hw)):
        raise ValueError(f"the image expert takes {icfg.in_channels}x{icfg.hw[0]}x{icfg.hw[1]} latents, this "
                         f"video model {video.config.dit.in_channels}x{video.config.dit.hw[0]}x{video.config.dit.hw[1]}")
    mine, theirs = (None if c is None else c.state_dict() for c in (video.codec, pipe.codec))
    same = (mine is None and theirs is None) or (
        mine is not None and theirs is not None and mine.keys() == theirs.keys()
        and all(mine[k].shape == theirs[k].shape and torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine))
    if not same:
        raise ValueError("the image expert was trained on another autoencoder: its latents are not this model's")
    (tokens, mask), (null_tokens, null_mask) = pipe.encode_prompts(captions)
    dev = video.device
    text["image_text"], text["image_text_mask"] = tokens.to(dev), mask.to(dev)
    pipe.model.eval()
    model = pipe.model.to(dev)
    return lambda fn: image_expert_guidance(fn, model, opts.image_expert_scale, null_text=null_tokens.to(dev),
                                            null_mask=null_mask.to(dev), video_process=video.process,
                                            image_process=pipe.process, interval=opts.image_expert_interval)
