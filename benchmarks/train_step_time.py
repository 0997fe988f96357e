"""Seconds per optimizer step of a training preset on this machine (data, encoding, forward, backward).

    python benchmarks/train_step_time.py --preset shapes-t2v-pt2-motion-9k --steps 30 --threads 2
    python benchmarks/train_step_time.py --temporal-patch 1 --repa 3   # variants of the default preset

Runs the preset's own Trainer for ``--steps`` steps in a temporary folder (logging every step) and
prints the mean time of the steps after ``--warmup``, from the run's ``elapsed_seconds``, and the steps
per hour it gives; ``--budget-hours H`` prints the steps that fit in H hours instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch

from ditkit.train.presets import get_train_preset
from ditkit.train.repa import RepaConfig
from ditkit.train.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-t2v-pt2-motion-9k")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--temporal-patch", type=int, help="video presets: frames per token")
    p.add_argument("--repa", type=int, metavar="DEPTH", help="add REPA at this block (the shapes encoder)")
    p.add_argument("--budget-hours", type=float, metavar="H",
                   help="print the steps that fit in H hours (default: steps per hour)")
    a = p.parse_args(argv)
    if not 0 <= a.warmup < a.steps:
        print("train_step_time: need 0 <= --warmup < --steps", file=sys.stderr)
        return 2
    if a.budget_hours is not None and not a.budget_hours > 0:
        print("train_step_time: --budget-hours must be > 0", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        cfg = get_train_preset(a.preset)
        if a.temporal_patch:
            if cfg.video is None:
                raise ValueError("--temporal-patch needs a video preset")
            cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, temporal_patch=a.temporal_patch))
        if a.repa:
            cfg = dataclasses.replace(cfg, repa=RepaConfig(depth=a.repa))
    except ValueError as e:
        print(f"train_step_time: {e}", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(cfg, steps=a.steps, log_every=1, ckpt_every=10 * a.steps, snapshot_every=10 * a.steps,
                              **({"batch_size": a.batch_size} if a.batch_size else {}))
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, tmp, progress=False, log=lambda *x: None).run()
        rows = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_seconds"] for r in rows if "elapsed_seconds" in r}
    first = max(a.warmup, min(elapsed))
    per_step = (elapsed[a.steps] - elapsed[first]) / (a.steps - first)
    extra = "".join(f", {k} {v}" for k, v in (("temporal patch", a.temporal_patch), ("REPA at block", a.repa)) if v)
    if a.budget_hours is None:
        fit = f"{int(3600 / per_step):,} steps per hour"
    else:
        fit = f"{a.budget_hours:g} hours = {int(a.budget_hours * 3600 / per_step):,} steps"
    print(f"{a.preset}{extra}: batch {cfg.batch_size}, {torch.get_num_threads()} threads: {per_step:.2f} s/step "
          f"(steps {first}-{a.steps}); {fit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
