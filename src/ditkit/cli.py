"""ditkit command line: generate, train, train-classifier, eval, info.

Every user error (bad argument, unknown class, missing or corrupt checkpoint, shape mismatch)
ends in one line on stderr and exit status 2 — never a traceback. Set DITKIT_DEBUG=1 to see
the traceback of an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .cli_types import nonneg_float as _nonneg_float
from .cli_types import nonneg_int as _nonneg_int
from .cli_types import positive_int as _positive_int
from .cli_types import unit_float as _unit_float


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def _interval(s: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in network time (0-1000), got {s!r}") from None
    return lo, hi


def _device(args) -> str:
    """--device, checked: "cpu", "cuda" or "cuda:N" where a GPU is there."""
    import torch

    name = getattr(args, "device", None) or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be cpu or cuda[:N], got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda[:N], got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this torch build sees no CUDA GPU")
    return name


def _load(model: str | None, device: str = "cpu"):
    from .assets import default_model_dir
    from .pipeline import load_pipeline

    return load_pipeline(model or default_model_dir(), device=device)


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


# ----------------------------------------------------------------------------- commands


def _prompts(args) -> list[str]:
    return [p.strip() for arg in args.prompt or [] for p in arg.split("|") if p.strip()]  # --prompt "a|b" --prompt c


def _note_prompts(prompts: list[str], text_encoder, size_word: bool = True) -> None:
    """A note on stderr for each prompt unlike the captions a word-encoder model was trained on
    (``size_word``: its captions, or the image model's that draws from them, always name the size)."""
    vocab = getattr(text_encoder, "vocab", None)
    if vocab is None:  # a pretrained tokenizer (interop encoders): any wording goes
        return
    from .data.shapes import prompt_notes

    for p in dict.fromkeys(prompts):
        for line in prompt_notes(p, tuple(vocab), size_word):
            print(f'note: "{p}": {line}', file=sys.stderr)


def _generate_video(args) -> None:
    import numpy as np
    import torch

    from .assets import default_video_model_dir
    from .io.media import save_video
    from .video_pipeline import is_video_folder, load_video_pipeline

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
    _check_redraws(args)
    _note_prompts(prompts, pipe.text_encoder, size_word=pipe.caption_style != "motion-first" or bool(
        args.first_frame_model or args.image_expert))
    image = None
    if args.image:
        from PIL import Image, UnidentifiedImageError

        from .data.shapes import to_tensor

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
                          overlap=args.overlap, image_expert=_image_expert(args, pipe.device),
                          image_expert_scale=args.image_expert_scale, ar_step=args.ar_step,
                          first_frame_model=_first_frame_model(args, pipe.device),
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
    from .io.media import save_grid

    _threads(args)
    if args.video:
        return _generate_video(args)
    for flag in ("image", "frames"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag} is a video option: add --video")
    if args.prompt and not args.model:  # prompts go to the bundled text-to-image model
        from .assets import default_text_model_dir

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


def cmd_train(args) -> None:
    import dataclasses

    from .train.presets import get_train_preset
    from .train.trainer import Trainer

    cfg = get_train_preset(args.preset)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("dataset", args.data), ("init_from", args.init_from)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    out = args.out or f"runs/{args.preset}"
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    result = Trainer(cfg, out, progress=not args.no_progress).run(max_seconds=max_seconds)
    state = "finished" if result["done"] else "paused (run the same command again to resume)"
    print(f"{state}: step {result['step']}/{cfg.steps}, {result['elapsed_seconds'] / 60:.1f} min of training, in {out}")


def cmd_export(args) -> None:
    from .pipeline import SamplingDefaults
    from .train.export import export_run

    defaults = SamplingDefaults(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale, shift=args.shift)
    summary = export_run(args.run, args.out, defaults=defaults, dtype=args.dtype, command=args.command_line)
    print(f"exported step {summary['steps']} ({summary['training_minutes']} min of training) to {args.out}")


def cmd_train_classifier(args) -> None:
    from .eval.classifier import train_classifier

    _threads(args)
    info = train_classifier(args.out, steps=args.steps, seed=args.seed)
    print(json.dumps(info.get("metrics", {}), indent=2))


def _eval_video(args) -> None:
    from .assets import default_classifier_dir
    from .eval.classifier import load_classifier
    from .eval.video import evaluate_video
    from .io.checkpoint import save_json
    from .video_pipeline import load_video_pipeline

    if args.sampler not in (None, "euler"):
        raise UserError("video models sample with Euler steps over per-frame times (--sampler euler)")
    if args.long_clips < 0:
        raise UserError(f"--long-clips must be >= 0, got {args.long_clips}")
    long_motions = None
    if args.long_motions:
        from .data.moving_shapes import MOTIONS

        long_motions = tuple(m.strip() for m in args.long_motions.split(",") if m.strip())
        unknown = [m for m in long_motions if m not in MOTIONS]
        if unknown or not long_motions:
            raise UserError(f"--long-motions: unknown motion(s) {unknown}; choose from {', '.join(MOTIONS)}")
    _check_redraws(args)
    pipe = load_video_pipeline(args.model).to(_device(args))
    clf = load_classifier(args.classifier or default_classifier_dir())
    t0 = time.time()
    result = evaluate_video(pipe, clf, num_clips=args.num_samples, steps=args.steps, cfg_scale=args.cfg_scale,
                            seed=args.seed, batch_size=args.batch_size, long_clips=args.long_clips,
                            i2v=not args.no_i2v, context_noise=args.context_noise, long_motions=long_motions,
                            history_guidance=args.history_guidance, overlap=args.overlap,
                            image_expert=_image_expert(args, pipe.device), image_expert_scale=args.image_expert_scale,
                            ar_step=args.ar_step, first_frame_model=_first_frame_model(args, pipe.device),
                            first_frame_redraws=args.first_frame_redraws)
    result["seconds"] = round(time.time() - t0, 1)
    if args.image_expert:
        result["image_expert"] = args.image_expert
    if args.first_frame_model:
        result["first_frame_model"] = args.first_frame_model
    if args.json:
        save_json(args.json, result)
    t2v = result["text_to_video"]
    direction = "n/a" if t2v["direction_accuracy"] is None else f"{t2v['direction_accuracy']:.1%}"
    line = (f"text-to-video: shape accuracy per frame {t2v['shape_accuracy_per_frame']:.1%}, motion direction "
            f"{direction} ({t2v['direction_clips']} clips)")
    if "image_to_video" in result:
        line += f"; image-to-video first frame {result['image_to_video']['first_frame_psnr']:.1f} dB"
    print(line)
    if "long_video" in result:
        lv = result["long_video"]
        for name in ("rollout", "chunked"):
            r = lv[name]
            print(f"{lv['frames']} frames, {name}: shape accuracy first window {r['shape_accuracy_first_window']:.1%}, "
                  f"whole clip {r['shape_accuracy_whole_clip']:.1%}; consecutive-frame PSNR mean "
                  f"{r['consecutive_psnr_mean']:.1f} dB, worst {r['consecutive_psnr_worst']:.1f} dB")


def cmd_eval(args) -> None:
    import torch

    from .assets import default_classifier_dir
    from .data.shapes import ShapesDataset, to_tensor
    from .eval.classifier import load_classifier
    from .eval.metrics import evaluate_samples
    from .io.checkpoint import save_json

    _threads(args)
    from .video_pipeline import is_video_folder

    if args.model and is_video_folder(args.model):
        return _eval_video(args)
    _no_video_flags(args, "they apply to video models")
    pipe = _load(args.model, _device(args))
    clf = load_classifier(args.classifier or default_classifier_dir())
    n_cls = pipe.config.num_classes
    labels = torch.arange(args.num_samples) % max(1, n_cls)
    cond = {"labels": labels.tolist()}
    if pipe.text_encoder is not None:  # captions of held-out shapes (another seed than training's), classes balanced
        from .data.shapes import CLASSES

        n_cls, held_out = len(CLASSES), ShapesDataset(args.num_samples, seed=args.reference_seed + 1,
                                                      labels=list(range(len(CLASSES))))
        labels = torch.arange(args.num_samples) % n_cls
        cond = {"prompts": [held_out.caption(i) for i in range(args.num_samples)]}
    t0 = time.time()
    images = pipe.generate(**cond, sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                           seed=args.seed, batch_size=args.batch_size, shift=args.shift,
                           guidance_interval=args.guidance_interval, progress=not args.no_progress)
    seconds = time.time() - t0
    ref_images, _ = ShapesDataset(args.reference_samples, seed=args.reference_seed).materialize()
    result = evaluate_samples(clf, images, labels, reference_images=to_tensor(ref_images))
    result.update({"sampler": args.sampler or pipe.defaults.sampler, "steps": args.steps or pipe.defaults.steps,
                   "cfg_scale": pipe.defaults.cfg_scale if args.cfg_scale is None else args.cfg_scale,
                   "seed": args.seed, "sampling_seconds": round(seconds, 1),
                   "reference": f"{args.reference_samples} held-out shapes (seed {args.reference_seed})"})
    if "prompts" in cond:  # do the drawn colours match the caption's? (ditkit.eval.colors)
        from .eval.colors import color_accuracy

        result["colors"] = color_accuracy(images, cond["prompts"])
        result["prompts"] = f"captions of {args.num_samples} held-out shapes (seed {args.reference_seed + 1})"
        print(f"named colours drawn: {result['colors']['both'] * 100:.1f}% (shape {result['colors']['foreground'] * 100:.1f}%, "
              f"background {result['colors']['background'] * 100:.1f}%)")
    print(f"class accuracy {result['accuracy'] * 100:.1f}% over {args.num_samples} samples; "
          f"FD {result['fd']:.2f} vs held-out data; sampling took {seconds:.0f}s")
    if args.json:
        save_json(args.json, result)
        print(f"wrote {args.json}")
    if args.grid:
        from .io.media import save_grid

        save_grid(images[per_class_order(labels, n_cls, 8)], args.grid, nrow=8, upscale=2)


def per_class_order(labels, num_classes: int, k: int):
    """Indices of the first ``k`` samples of each class, class by class (one grid row per class)."""
    import torch

    return torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in range(num_classes)])


