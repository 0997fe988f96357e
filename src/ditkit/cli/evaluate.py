"""``ditkit eval``: class accuracy and Fréchet distance of an image model's samples, or the video metrics of a
video model folder."""

from __future__ import annotations

import time

from .. import cli_types as T
from ..cli_types import UserError
from ..cli_types import device as _device
from ..cli_types import load_image_model as _load
from ..cli_types import threads as _threads
from .parser import mode_flags
from .sampling import check_redraws, common_args, first_frame_model, image_args, image_expert, is_video_model, video_args
from .sampling import video_folder as _video_folder


def cmd_eval_video(args) -> None:
    from ..assets import default_classifier_dir
    from ..eval.video import evaluate_video
    from ..io.checkpoint import save_json
    from ..pipelines import load_video_pipeline
    from ..shapes.classifier import load_classifier

    _threads(args)
    if args.long_clips < 0:
        raise UserError(f"--long-clips must be >= 0, got {args.long_clips}")
    long_motions = None
    if args.long_motions:
        from ..shapes.moving import MOTIONS

        long_motions = tuple(m.strip() for m in args.long_motions.split(",") if m.strip())
        unknown = [m for m in long_motions if m not in MOTIONS]
        if unknown or not long_motions:
            raise UserError(f"--long-motions: unknown motion(s) {unknown}; choose from {', '.join(MOTIONS)}")
    check_redraws(args)
    _claim_outputs(args, _video_folder(args.model), "text_to_video")
    pipe = load_video_pipeline(_video_folder(args.model), device=_device(args))
    clf = load_classifier(args.classifier or default_classifier_dir())
    t0 = time.time()
    result = evaluate_video(pipe, clf, num_clips=args.num_samples, steps=args.steps, cfg_scale=args.cfg_scale,
                            seed=args.seed, batch_size=args.batch_size, long_clips=args.long_clips,
                            i2v=not args.no_i2v, context_noise=args.context_noise, long_motions=long_motions,
                            history_guidance=args.history_guidance, overlap=args.overlap,
                            image_expert=image_expert(args, pipe.device), image_expert_scale=args.image_expert_scale,
                            ar_step=args.ar_step, first_frame_model=first_frame_model(args, pipe.device),
                            first_frame_redraws=args.first_frame_redraws,
                            progress=False if args.no_progress else None)
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

    from ..assets import default_classifier_dir
    from ..eval.metrics import evaluate_samples
    from ..io.checkpoint import save_json
    from ..shapes.classifier import load_classifier
    from ..shapes.data import CLASSES, ShapesDataset, to_tensor

    _threads(args)
    from ..assets import default_model_dir

    _claim_outputs(args, args.model or default_model_dir(), "accuracy", "fd")
    pipe = _load(args.model, _device(args))
    clf = load_classifier(args.classifier or default_classifier_dir())
    n_cls = pipe.config.num_classes
    labels = torch.arange(args.num_samples) % max(1, n_cls)
    cond = {"labels": labels.tolist()}
    if pipe.text_encoder is not None:  # captions of held-out shapes (another seed than training's), classes balanced
        n_cls, held_out = len(CLASSES), ShapesDataset(args.num_samples, seed=args.reference_seed + 1,
                                                      labels=list(range(len(CLASSES))))
        labels = torch.arange(args.num_samples) % n_cls
        cond = {"prompts": [held_out.caption(i) for i in range(args.num_samples)]}
    t0 = time.time()
    images = pipe.generate(**cond, sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                           seed=args.seed, batch_size=args.batch_size, shift=args.shift,
                           guidance_interval=args.guidance_interval, progress=False if args.no_progress else None)
    seconds = time.time() - t0
    ref_images, _ = ShapesDataset(args.reference_samples, seed=args.reference_seed).materialize()
    result = evaluate_samples(clf, images, labels, reference_images=to_tensor(ref_images), class_names=CLASSES)
    used = pipe.last_options  # the resolved options, the folder's defaults filled in
    result.update({"sampler": used.sampler, "steps": used.steps, "cfg_scale": used.cfg_scale, "options": used.as_dict(),
                   "seed": args.seed, "sampling_seconds": round(seconds, 1),
                   "reference": f"{args.reference_samples} held-out shapes (seed {args.reference_seed})"})
    if "prompts" in cond:  # do the drawn colours match the caption's? (ditkit.shapes.colors)
        from ..shapes.colors import color_accuracy

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
        from ..io.media import save_grid

        save_grid(images[per_class_order(labels, n_cls, 8)], args.grid, nrow=8, upscale=2)


