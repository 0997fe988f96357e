"""Does a video model read the caption's direction word? A loss probe on held-out clips.

Real held-out clips that move left / right / up / down (MovingShapesDataset, seed 4000) are
noised to a fixed level s with one noise draw; the velocity loss is computed with the true
caption and with the same caption naming each other direction. Printed per s: how often the true
word gives the lowest loss (chance 25 %), and the mean loss with the true word against the wrong
ones. A model that uses the word has a clear advantage at high s, where the noisy clip hides the
motion. Runs on a model folder, or on a run folder's latest raw (non-EMA) weights.
``--context K`` gives the first K frames clean (image-to-video, a rollout's context) and scores the
other frames only: where the shape starts is then known, and only the word says where it goes.

    python benchmarks/video_direction_probe.py --model runs/shapes-t2v-motion --clips 32 [--context 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ditkit.diffusion.forcing import block_times
from ditkit.eval.video import HELD_OUT_SEED
from ditkit.models.text_video import null_labels
from ditkit.shapes.moving import DIRECTIONS, MovingShapesDataset
from ditkit.train.video import encode_clips


def load(path: Path, tmp: Path):
    """A video pipeline from a model folder, or from a run folder's latest raw weights."""
    from ditkit.video_pipeline import load_video_pipeline

    from ditkit.train.export import export_run

    if (path / "checkpoints").is_dir():
        summary = export_run(path, tmp / "model", weights="raw")
        print(f"raw weights of {path.name} at step {summary['steps']}")
        path = tmp / "model"
    return load_video_pipeline(path)


@torch.no_grad()
def probe(pipe, clips: int, levels: list[float], seed: int = 0, context: int = 0) -> list[dict]:
    frames = pipe.config.num_frames
    if not 0 <= context < frames:
        raise ValueError(f"--context must lie in [0, {frames - 1}], got {context}")
    h = pipe.frame_shape[1]
    data = MovingShapesDataset(clips, seed=HELD_OUT_SEED, frames=frames, image_size=h, motions=DIRECTIONS,
                               labels=list(range(10)))
    specs = [data.clip(i) for i in range(clips)]
    x = torch.stack([data[i][0] for i in range(clips)])  # (N, F, 3, H, W)
    z = encode_clips(pipe.codec, x) if pipe.codec is not None else x  # (N, F, C, h, w)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    truth = torch.tensor([DIRECTIONS.index(s.motion) for s in specs])
    style = pipe.caption_style
    conds = [pipe.encode_prompts([sp.caption(style).replace(f"moving {sp.motion}", f"moving {d}") for sp in specs])[0]
             for d in DIRECTIONS]  # the captions with each direction word, encoded once
    labels = null_labels(pipe.model, clips, z.device)
    rows = []
    for s in levels:
        sf = torch.full((clips, frames), s)
        sf[:, :context] = 0.0  # clean context frames, (N, F)
        sv = sf.view(clips, frames, 1, 1, 1)
        xs = (1 - sv) * z + sv * noise
        t = pipe.process.network_time(block_times(sf, pipe.config.temporal_patch))  # a block at its noisy frames' time
        losses = []
        for cond in conds:
            out = pipe.model(xs, t, labels, **cond)[:, context:, : z.shape[2]]  # the generated frames
            losses.append((out - (noise - z)[:, context:]).pow(2).flatten(1).mean(1))  # (N,)
        table = torch.stack(losses, 1)  # (N, 4)
        true = table[torch.arange(clips), truth]
        wrong = (table.sum(1) - true) / 3
        rows.append({"s": s, "true_word_lowest": (table.argmin(1) == truth).float().mean().item(),
                     "loss_true": true.mean().item(), "loss_wrong": wrong.mean().item()})
    return rows


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