def cmd_info(args) -> None:
    from .config import get_preset
    from .models.dit import macs_per_forward
    from .models.text_dit import build_model

    if args.preset:
        import torch

        cfg = get_preset(args.preset)
        with torch.device("meta"):
            params = build_model(cfg).num_parameters()
        source = f"preset {args.preset}"
    else:
        pipe = _load(args.model)
        cfg, params, source = pipe.config, pipe.model.num_parameters(), str(args.model or "bundled model")
    macs = macs_per_forward(cfg)
    h, w = cfg.hw
    print(f"model:            {source}")
    print(f"parameters:       {params:,}")
    print(f"input:            {cfg.in_channels} x {h} x {w}, patch {cfg.patch_size}, {cfg.num_tokens} tokens")
    print(f"width/depth/heads {cfg.hidden_size} / {cfg.depth} / {cfg.num_heads}")
    print(f"forward:          {macs / 1e9:.3f} GMACs = {2 * macs / 1e9:.3f} GFLOPs per image")
    print(f"sampling step:    {2 * macs / 1e9:.3f} GFLOPs per image ({4 * macs / 1e9:.3f} with classifier-free guidance)")


# ----------------------------------------------------------------------------- parser


def _sampling_args(p: argparse.ArgumentParser) -> None:
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


def _check_redraws(args) -> None:
    if getattr(args, "first_frame_redraws", 0) and not getattr(args, "first_frame_model", None):
        raise UserError("--first-frame-redraws redraws the frames of --first-frame-model: give that too")