def _claim_outputs(args, model, *keys: str) -> None:
    """Refuse, before any sampling, an output that is an input or that ditkit did not write (without --overwrite):
    --json (a report of eval holds ``keys``) and --grid (replaced only with --overwrite)."""
    from ..cli_types import new_output
    from ..io.outputs import json_with

    inputs = [model, args.classifier]
    if args.json:
        new_output(args.json, args.overwrite, inputs=inputs, ditkit_wrote=json_with(*keys), flag="--json", folder=False)
    if getattr(args, "grid", None):
        new_output(args.grid, args.overwrite, inputs=inputs, ask=True, flag="--grid", folder=False)


def per_class_order(labels, num_classes: int, k: int):
    """Indices of the first ``k`` samples of each class, class by class (one grid row per class)."""
    import torch

    return torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in range(num_classes)])


def _shared_args(e) -> None:
    e.add_argument("--classifier", type=T.text, help="classifier folder (default: the bundled one)")
    e.add_argument("--json", type=T.text, help="write the metrics to this JSON file (an existing file needs --overwrite unless "
                                  "it is a report of ditkit eval)")
    e.add_argument("--overwrite", action="store_true", help="replace --json (or --grid) whatever is there")


def register(sub) -> None:
    """Add ``eval`` (image mode, and the video mode a video model folder or --video selects) to ditkit's subcommands."""
    e = sub.add_parser("eval", help="class accuracy and Fréchet distance of a model's samples (text models: from "
                                    "held-out captions, plus the caption colour check); video models: video metrics",
                       description="Measure a model folder's samples against held-out shapes. A video model folder "
                                   "(or --video) selects the video metrics ('ditkit eval --video --help').")
    common_args(e, "model folder (default: the bundled shapes model); a video model folder selects the video mode")
    image_args(e)
    e.add_argument("--num-samples", type=T.samples, default=500, help="samples, classes balanced")
    _shared_args(e)
    e.add_argument("--reference-samples", type=T.samples, default=2000, help="held-out images for FD")
    e.add_argument("--reference-seed", type=T.seed, default=3000, help="seed of the held-out images (their captions: "
                                                                     "this seed + 1)")
    e.add_argument("--grid", type=T.text, help="also write a PNG grid of 8 samples per class")
    e.add_argument("--video", action="store_true", help="evaluate a video model (default: the bundled "
                                                        "assets/shapes-t2v); 'ditkit eval --video --help' lists "
                                                        "the video options")
    e.set_defaults(func=cmd_eval)

    def wants_video(argv: list[str]) -> bool:
        flags = mode_flags(argv, "--model")
        return flags.video or is_video_model(flags.model)

    v = e.add_video_mode(wants_video, video_hint="is a video option: they apply to video models",
                         image_hint="is an image-model option: not used on video models",
                         description="Video metrics of a video model folder: per-frame shape accuracy and motion "
                                     "direction of text-to-video clips, image-to-video first-frame PSNR, and "
                                     "optionally long clips.")
    common_args(v, "video model folder (default: the bundled assets/shapes-t2v)")
    video_args(v)
    v.add_argument("--num-samples", type=T.samples, default=500, help="clips")
    _shared_args(v)
    v.add_argument("--long-clips", type=T.nonneg(T.MAX_SAMPLES), default=0,
                   help="also this many 4x-length clips (rollout vs chunk by chunk)")
    v.add_argument("--no-i2v", action="store_true", help="skip the image-to-video measurement")
    v.add_argument("--long-motions", type=T.text, help="the long clips only of these motions, e.g. bounce,rotate,color "
                                                        "(shapes that stay in view however long the clip)")
    v.requires("--long-motions", lambda a: a.long_clips > 0, "--long-clips N > 0 (it picks the motions of the long clips)")
    v.set_defaults(func=cmd_eval_video)
