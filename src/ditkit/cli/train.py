"""``ditkit train``, ``ditkit export`` and ``ditkit train-classifier``."""

from __future__ import annotations

import json

from .. import cli_types as T
from ..cli_types import UserError
from ..cli_types import threads as _threads


def describe_preset(cfg) -> str:
    """One line on a training recipe: task, model, data, steps."""
    m = cfg.model
    task = "text-to-video" if cfg.video is not None else "text-to-image" if getattr(m, "text_dim", None) else "class"
    space = f"latents of {cfg.autoencoder}" if cfg.autoencoder else "pixels"
    return (f"{task}, width {m.hidden_size} depth {m.depth}, {space}, {cfg.steps:,} steps of batch {cfg.batch_size}"
            + (f", from {cfg.init_from}" if cfg.init_from else ""))


def cmd_list_presets(args) -> None:
    from ..train.presets import get_train_preset, train_preset_names

    names = train_preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {describe_preset(get_train_preset(name))}")


def cmd_train(args) -> None:
    import dataclasses

    from ..train.presets import get_train_preset, train_preset_names
    from ..train.trainer import Trainer

    if args.list_presets:
        return cmd_list_presets(args)
    if not args.preset:
        raise UserError(f"--preset is required: one of {', '.join(train_preset_names())} (--list-presets describes them)")
    _threads(args)
    cfg = get_train_preset(args.preset)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("dataset", args.data), ("init_from", args.init_from)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    out = args.out or f"runs/{args.preset}"
    _check_run_dir(out, [args.data.removeprefix("latents:") if args.data and args.data != "shapes" else None,
                         args.init_from])
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    result = Trainer(cfg, out, progress=not args.no_progress).run(max_seconds=max_seconds)
    state = "finished" if result["done"] else "paused (run the same command again to resume)"
    print(f"{state}: step {result['step']}/{cfg.steps}, {result['elapsed_seconds'] / 60:.1f} min of training, in {out}")


def _check_run_dir(out, inputs) -> None:
    """A run folder is resumed, never replaced: refuse an input there, or a folder that is neither empty nor a run."""
    from pathlib import Path

    from ..cli_types import new_output

    new_output(out, overwrite=True, inputs=inputs, folder=True)
    path = Path(out)
    if path.is_dir() and any(path.iterdir()) and not (path / "train_config.json").is_file() \
            and not (path / "checkpoints").is_dir():
        raise UserError(f"--out {out} is a folder that is not a ditkit training run (no train_config.json): "
                        "give a new or empty --out")


def cmd_export(args) -> None:
    from ..cli_types import new_output
    from ..io.outputs import model_folder
    from ..pipelines import SamplingDefaults
    from ..train.export import export_run

    new_output(args.out, args.overwrite, inputs=[args.run], ditkit_wrote=model_folder, folder=True)

    defaults = SamplingDefaults(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale, shift=args.shift)
    summary = export_run(args.run, args.out, defaults=defaults, dtype=args.dtype, command=args.command_line)
    print(f"exported step {summary['steps']} ({summary['training_minutes']} min of training) to {args.out}")


def cmd_train_classifier(args) -> None:
    from ..cli_types import new_output
    from ..io.outputs import model_folder
    from ..train.classifier import train_classifier

    new_output(args.out, args.overwrite, ditkit_wrote=model_folder, folder=True)
    _threads(args)
    info = train_classifier(args.out, steps=args.steps, seed=args.seed, progress=False if args.no_progress else None)
    print(json.dumps(info.get("metrics", {}), indent=2))


def register(sub) -> None:
    """Add ``train``, ``export`` and ``train-classifier`` to ditkit's subcommands."""
    from ..train.presets import train_preset_names

    presets = train_preset_names()
    t = sub.add_parser("train", help="train a model from a named recipe (resumes automatically)",
                       description=f"Train a model from a named recipe: {', '.join(presets)}. Run the same command "
                                   "again to resume.")
    t.add_argument("--preset", type=T.text, metavar="NAME", help=f"training recipe: {', '.join(presets)}")
    t.add_argument("--list-presets", action="store_true", help="list the training recipes, one line each, and exit")
    t.add_argument("--out", type=T.text, help="run directory (default runs/<preset>): a new or empty folder, or a run to resume")
    t.add_argument("--steps", type=T.train_steps, help="override the total number of steps")
    t.add_argument("--batch-size", type=T.batch_size, help="override the global batch size")
    t.add_argument("--lr", type=T.learning_rate, help="override the learning rate")
    t.add_argument("--data", type=T.text, help="image folder to train on instead of the shapes dataset")
    t.add_argument("--max-minutes", type=T.minutes, help="stop (with a checkpoint) after this many minutes")
    t.add_argument("--init-from", type=T.text, help="text and video models: start from this class-conditional model "
                   "folder's shared weights; video models also from a video model folder of the same config")
    t.add_argument("--threads", type=T.threads_arg, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.conflicts("--list-presets", "--preset", "--out", "--steps", "--batch-size", "--lr", "--data", "--max-minutes",
                "--init-from", "--threads", "--no-progress", why="--list-presets only lists the recipes")
    t.set_defaults(func=cmd_train)

    x = sub.add_parser("export", help="write a run's EMA weights as a model folder")
    x.add_argument("--run", type=T.text, required=True, help="training run directory")
    x.add_argument("--out", type=T.text, required=True, help="model folder to write (a model folder of ditkit there is replaced "
                                                "atomically, anything else needs --overwrite; never inside --run)")
    x.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a ditkit model folder")
    x.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights dtype")
    x.add_argument("--sampler", default="euler", choices=["euler", "heun", "dpm++2m"], help="default sampler")
    x.add_argument("--steps", type=T.sampler_steps, default=50, help="default sampler steps")
    x.add_argument("--cfg-scale", type=T.guidance, default=1.0, help="default guidance scale")
    x.add_argument("--shift", type=T.shift, default=1.0, help="default flow timestep shift")
    x.add_argument("--command-line", help="the training command, recorded in config.json")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("train-classifier", help="train the shapes classifier used for evaluation")
    c.add_argument("--out", type=T.text, default="classifier", help="classifier folder to write (the bundled one is "
                                                       "assets/classifier; a classifier folder there is replaced, "
                                                       "anything else needs --overwrite)")
    c.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a ditkit model folder")
    c.add_argument("--steps", type=T.train_steps, default=1500, help="training steps")
    c.add_argument("--seed", type=T.seed, default=0, help="random seed")
    c.add_argument("--threads", type=T.threads_arg, default=1, help="torch CPU threads")
    c.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    c.set_defaults(func=cmd_train_classifier)
