"""At which noise level does a class-conditional flow model lose the class? (SDEdit-style probe)

Held-out shapes are encoded (latent runs), noised to process time s0 (s = 1 is pure noise), and
denoised back to s = 0 by guided Euler steps with their true label; the bundled classifier then
judges the result. Accuracy that stays high from small s0 but falls from mid s0 locates the noise
range the model has not learned yet (Meng et al. 2022, "SDEdit", for the noising-then-denoising
probe). s0 = 1 is ordinary sampling.

    python benchmarks/class_retention.py --run RUN --step 2000 --levels 0.2 0.5 0.7 0.85 1.0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ditkit.assets import default_classifier_dir
from ditkit.diffusion.flow import FlowMatching
from ditkit.io.checkpoint import load_tensors
from ditkit.models.dit import DiT
from ditkit.shapes.classifier import load_classifier
from ditkit.shapes.data import ShapesDataset, to_tensor
from ditkit.train.trainer import TrainConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training run directory (flow matching, class-conditional)")
    p.add_argument("--step", type=int, required=True, help="EMA snapshot step (snapshots/ema_STEP.safetensors)")
    p.add_argument("--levels", type=float, nargs="+", default=[0.2, 0.5, 0.7, 0.85, 1.0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--steps", type=int, default=30, help="Euler steps over the full range [0, 1]")
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=777, help="seed of the held-out images")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    snap = run / "snapshots" / f"ema_{args.step:07d}.safetensors"
    if not (run / "train_config.json").is_file() or not snap.is_file():
        print(f"class_retention: no train_config.json or no {snap.name} in {run}", file=sys.stderr)
        return 2
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    model = DiT(cfg.model).eval()
    model.load_state_dict(load_tensors(snap))
    process = FlowMatching(cfg.flow)
    clf = load_classifier(default_classifier_dir())
    codec = None
    if cfg.autoencoder:
        from ditkit.models.autoencoder import load_autoencoder, resolve_codec_path

        codec = load_autoencoder(resolve_codec_path(cfg.autoencoder))
    images, labels = ShapesDataset(args.samples, seed=args.seed).materialize()
    with torch.no_grad():
        x0 = to_tensor(images)
        x0 = codec.encode(x0) if codec is not None else x0  # (N, C, h, w) where the DiT works
    null = torch.full_like(labels, cfg.model.num_classes)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def velocity(x: torch.Tensor, s: float) -> torch.Tensor:
        t = process.network_time(torch.full((2 * x.shape[0],), s))
        out = model(torch.cat([x, x]), t, torch.cat([labels, null]))  # (2N, C, h, w)
        cond, uncond = out[:, : x.shape[1]].chunk(2)
        return uncond + args.cfg_scale * (cond - uncond)

    rows = []
    for s0 in args.levels:
        x = process.interpolate(x0, noise, torch.full((x0.shape[0],), s0))
        n = max(1, round(args.steps * s0))
        grid = torch.linspace(s0, 0.0, n + 1).tolist()
        for a, b in zip(grid[:-1], grid[1:]):
            x = x + (b - a) * velocity(x, a)
        with torch.no_grad():
            out = codec.decode(x).clamp(-1, 1) if codec is not None else x.clamp(-1, 1)
            acc = (clf(out).argmax(1) == labels).float().mean().item()
        rows.append({"s0": s0, "accuracy": acc})
        print(f"from s0 = {s0:4.2f} ({n:3d} steps): class accuracy {acc * 100:5.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
