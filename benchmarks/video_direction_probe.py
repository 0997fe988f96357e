"""Does a video model read the caption's direction word? A loss probe on held-out clips.

Real held-out clips that move left / right / up / down are noised to a fixed level s and the velocity
loss is computed with the true caption and with the same caption naming each other direction
(`ditkit.eval.direction_probe.probe`). Printed per s: how often the true word gives the lowest loss
(chance 25 %), and the mean loss with the true word against the wrong ones. Runs on a model folder, or
on a run folder's latest raw (non-EMA) weights. ``--context K`` gives the first K frames clean
(image-to-video, a rollout's context) and scores the other frames only.

    python benchmarks/video_direction_probe.py --model assets/shapes-t2v --clips 32 [--context 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ditkit.eval.direction_probe import probe


def load(path: Path, tmp: Path):
    """A video pipeline from a model folder, or from a run folder's latest raw weights."""
    from ditkit.pipelines import load_video_pipeline
    from ditkit.train.export import export_run

    if (path / "checkpoints").is_dir():
        summary = export_run(path, tmp / "model", weights="raw")
        print(f"raw weights of {path.name} at step {summary['steps']}")
        path = tmp / "model"
    return load_video_pipeline(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="video model folder or training run folder")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--levels", default="0.3,0.6,0.8,0.95", help="noise levels s (1 = noise)")
    ap.add_argument("--context", type=int, default=0, help="clean context frames at the start (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    path = Path(args.model)
    if not path.is_dir():
        print(f"error: {path} is not a folder", file=sys.stderr)
        return 2
    try:
        levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        print(f"error: --levels must be comma-separated numbers, got {args.levels!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    try:
        pipe = load(path, tmp)
        for r in probe(pipe, args.clips, levels, context=args.context):
            gain = 1 - r["loss_true"] / r["loss_wrong"]
            print(f"s={r['s']:.2f}  true word lowest {r['true_word_lowest']:.0%} (chance 25 %)  loss true "
                  f"{r['loss_true']:.4f}  wrong {r['loss_wrong']:.4f}  advantage {gain:.1%}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
