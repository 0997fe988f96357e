"""Sampling options and helpers shared by ``ditkit generate`` and ``ditkit eval``, in their image and video modes."""

from __future__ import annotations

import argparse
import sys

from .. import cli_types as T
from ..cli_types import UserError
from .parser import Parser

IMAGE_SAMPLERS = ["euler", "heun", "dpm++2m", "ddim", "ddpm"]


def common_args(p: argparse.ArgumentParser, model_help: str) -> None:
    """The options of both modes."""
    p.add_argument("--model", type=T.text, help=model_help)
    p.add_argument("--steps", type=T.sampler_steps, help="sampler steps (default: the model's)")
    p.add_argument("--cfg-scale", type=T.guidance, help="classifier-free guidance scale (1 = none; default: the model's)")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the noise")
    p.add_argument("--batch-size", type=T.batch_size, default=100, help="samples per model batch")
    p.add_argument("--threads", type=T.threads_arg, help="torch CPU threads")
    p.add_argument("--device", type=T.text, default="cpu", help="cpu or cuda[:N] (samples come back to the CPU; seeds give the "
                                                   "same noise on every device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def image_args(p: Parser) -> None:
    """The sampler options of image models."""
    p.add_argument("--sampler", choices=IMAGE_SAMPLERS, help="default: the model's")
    p.add_argument("--guidance-interval", type=T.interval, help="LO,HI network time where guidance applies")
    p.add_argument("--shift", type=T.shift, help="flow timestep shift at sampling (default: the model's)")
    p.check(lambda a, given: "--guidance-interval needs guidance: a --cfg-scale other than 1"
            if "--guidance-interval" in given and a.cfg_scale == 1.0 else None)


def video_args(p: Parser) -> None:
    """The sampling options of video models."""
    p.add_argument("--video", action="store_true", help=argparse.SUPPRESS)  # the flag that chose this mode
    p.add_argument("--sampler", choices=["euler"], help="video models sample with Euler steps over per-frame times")
    p.add_argument("--context-noise", type=T.unit_float, default=0.0,
                   help="rollouts: re-noise each window's context frames to this process time (SkyReels-V2's "
                        "addnoise_condition; 0.3 keeps the bundled model's shapes over 4x its window)")
    p.add_argument("--history-guidance", type=T.guidance, default=0.0,
                   help="rollouts: guide each later window on its context frames too (DFoT history "
                        "guidance, this scale; 0 = text only; three model passes per step)")
    p.add_argument("--overlap", type=T.positive(T.MAX_FRAMES), help="rollouts: context frames per window (default: half "
                                                           "the window)")
    p.add_argument("--image-expert", type=T.text, help="a text-to-image model folder on the same autoencoder that "
                                          "guides every frame (VideoElevator-style; e.g. assets/shapes-t2i)")
    p.add_argument("--image-expert-scale", type=T.guidance, default=1.0,
                   help="--image-expert: the weight of its guidance term (0 = off)")
    p.add_argument("--ar-step", type=T.nonneg(T.MAX_SAMPLER_STEPS), default=0,
                   help="asynchronous schedule, each frame block this many steps behind the one "
                        "before (SkyReels-V2 diffusion forcing; 0 = all frames together)")
    p.add_argument("--first-frame-model", type=T.text, metavar="DIR",
                   help="factorized text-to-video (Emu Video): this text-to-image model folder draws "
                        "each clip's first frame, the video model continues it (e.g. assets/shapes-t2i)")
    p.add_argument("--first-frame-redraws", type=T.nonneg(1_000), default=0, metavar="N",
                   help="--first-frame-model: draw again, up to N times, each first frame whose shape lacks room "
                        "for the caption's motion (\"moving left\": the moving-shapes clips' start rule)")
    p.requires("--image-expert-scale", "--image-expert", "--image-expert, whose guidance it weighs")
    p.requires("--first-frame-redraws", "--first-frame-model", "--first-frame-model, whose frames it redraws: give that too")


def prompts(args) -> list[str]:
    """The --prompt values, each split at ``|`` (``--prompt "a|b" --prompt c``)."""
    return [p.strip() for arg in args.prompt or [] for p in arg.split("|") if p.strip()]


def note_prompts(prompts: list[str], text_encoder, size_word: bool = True) -> None:
    """A note on stderr for each prompt unlike the captions a word-encoder model was trained on
    (``size_word``: its captions, or the image model's that draws from them, always name the size)."""
    vocab = getattr(text_encoder, "vocab", None)
    if vocab is None:  # a pretrained tokenizer (interop encoders): any wording goes
        return
    from ..shapes.prompts import prompt_notes

    for p in dict.fromkeys(prompts):
        for line in prompt_notes(p, tuple(vocab), size_word):
            print(f'note: "{p}": {line}', file=sys.stderr)


def check_redraws(args) -> None:
    if getattr(args, "first_frame_redraws", 0) and not getattr(args, "first_frame_model", None):
        raise UserError("--first-frame-redraws redraws the frames of --first-frame-model: give that too")


def first_frame_model(args, device):
    """The --first-frame-model pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "first_frame_model", None):
        return None
    from ..pipelines import load_pipeline

    return load_pipeline(args.first_frame_model, device=device)


def image_expert(args, device):
    """The --image-expert pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "image_expert", None):
        return None
    from ..pipelines import load_pipeline

    return load_pipeline(args.image_expert, device=device)


def video_folder(model: str | None) -> str:
    """``model`` (default: the bundled video model), checked to be a video model folder."""
    from ..assets import default_video_model_dir
    from ..pipelines import is_video_folder

    folder = model or str(default_video_model_dir())
    if not is_video_folder(folder):
        raise UserError(f"{folder} is not a ditkit video model folder (--video needs one, e.g. assets/shapes-t2v)")
    return folder


def is_video_model(model: str | None) -> bool:
    """Whether ``model`` names a video model folder (which puts ``ditkit eval`` in its video mode)."""
    if not model:
        return False
    from ..pipelines import is_video_folder

    return is_video_folder(model)
