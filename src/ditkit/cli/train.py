"""``ditkit train``, ``ditkit export`` and ``ditkit train-classifier``."""

from __future__ import annotations

import json

from ..cli_types import positive_int as _positive_int
from ..cli_types import threads as _threads


def cmd_train(args) -> None:
    import dataclasses

    from ..train.presets import get_train_preset
    from ..train.trainer import Trainer

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
    from ..pipeline import SamplingDefaults
    from ..train.export import export_run

    defaults = SamplingDefaults(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale, shift=args.shift)
    summary = export_run(args.run, args.out, defaults=defaults, dtype=args.dtype, command=args.command_line)
    print(f"exported step {summary['steps']} ({summary['training_minutes']} min of training) to {args.out}")


def cmd_train_classifier(args) -> None:
    from ..train.classifier import train_classifier

    _threads(args)
    info = train_classifier(args.out, steps=args.steps, seed=args.seed)
    print(json.dumps(info.get("metrics", {}), indent=2))


def register(sub) -> None:
    """Add ``train``, ``export`` and ``train-classifier`` to ditkit's subcommands."""
    t = sub.add_parser("train", help="train a model from a named recipe (resumes automatically)")
    t.add_argument("--preset", required=True, help="training recipe, e.g. shapes-repa")
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
