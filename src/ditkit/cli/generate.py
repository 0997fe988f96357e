"""``ditkit generate``: sample a PNG grid from an image model, or clips from a video model (``--video``).

The sampling options (`sampling_args`) and the video helpers are shared with ``ditkit eval``.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..cli_types import UserError
from ..cli_types import device as _device
from ..cli_types import interval as _interval
from ..cli_types import load_image_model as _load
from ..cli_types import nonneg_float as _nonneg_float
from ..cli_types import nonneg_int as _nonneg_int
from ..cli_types import positive_int as _positive_int
from ..cli_types import threads as _threads
from ..cli_types import unit_float as _unit_float


def _prompts(args) -> list[str]:
    return [p.strip() for arg in args.prompt or [] for p in arg.split("|") if p.strip()]  # --prompt "a|b" --prompt c


def _note_prompts(prompts: list[str], text_encoder, size_word: bool = True) -> None:
    """A note on stderr for each prompt unlike the captions a word-encoder model was trained on
    (``size_word``: its captions, or the image model's that draws from them, always name the size)."""
    vocab = getattr(text_encoder, "vocab", None)
    if vocab is None:  # a pretrained tokenizer (interop encoders): any wording goes
        return
    from ..shapes.prompts import prompt_notes

    for p in dict.fromkeys(prompts):
        for line in prompt_notes(p, tuple(vocab), size_word):
            print(f'note: "{p}": {line}', file=sys.stderr)


def _generate_video(args) -> None:
    import numpy as np
    import torch

    from ..assets import default_video_model_dir
    from ..io.media import save_video
    from ..video_pipeline import is_video_folder, load_video_pipeline

    folder = args.model or default_video_model_dir()
    if not is_video_folder(folder):
        raise UserError(f"{folder} is not a ditkit video model folder (--video needs one, e.g. assets/shapes-t2v)")
    pipe = load_video_pipeline(folder).to(_device(args))
    prompts = _prompts(args)
    if not prompts:
        raise UserError('--video needs --prompt "a small red circle moving left on a blue background"')
    if args.sampler not in (None, "euler"):
        raise UserError("video models sample with Euler steps over per-frame times (--sampler euler)")
    for flag in ("vae", "guidance_interval"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} is not supported with --video")
    if args.image and args.first_frame_model:
        raise UserError("--first-frame-model draws the first frame: give it or --image, not both")
    check_redraws(args)
    _note_prompts(prompts, pipe.text_encoder, size_word=pipe.caption_style != "motion-first" or bool(
        args.first_frame_model or args.image_expert))
    image = None
    if args.image:
        from PIL import Image, UnidentifiedImageError

        from ..shapes.data import to_tensor

        _, h, w = pipe.frame_shape
        try:
            with Image.open(args.image) as im:
                pic = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"cannot read the first frame {args.image}: {e}") from None
        if pic.size != (w, h):
            print(f"note: resizing {args.image} from {pic.size[0]}x{pic.size[1]} to the model's {w}x{h}")
            pic = pic.resize((w, h), Image.Resampling.BICUBIC)
        image = to_tensor(torch.from_numpy(np.array(pic, dtype=np.uint8)))  # (3, H, W) in [-1, 1]
    prompts = [p for p in prompts for _ in range(args.n_per_class)]
    t0 = time.time()
    clips = pipe.generate(prompts, frames=args.frames, image=image, steps=args.steps, cfg_scale=args.cfg_scale,
                          shift=args.shift, seed=args.seed, batch_size=args.batch_size, long_mode=args.long_mode,
                          ultravico_alpha=args.ultravico_alpha, i2v_guidance=args.i2v_guidance,
                          context_noise=args.context_noise, history_guidance=args.history_guidance,
                          overlap=args.overlap, image_expert=image_expert(args, pipe.device),
                          image_expert_scale=args.image_expert_scale, ar_step=args.ar_step,
                          first_frame_model=first_frame_model(args, pipe.device),
                          first_frame_redraws=args.first_frame_redraws)
    out = args.out if args.out != "samples.png" else "samples.gif"
    path = save_video(clips, out, fps=args.fps, upscale=args.upscale)
    print(f"wrote {len(clips)} clips of {clips.shape[1]} frames to {path} in {time.time() - t0:.1f}s")


def _no_video_flags(args, hint: str) -> None:
    for flag in ("context_noise", "history_guidance", "overlap", "image_expert", "ar_step", "first_frame_model",
                 "first_frame_redraws"):
        if getattr(args, flag, None):
            raise UserError(f"--{flag.replace('_', '-')} is a video option: {hint}")


def cmd_generate(args) -> None:
    from ..io.media import save_grid

    _threads(args)
    if args.video:
        return _generate_video(args)
    for flag in ("image", "frames"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag} is a video option: add --video")
    if args.prompt and not args.model:  # prompts go to the bundled text-to-image model
        from ..assets import default_text_model_dir

        args.model = str(default_text_model_dir())
    _no_video_flags(args, "add --video")
    pipe = _load(args.model, _device(args))
    if args.vae:  # a user's VAE folder decodes instead of the model folder's own codec
        pipe.use_vae(args.vae)
    if pipe.text_encoder is not None or args.prompt:
        if pipe.text_encoder is None:
            raise UserError("this model is class-conditional: choose --classes, not --prompt")
        groups = _prompts(args)
        if not groups:
            raise UserError('this model is text-conditioned: give --prompt "a small red triangle on a green background"')
        _note_prompts(groups, pipe.text_encoder)
        cond = {"prompts": [p for p in groups for _ in range(args.n_per_class)]}
    else:
        if args.classes == "all":
            groups = list(range(pipe.config.num_classes))
        else:
            groups = [c.strip() for c in args.classes.split(",") if c.strip()]
            if not groups:
                raise UserError("--classes is empty")
        cond = {"labels": [pipe.class_index(c) for c in groups for _ in range(args.n_per_class)]}
    t0 = time.time()
    images = pipe.generate(**cond, sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed,
                           batch_size=args.batch_size, shift=args.shift, guidance_interval=args.guidance_interval,
                           progress=not args.no_progress)
    path = save_grid(images, args.out, nrow=args.n_per_class if len(groups) > 1 else None, upscale=args.upscale)
    print(f"wrote {len(images)} samples to {path} in {time.time() - t0:.1f}s")


def sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (default: the bundled shapes model; with --prompt the bundled "
                                   "text-to-image model, with --video the bundled video model)")
    p.add_argument("--sampler", choices=["euler", "heun", "dpm++2m", "ddim", "ddpm"], help="default: the model's")
    p.add_argument("--steps", type=_positive_int, help="sampler steps (default: the model's)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (1 = none; default: the model's)")
    p.add_argument("--guidance-interval", type=_interval, help="LO,HI network time where guidance applies")
    p.add_argument("--shift", type=float, help="flow timestep shift at sampling (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (samples come back to the CPU; seeds give the "
                                                   "same noise on every device)")
    p.add_argument("--context-noise", type=_unit_float, default=0.0,
                   help="video rollouts: re-noise each window's context frames to this process time (SkyReels-V2's "
                        "addnoise_condition; 0.3 keeps the bundled model's shapes over 4x its window)")
    p.add_argument("--history-guidance", type=_nonneg_float, default=0.0,
                   help="video rollouts: guide each later window on its context frames too (DFoT history "
                        "guidance, this scale; 0 = text only; three model passes per step)")
    p.add_argument("--overlap", type=_positive_int, help="video rollouts: context frames per window (default half "
                                                           "the window)")
    p.add_argument("--image-expert", help="video models: a text-to-image model folder on the same autoencoder that "
                                          "guides every frame (VideoElevator-style; e.g. assets/shapes-t2i)")
    p.add_argument("--image-expert-scale", type=_nonneg_float, default=1.0,
                   help="--image-expert: the weight of its guidance term (0 = off)")
    p.add_argument("--ar-step", type=_nonneg_int, default=0,
                   help="video models: asynchronous schedule, each frame block this many steps behind the one "
                        "before (SkyReels-V2 diffusion forcing; 0 = all frames together)")
    p.add_argument("--first-frame-model", metavar="DIR",
                   help="video models: factorized text-to-video (Emu Video): this text-to-image model folder draws "
                        "each clip's first frame, the video model continues it (e.g. assets/shapes-t2i)")
    p.add_argument("--first-frame-redraws", type=_nonneg_int, default=0, metavar="N",
                   help="--first-frame-model: draw again, up to N times, each first frame whose shape lacks room "
                        "for the caption's motion (\"moving left\": the moving-shapes clips' start rule)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_redraws(args) -> None:
    if getattr(args, "first_frame_redraws", 0) and not getattr(args, "first_frame_model", None):
        raise UserError("--first-frame-redraws redraws the frames of --first-frame-model: give that too")


def first_frame_model(args, device):
    """The --first-frame-model pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "first_frame_model", None):
        return None
    from ..pipeline import load_pipeline

    return load_pipeline(args.first_frame_model, device=device)


def image_expert(args, device):
    """The --image-expert pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "image_expert", None):
        return None
    from ..pipeline import load_pipeline

    return load_pipeline(args.image_expert, device=device)


def register(sub) -> None:
    """Add ``generate`` to ditkit's subcommands."""
    g = sub.add_parser("generate", help="sample a PNG grid from a model")
    sampling_args(g)
    g.add_argument("--classes", default="all", help="comma-separated class names or indices, or 'all'")
    g.add_argument("--prompt", action="append", help="text models: a prompt (repeat the option, or separate "
                                                      "prompts with |); --n-per-class samples each")
    g.add_argument("--n-per-class", type=_positive_int, default=8)
    g.add_argument("--out", default="samples.png", help="output PNG grid")
    g.add_argument("--upscale", type=_positive_int, default=2, help="nearest-neighbour upscaling of the grid")
    g.add_argument("--vae", help="decode with this autoencoder folder (diffusers AutoencoderKL or ditkit) "
                                 "instead of the model folder's own")
    g.add_argument("--video", action="store_true", help="sample clips from a video model (default: assets/shapes-t2v); "
                                                        "--out .gif, .mp4 or .png (a frame grid)")
    g.add_argument("--image", help="--video: image-to-video from this first frame (PNG/JPEG)")
    g.add_argument("--i2v-guidance", choices=["joint", "text"], default="joint",
                   help="--image: STIV's joint image-text guidance, or guidance on the text only")
    g.add_argument("--frames", type=_positive_int, help="--video: clip length (default: the model's window; longer "
                                                        "clips are rolled out with diffusion forcing)")
    g.add_argument("--long-mode", choices=["rollout", "chunked", "extrapolate"], default="rollout",
                   help="--video, clips longer than the model's window: diffusion-forcing rollout over overlapping "
                        "windows, independent windows (baseline), or one pass with UltraViCo attention decay")
    g.add_argument("--ultravico-alpha", type=float, default=0.9, help="--long-mode extrapolate: UltraViCo's factor "
                                                                      "on distant attention logits (1 = none)")
    g.add_argument("--fps", type=float, default=8.0, help="--video: frames per second of the GIF/MP4")
    g.set_defaults(func=cmd_generate)
