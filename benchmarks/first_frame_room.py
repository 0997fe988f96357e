"""How often a text-to-image model's first frames leave the shape no room for the caption's motion.

Factorized text-to-video (`VideoPipeline.generate(first_frame_model=...)`) lets a text-to-image model draw each
clip's first frame from the caption without its motion phrase. The moving-shapes clips start a straight motion
far enough from the wall it heads to (`shapes.moving.first_frame_fits`); the image model never saw the
motion words. This prints, for the held-out clips that `ditkit eval` uses, the share of first frames that fail
the rule: the real clips' and the image model's, and how many remain after 1..R redraws
(`first_frame_redraws`, seed + r in round r), all in one run.

    python benchmarks/first_frame_room.py --first-frame-model assets/shapes-t2i --clips 64 --redraws 3
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first-frame-model", default="assets/shapes-t2i", help="text-to-image model folder")
    p.add_argument("--clips", type=int, default=64, help="held-out clips (the first of `ditkit eval`'s set)")
    p.add_argument("--frames", type=int, default=8, help="clip length (only sets which clips are drawn)")
    p.add_argument("--redraws", type=int, default=3, help="rounds of redrawing the frames that fail")
    p.add_argument("--steps", type=int, help="the image model's steps (default: its own)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (ditkit eval's default 0)")
    p.add_argument("--threads", type=int, help="torch threads")
    args = p.parse_args(argv)
    if args.clips <= 0 or args.redraws < 0:
        print("first_frame_room: --clips must be positive and --redraws >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from ditkit.eval.video import held_out_clips
    from ditkit.pipelines import load_pipeline
    from ditkit.shapes.moving import DIRECTIONS, first_frame_fits, image_caption

    try:
        pipe = load_pipeline(args.first_frame_model)
    except (OSError, ValueError, KeyError) as e:
        print(f"first_frame_room: cannot load {args.first_frame_model}: {e}", file=sys.stderr)
        return 2
    if pipe.text_encoder is None:
        print(f"first_frame_room: {args.first_frame_model} is not a text-to-image model", file=sys.stderr)
        return 2
    specs = [held_out_clips(args.clips, args.frames, 32).clip(i) for i in range(args.clips)]
    prompts = [s.caption() for s in specs]  # the motion phrase is all the rule reads
    captions = [image_caption(s.first.caption()) for s in specs]  # what the image model sees, as in `ditkit eval`
    straight = sum(s.motion in DIRECTIONS for s in specs)
    # every clip's frame in batches of 16, as `ditkit eval` draws them, so the frames are the ones it continues
    frames = pipe.generate(prompts=captions, seed=args.seed, steps=args.steps, batch_size=16).float().clamp(-1, 1)
    data = held_out_clips(args.clips, args.frames, frames.shape[-1])
    real = sum(not first_frame_fits(data[i][0][0], prompts[i]) for i in range(args.clips))
    print(f"{straight} of {args.clips} held-out clips move in a straight line")
    print(f"real first frames without room: {real} of {straight}")
    for r in range(args.redraws + 1):
        bad = [k for k in range(args.clips) if not first_frame_fits(frames[k], prompts[k])]
        label = "drawn" if r == 0 else f"after {r} redraw{'s' if r > 1 else ''}"
        print(f"{args.first_frame_model} first frames without room, {label}: {len(bad)} of {straight} "
              f"({len(bad) / max(straight, 1):.1%})")
        if not bad or r == args.redraws:
            break
        frames[bad] = pipe.generate(prompts=[captions[k] for k in bad], seed=args.seed + r + 1, steps=args.steps,
                                    batch_size=16).float().clamp(-1, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
