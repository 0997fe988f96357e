"""Learning curve of a training run: class accuracy and FD of the EMA snapshots against training time.

    python benchmarks/learning_curve.py --run runs/shapes-repa --samples 200 --cfg-scale 3 \
        --json out/learning_curve.json --plot out/learning_curve.png

Each snapshot (``snapshots/ema_*.safetensors``, written every `snapshot_every` steps with the
training wall time in its metadata) is sampled with the same seeds and labels, judged by the
bundled classifier, and compared with held-out data by Fréchet distance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from ditkit.assets import default_classifier_dir
from ditkit.diffusion.flow import FlowMatching
from ditkit.diffusion.sample import sample
from ditkit.eval.metrics import classifier_features, evaluate_samples, frechet_distance
from ditkit.io.checkpoint import load_tensors, save_json
from ditkit.models.dit import DiT
from ditkit.shapes.classifier import load_classifier
from ditkit.shapes.data import ShapesDataset, to_tensor
from ditkit.train.trainer import TrainConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--every", type=int, default=1, help="use every k-th snapshot")
    p.add_argument("--min-step", type=int, default=0, help="skip snapshots before this training step")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", help="write the curve here; an existing file with the same settings is extended: "
                                  "its points are kept and only snapshots it lacks are sampled")
    p.add_argument("--plot")
    args = p.parse_args(argv)

    run = Path(args.run)
    cfg_file = run / "train_config.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    snaps = sorted((run / "snapshots").glob("ema_*.safetensors"))
    snaps = [s for s in snaps if int(s.stem.split("_")[1]) >= args.min_step][:: args.every]
    if not cfg_file.is_file() or not snaps:
        print(f"learning_curve: {run} has no train_config.json or no snapshots", file=sys.stderr)
        return 2
    cfg = TrainConfig.from_dict(json.loads(cfg_file.read_text()))
    process = FlowMatching(cfg.flow)
    clf = load_classifier(default_classifier_dir())
    ref, _ = ShapesDataset(2000, seed=3000).materialize()
    ref_feats = classifier_features(clf, to_tensor(ref))
    labels = torch.arange(args.samples) % cfg.model.num_classes
    codec = None
    if cfg.autoencoder:  # a latent model: decode its samples with the run's autoencoder
        from ditkit.models.autoencoder import load_autoencoder, resolve_codec_path

        codec = load_autoencoder(resolve_codec_path(cfg.autoencoder))
    settings = {"run": str(run), "samples": args.samples, "steps": args.steps, "sampler": args.sampler,
                "cfg_scale": args.cfg_scale}
    rows = []
    if args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            rows = old["points"]
            done = {r["step"] for r in rows}
            snaps = [s for s in snaps if int(s.stem.split("_")[1]) not in done]
            print(f"{len(rows)} points kept from {args.json}", flush=True)
    for snap in snaps:
        with safe_open(str(snap), "pt") as f:
            meta = f.metadata() or {}
        model = DiT(cfg.model)
        model.load_state_dict(load_tensors(snap))
        images = sample(model, labels, process=process, sampler=args.sampler, steps=args.steps,
                        cfg_scale=args.cfg_scale, seed=0, batch_size=100)
        if codec is not None:
            with torch.no_grad():
                images = codec.decode(images).clamp(-1, 1)
        res = evaluate_samples(clf, images, labels, reference_images=None)
        fd = frechet_distance(classifier_features(clf, images), ref_feats)
        row = {"step": int(meta.get("step", 0)), "training_minutes": round(float(meta.get("elapsed_seconds", 0)) / 60, 1),
               "accuracy": res["accuracy"], "fd": fd}
        rows.append(row)
        print(f"step {row['step']:6d}  {row['training_minutes']:6.1f} min  accuracy {row['accuracy'] * 100:5.1f}%  FD {fd:8.2f}",
              flush=True)
    rows.sort(key=lambda r: r["step"])
    result = {**settings, "points": rows}
    if args.json:
        save_json(args.json, result)
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("learning_curve: matplotlib not installed (pip install ditkit[bench]); no plot", file=sys.stderr)
            return 0
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        ax.plot([r["training_minutes"] for r in rows], [100 * r["accuracy"] for r in rows], "o-")
        ax.set_xlabel("training time (minutes, 2 CPU cores)")
        ax.set_ylabel("class accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"{args.samples} samples, {args.sampler} {args.steps} steps, cfg {args.cfg_scale}")
        fig.tight_layout()
        fig.savefig(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