def _first_frame_model(args, device):
    """The --first-frame-model pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "first_frame_model", None):
        return None
    from .pipeline import load_pipeline

    return load_pipeline(args.first_frame_model, device=device)


def _image_expert(args, device):
    """The --image-expert pipeline (None without the flag); `VideoPipeline.generate` checks that it fits."""
    if not getattr(args, "image_expert", None):
        return None
    from .pipeline import load_pipeline

    return load_pipeline(args.image_expert, device=device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ditkit", description="Train, sample, accelerate, compress and serve DiTs.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="sample a PNG grid from a model")
    _sampling_args(g)
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

    t = sub.add_parser("train", help="train a model from a named recipe (resumes automatically)")
    t.add_argument("--preset", required=True, help="training recipe, e.g. shapes-small")
    t.add_argument("--out", help="run directory (default runs/<preset>)")
    t.add_argument("--steps", type=_positive_int, help="override the total number of steps")
    t.add_argument("--batch-size", type=_positive_int, help="override the global batch size")
    t.add_argument("--lr", type=float, help="override the learning rate")
    t.add_argument("--data", help="image folder to train on instead of the shapes dataset")
    t.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    t.add_argument("--init-from", help="text and video models: start from this class-conditional model folder's shared "
                   "weights; video models also from a video model folder of the same config")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    x = sub.add_parser("export", help="write a run's EMA weights as a model folder")
    x.add_argument("--run", required=True, help="training run directory")
    x.add_argument("--out", required=True, help="model folder to write")
    x.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    x.add_argument("--sampler", default="euler", choices=["euler", "heun", "dpm++2m"], help="default sampler")
    x.add_argument("--steps", type=_positive_int, default=50, help="default sampler steps")
    x.add_argument("--cfg-scale", type=float, default=1.0, help="default guidance scale")
    x.add_argument("--shift", type=float, default=1.0, help="default flow timestep shift")
    x.add_argument("--command-line", help="the training command, recorded in config.json")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("train-classifier", help="train the shapes classifier used for evaluation")
    c.add_argument("--out", default="assets/classifier")
    c.add_argument("--steps", type=_positive_int, default=1500)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=_positive_int, default=1)
    c.set_defaults(func=cmd_train_classifier)

    e = sub.add_parser("eval", help="class accuracy and Fréchet distance of a model's samples (text models: "
                                          "from held-out captions, plus the caption colour check)")
    _sampling_args(e)
    e.add_argument("--num-samples", type=_positive_int, default=500, help="samples, classes balanced")
    e.add_argument("--classifier", help="classifier folder (default: the bundled one)")
    e.add_argument("--reference-samples", type=_positive_int, default=2000, help="held-out images for FD")
    e.add_argument("--reference-seed", type=int, default=3000)
    e.add_argument("--json", help="write the metrics to this JSON file")
    e.add_argument("--grid", help="also write a PNG grid of 8 samples per class")
    e.add_argument("--long-clips", type=int, default=0, help="video models: also this many 4x-length clips "
                                                               "(rollout vs chunk by chunk)")
    e.add_argument("--no-i2v", action="store_true", help="video models: skip the image-to-video measurement")
    e.add_argument("--long-motions", help="video models: the long clips only of these motions, e.g. bounce,rotate,color "
                                          "(shapes that stay in view however long the clip)")
    e.set_defaults(func=cmd_eval)

    from .interop.cli import register as register_interop

    register_interop(sub)
    from .accel.cli import add_bench_accel
    from .accel.cli import register as register_accel
    from .compress.cli import add_bench_compress

    register_accel(sub)
    bench = sub.add_parser("bench", help="benchmarks on identical seeds: accel (caching, forecasting, RAS), "
                                         "compress (quantized and pruned folders)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    add_bench_accel(bench_sub)
    add_bench_compress(bench_sub)
    from .data.cli import register as register_encode

    register_encode(sub)
    from .compress.cli import register as register_compress

    register_compress(sub)

    i = sub.add_parser("info", help="parameters and FLOPs of a model or preset")
    i.add_argument("--model", help="model folder (default: the bundled shapes model)")
    i.add_argument("--preset", help="a named preset instead of a model folder, e.g. DiT-XL/2")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"ditkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("DITKIT_DEBUG"):
            raise
        print(f"ditkit {args.command}: internal error: {type(e).__name__}: {e} (set DITKIT_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
