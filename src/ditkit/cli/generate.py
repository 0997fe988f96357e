"""``ditkit generate``: sample a PNG grid from an image model, or clips from a video model (``--video``).

The two modes are two parsers (`ditkit.cli.parser.Parser.add_video_mode`): each takes only its own options.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import cli_types as T
from ..cli_types import UserError
from ..cli_types import device as _device
from ..cli_types import load_image_model as _load
from ..cli_types import threads as _threads
from .parser import mode_flags
from .sampling import (
    check_redraws,
    common_args,
    first_frame_model,
    image_args,
    image_expert,
    note_prompts,
    prompts,
    video_args,
    video_folder,
)


def cmd_generate(args) -> None:
    from ..io.media import save_grid

    _threads(args)
    if args.prompt and not args.model:  # prompts go to the bundled text-to-image model
        from ..assets import default_text_model_dir

        args.model = str(default_text_model_dir())
    from ..assets import default_model_dir

    pipe = _load(args.model, _device(args))
    if args.vae:  # a user's VAE folder decodes instead of the model folder's own codec
        pipe.use_vae(args.vae)
    claim_outputs(args, [args.model or default_model_dir(), args.vae])  # before any sampling
    if pipe.text_encoder is not None or args.prompt:
        if pipe.text_encoder is None:
            raise UserError("this model is class-conditional: choose --classes, not --prompt")
        groups = prompts(args)
        if not groups:
            raise UserError('this model is text-conditioned: give --prompt "a small red triangle on a green background"')
        note_prompts(groups, pipe.text_encoder)
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
    print(f"options: {write_options(path, pipe, model=args.model, vae=args.vae, **cond)}")


def cmd_generate_video(args) -> None:
    import numpy as np
    import torch

    from ..io.media import save_video
    from ..pipelines import load_video_pipeline
    from ..shapes.moving import first_frame_fits, image_caption

    _threads(args)
    folder = video_folder(args.model)
    claim_outputs(args, [folder, args.image, getattr(args, "image_expert", None), getattr(args, "first_frame_model", None)])
    pipe = load_video_pipeline(folder, device=_device(args))
    texts = prompts(args)
    if not texts:
        raise UserError('--video needs --prompt "a small red circle moving left on a blue background"')
    if args.image and args.first_frame_model:
        raise UserError("--first-frame-model draws the first frame: give it or --image, not both")
    check_redraws(args)
    note_prompts(texts, pipe.text_encoder, size_word=pipe.caption_style != "motion-first" or bool(
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
    texts = [p for p in texts for _ in range(args.n_per_class)]
    t0 = time.time()
    clips = pipe.generate(texts, frames=args.frames, image=image, steps=args.steps, cfg_scale=args.cfg_scale,
                          shift=args.shift, seed=args.seed, batch_size=args.batch_size, long_mode=args.long_mode,
                          ultravico_alpha=args.ultravico_alpha, i2v_guidance=args.i2v_guidance,
                          context_noise=args.context_noise, history_guidance=args.history_guidance,
                          overlap=args.overlap, image_expert=image_expert(args, pipe.device),
                          image_expert_scale=args.image_expert_scale, ar_step=args.ar_step,
                          first_frame_model=first_frame_model(args, pipe.device),
                          first_frame_redraws=args.first_frame_redraws, first_frame_check=first_frame_fits,
                          caption_for_image=image_caption, progress=not args.no_progress)
    path = save_video(clips, args.out, fps=args.fps, upscale=args.upscale)
    print(f"wrote {len(clips)} clips of {clips.shape[1]} frames to {path} in {time.time() - t0:.1f}s")
    record = write_options(path, pipe, model=str(folder), prompts=texts, image=args.image,
                           image_expert=args.image_expert, first_frame_model=args.first_frame_model)
    print(f"options: {record}")


def claim_outputs(args, inputs: list) -> None:
    """Refuse, before any sampling, an --out that is an input, or (without --overwrite) an existing file that
    ditkit generate did not write (it writes the options record ``<out>.json`` beside each file)."""
    from ..cli_types import new_output
    from ..io.outputs import json_with, with_options_record

    new_output(args.out, args.overwrite, inputs=inputs, ditkit_wrote=with_options_record, folder=False)
    new_output(f"{args.out}.json", args.overwrite, inputs=inputs, ditkit_wrote=json_with("options"), folder=False)


def write_options(out: str | Path, pipe, **inputs) -> Path:
    """``<out>.json`` beside an output file (e.g. ``samples.png.json``): the model and inputs of the run (those
    not None) and the options the pipeline resolved, every default filled in (``pipe.last_options``)."""
    from ..io.checkpoint import save_json

    path = Path(f"{out}.json")
    save_json(path, {**{k: v for k, v in inputs.items() if v is not None}, "options": pipe.last_options.as_dict()})
    return path


def _prompt_args(p: argparse.ArgumentParser, n_help: str) -> None:
    p.add_argument("--prompt", action="append", type=T.text, help="a prompt (repeat the option, or separate prompts with |); "
                                                      f"--n-per-class {n_help} each")
    p.add_argument("--n-per-class", type=T.positive(T.MAX_PER_CLASS), default=8, help=f"{n_help} per class or prompt")


def _image_parser(g: argparse.ArgumentParser) -> None:
    common_args(g, "model folder (default: the bundled shapes model; with --prompt the bundled text-to-image model)")
    image_args(g)
    g.add_argument("--classes", type=T.text, default="all", help="comma-separated class names or indices, or 'all'")
    _prompt_args(g, "samples")
    g.add_argument("--out", type=T.text, default="samples.png", help="output PNG grid (an earlier output of ditkit generate is "
                                                        "replaced; any other existing file needs --overwrite)")
    g.add_argument("--overwrite", action="store_true", help="replace --out whatever is there")
    g.add_argument("--upscale", type=T.positive(T.MAX_UPSCALE), default=2, help="nearest-neighbour upscaling of the grid")
    g.add_argument("--vae", type=T.text, help="decode with this autoencoder folder (diffusers AutoencoderKL or ditkit) "
                                 "instead of the model folder's own")
    g.add_argument("--video", action="store_true", help="sample clips from a video model instead (default: the bundled "
                                                        "assets/shapes-t2v); 'ditkit generate --video --help' lists "
                                                        "the video options")
    g.conflicts("--prompt", "--classes", why="a model is either text- or class-conditioned")
    g.set_defaults(func=cmd_generate)


def _video_parser(v: argparse.ArgumentParser) -> None:
    common_args(v, "video model folder (default: the bundled assets/shapes-t2v)")
    video_args(v)
    v.add_argument("--shift", type=T.shift, help="flow timestep shift at sampling (default: the model's)")
    _prompt_args(v, "clips")
    v.add_argument("--out", type=T.text, default="samples.gif",
                   help="output clips: .gif, .mp4, or .png (a frame grid); an earlier output of ditkit generate is "
                        "replaced, any other existing file needs --overwrite")
    v.add_argument("--overwrite", action="store_true", help="replace --out whatever is there")
    v.add_argument("--upscale", type=T.positive(T.MAX_UPSCALE), default=2, help="nearest-neighbour upscaling of the frames")
    v.add_argument("--image", type=T.text, help="image-to-video from this first frame (PNG/JPEG)")
    v.add_argument("--i2v-guidance", choices=["joint", "text"], default="joint",
                   help="--image: STIV's joint image-text guidance, or guidance on the text only")
    v.add_argument("--frames", type=T.positive(T.MAX_FRAMES), help="clip length (default: the model's window; longer "
                                                        "clips are rolled out with diffusion forcing)")
    v.add_argument("--long-mode", choices=["rollout", "chunked", "extrapolate"], default="rollout",
                   help="clips longer than the model's window: diffusion-forcing rollout over overlapping "
                        "windows, independent windows (baseline), or one pass with UltraViCo attention decay")
    v.add_argument("--ultravico-alpha", type=T.float_in(0.0, 1.0, lo_open=True), default=0.9,
                   help="--long-mode extrapolate: UltraViCo's factor on distant attention logits (1 = none)")
    v.add_argument("--fps", type=T.float_in(0.1, 100.0), default=8.0, help="frames per second of the GIF/MP4")
    v.conflicts("--image", "--first-frame-model", why="--first-frame-model draws the first frame: give it or "
                                                        "--image, not both")
    v.requires("--i2v-guidance", "--image", "--image (it is the guidance of image-to-video)")
    v.requires("--ultravico-alpha", lambda a: a.long_mode == "extrapolate", "--long-mode extrapolate")
    for option in ("--overlap", "--context-noise", "--history-guidance"):  # what a rollout's windows share
        v.requires(option, lambda a: a.long_mode == "rollout", "--long-mode rollout (the default)")
    v.set_defaults(func=cmd_generate_video)


def register(sub) -> None:
    """Add ``generate`` (image mode, and its ``--video`` mode) to ditkit's subcommands."""
    g = sub.add_parser("generate", help="sample a PNG grid from a model, or clips from a video model (--video)",
                       description="Sample a PNG grid from an image model (class- or text-conditioned). With --video: "
                                   "sample clips from a video model ('ditkit generate --video --help').")
    _image_parser(g)
    v = g.add_video_mode(lambda argv: mode_flags(argv).video, video_hint="is a video option: add --video",
                         image_hint="is not supported with --video",
                         description="Sample clips from a text-to-video model: text-to-video, image-to-video "
                                     "(--image), factorized (--first-frame-model), long clips (--frames).")
    _video_parser(v)

