"""A probe: does a pruned model's low-noise range need its own weights? (a timestep expert)

    python scripts/low_noise_expert.py --pruned out/shapes-d4 --out out/shapes-d4-low --minutes 5 --threads 2
    python benchmarks/swap_by_noise.py --model out/shapes-d4 --reference out/shapes-d4-low --ranges 0:0.35 \
        --num-samples 1000 --threads 2

Copies a pruned model folder (``ditkit prune``) and fine-tunes the copy by distillation from the full
model (the folder's ``prune.json`` source) on process times s < ``--top`` only, with the pruned run's
recipe (output KD, and hidden-state KD with its layer map when it used one). Sampling the pruned model
for s >= top and the copy below (``benchmarks/swap_by_noise.py`` with the copy as ``--reference``)
tells whether giving the low-noise steps, where the pruned model loses its accuracy
(`ditkit.eval.time_swap`), their own weights recovers it: the idea of timestep experts (Remix-DiT,
Fang et al. 2024; Decouple-then-Merge, Ma et al. 2025), each sampling step still running the pruned
depth. Stored weights double, so this is a probe of where capacity is missing, not a compression
method; the copy is written as an ordinary model folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from ditkit.compress.distill import DistillConfig, distill
from ditkit.compress.prune import diffusion_loss, make_data_fn
from ditkit.compress.prune_folder import LowNoiseMix
from ditkit.io.checkpoint import atomic_write
from ditkit.pipelines import load_pipeline, save_pipeline
from ditkit.pipelines.folder import source_autoencoder
from ditkit.train.datasets import training_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pruned", required=True, help="a model folder written by ditkit prune")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--top", type=float, default=0.35, help="fine-tune on process times s in [0, top)")
    ap.add_argument("--lr", type=float, help="default: the pruned run's")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        record = json.loads((Path(a.pruned) / "prune.json").read_text())
        job, finetune = record["job"], record.get("finetune") or {}
        pipe, full = load_pipeline(a.pruned), load_pipeline(record["source"])
        if not (0 < a.top <= 1 and a.minutes > 0):
            raise ValueError("--top must lie in (0, 1] and --minutes be positive")
    except (OSError, KeyError, ValueError) as e:
        print(f"low_noise_expert: {e}", file=sys.stderr)
        return 2
    student = copy.deepcopy(pipe.model).float()
    process = LowNoiseMix(pipe.process.config, share=1.0, top=a.top)
    f = 1 if pipe.codec is None else pipe.codec.downsample
    size = (pipe.config.hw[0] * f, pipe.config.hw[1] * f)  # the shapes images whose latents the model sees
    data_fn = make_data_fn(pipe.config, pipe.codec, data=training_images("shapes", a.seed, size),
                           batch_size=job["batch_size"], seed=a.seed)
    eval_fn = make_data_fn(pipe.config, pipe.codec, data=training_images("shapes", a.seed + 1, size),
                           batch_size=job["batch_size"], seed=a.seed + 1, label_drop=0.0)
    before = diffusion_loss(student, process, eval_fn, batches=4, seed=a.seed)
    cfg = DistillConfig(max_seconds=a.minutes * 60, lr=a.lr or job["finetune_lr"], schedule=job["lr_schedule"],
                        hidden_weight=job["hidden_weight"], ema_decay=job["ema_decay"], seed=a.seed)
    t0 = time.perf_counter()
    result = distill(student, full.model, process, data_fn, cfg, layer_map=finetune.get("layer_map"))
    after = diffusion_loss(student, process, eval_fn, batches=4, seed=a.seed)
    print(f"{result['steps']} steps in {time.perf_counter() - t0:.0f} s; diffusion loss on s < {a.top}: "
          f"{before:.4f} -> {after:.4f}")
    ae, copy_ae = source_autoencoder(Path(a.pruned), pipe.info)
    dtype = getattr(torch, str(pipe.info.get("weights_dtype", "float32")))
    save_pipeline(a.out, student, pipe.process, class_names=pipe.class_names, defaults=pipe.defaults, dtype=dtype,
                  extra={"low_noise_expert": {"of": str(a.pruned), "top": a.top}}, autoencoder=ae,
                  copy_autoencoder=copy_ae)
    summary = {"of": str(a.pruned), "top": a.top, "minutes": a.minutes, "steps": result["steps"],
               "loss_below_top": {"before": before, "after": after}, "threads": torch.get_num_threads()}
    with atomic_write(Path(a.out) / "expert.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
