"""Which noise levels does a compressed model lose its class accuracy at? (`ditkit.eval.time_swap`)

    python benchmarks/swap_by_noise.py --model out/shapes-d4 [--reference assets/shapes-dit] \
        [--num-samples 400] [--ranges 0.7:1.01,0.35:0.7,0:0.35] [--threads 2]

Samples the same seeds (the models' default sampler, steps and guidance) with the compressed model
alone, the reference alone, and the reference swapped in on each range of process time s (s = 1 is
noise), and prints the bundled classifier's accuracy of each, so the ranges where the swap recovers
accuracy are where the compressed model's error matters. Measured on the pruned model of
``ditkit prune --keep 4 --update full --keep-update --hidden-kd 1 --hidden-align next-input --ema 0.999
--lr 5e-4 --lr-schedule constant --finetune-minutes 20``, 400 samples, 2 threads:
compressed 92.75 %, reference 97.75 %, reference on [0.7, 1.01) 94.5 %, on [0.35, 0.7) 92.75 %,
on [0, 0.35) 98.5 %.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ditkit.assets import default_classifier_dir
from ditkit.eval.metrics import class_accuracy
from ditkit.eval.time_swap import TimeRangeSwap
from ditkit.io.checkpoint import save_json
from ditkit.pipelines import load_pipeline
from ditkit.shapes.classifier import load_classifier


def parse_ranges(text: str) -> list[tuple[float, float]]:
    try:
        ranges = [tuple(float(v) for v in part.split(":")) for part in text.split(",") if part]
    except ValueError:
        ranges = []
    if not ranges or any(len(r) != 2 or not r[0] < r[1] for r in ranges):
        raise ValueError(f"--ranges must be LO:HI pairs with LO < HI, comma-separated, got {text!r}")
    return ranges


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the compressed model folder")
    ap.add_argument("--reference", default="assets/shapes-dit", help="the full model folder")
    ap.add_argument("--num-samples", type=int, default=400)
    ap.add_argument("--ranges", default="0.7:1.01,0.35:0.7,0:0.35")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="write the accuracies here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.num_samples <= 0:
            raise ValueError("--num-samples must be positive")
        ranges = parse_ranges(args.ranges)
        pipe, ref = load_pipeline(args.model), load_pipeline(args.reference)
        if pipe.text_encoder is not None or not pipe.config.num_classes:
            raise ValueError("the scan takes class-conditional image models")
        compressed = pipe.model
        runs = {"compressed": compressed, "reference": ref.model}
        for lo, hi in ranges:
            runs[f"reference on [{lo}, {hi})"] = TimeRangeSwap(compressed, ref.model, pipe.process, lo, hi)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    clf = load_classifier(default_classifier_dir())
    labels = torch.arange(args.num_samples) % pipe.config.num_classes
    result = {}
    for name, model in runs.items():
        t0 = time.perf_counter()
        pipe.model = model
        images = pipe.generate(labels=labels.tolist(), seed=args.seed)
        result[name] = class_accuracy(clf, images, labels)
        print(f"{name:>28}: accuracy {result[name] * 100:5.1f} %  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        save_json(args.json, {"num_samples": args.num_samples, "ranges": ranges, "accuracy": result})
    return result


if __name__ == "__main__":
    main()
