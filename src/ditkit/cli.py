"""ditkit command line: generate, train, eval, info (and more as capabilities land).

Every user error (bad argument, unknown class, missing or corrupt checkpoint, shape mismatch)
ends in one line on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def cmd_train(args) -> None:
    import dataclasses

    from .train.presets import get_train_preset
    from .train.trainer import Trainer

    cfg = get_train_preset(args.preset)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("dataset", args.data)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    out = args.out or f"runs/{args.preset}"
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    result = Trainer(cfg, out, progress=not args.no_progress).run(max_seconds=max_seconds)
    state = "finished" if result["done"] else "paused (run the same command again to resume)"
    print(f"{state}: step {result['step']}/{cfg.steps}, {result['elapsed_seconds'] / 60:.1f} min of training, in {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ditkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a named recipe (resumes automatically)")
    t.add_argument("--preset", required=True, help="training recipe, e.g. shapes-small")
    t.add_argument("--out", help="run directory (default runs/<preset>)")
    t.add_argument("--steps", type=int, help="override the total number of steps")
    t.add_argument("--batch-size", type=int, help="override the global batch size")
    t.add_argument("--lr", type=float, help="override the learning rate")
    t.add_argument("--data", help="image folder to train on instead of the shapes dataset")
    t.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"ditkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
