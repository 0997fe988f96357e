"""Train the shapes judge (`ditkit.shapes.classifier.ShapesClassifier`) on fresh renders.

Training augmentations (`AugmentConfig`, applied on the fly, batched, seeded). Samples
from a small diffusion model are blurry, noisy and colour-shifted, so the judge is
trained to ignore exactly that — none of these changes what shape is drawn:

* geometry: random 90° rotations, and (p=0.7) a random affine — any rotation angle,
  scale 0.9–1.05, translation up to ±2 px — bilinear, with border padding;
* colour: random channel permutation (p=0.5), brightness offset ±0.2, contrast ×0.7–1.3,
  per-channel offsets ±0.1;
* blur: Gaussian blur (p=0.35) with σ ∈ [0.3, 1.2] px;
* low-pass resampling (p=0.15): area-downsample to 12–24 px and bilinear back up;
* posterisation (p=0.1): quantise to 8–32 levels (a crude stand-in for JPEG-like loss);
* low-frequency noise (p=0.3): 8x8 Gaussian noise, σ ≤ 0.15, bilinearly upsampled (blotches);
* white Gaussian noise (p=0.5): σ ∈ [0, 0.3];
* finally clamp to [-1, 1].

Data: freshly rendered `ShapesDataset(num_train, seed=1000)`; held-out evaluation uses
`seed=2000` and reports clean and "noisy" accuracy (`ditkit.shapes.classifier.noisy_eval_images`).

Command (``ditkit train-classifier`` runs the same loop)::

    python -m ditkit.train.classifier --out assets/classifier --steps 1500
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io.progress import RunBar
from ..shapes.classifier import (
    EVAL_SEED,
    KIND,
    TRAIN_SEED,
    ClassifierConfig,
    ShapesClassifier,
    gaussian_blur,
    noisy_eval_images,
    save_classifier,
)
from ..shapes.data import ShapesDataset, to_tensor
from .schedule import warmup_cosine

# ----------------------------------------------------------------------------- augmentations


@dataclass(frozen=True)
class AugmentConfig:
    p_affine: float = 0.7  # random rotation (any angle) + scale + translation, bilinear
    max_shift_px: float = 2.0
    scale_range: tuple[float, float] = (0.9, 1.05)
    p_channel_perm: float = 0.5  # colour never decides the class
    brightness: float = 0.2  # offset, in [-1, 1] units
    contrast: tuple[float, float] = (0.7, 1.3)
    channel_shift: float = 0.1
    p_blur: float = 0.35
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # px
    p_lowpass: float = 0.15  # area-down to one of `lowpass_sizes`, bilinear back up
    lowpass_sizes: tuple[int, ...] = (12, 16, 20, 24)
    p_posterize: float = 0.1
    posterize_levels: tuple[int, int] = (8, 32)
    p_lowfreq_noise: float = 0.3
    lowfreq_sigma: float = 0.15
    p_noise: float = 0.5
    noise_sigma: float = 0.3


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def augment(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Random label-preserving degradations of a batch (N, 3, H, W) in [-1, 1]; see the module docstring."""
    n, c, h, w = x.shape
    # geometry: exact 90° turns, then an optional bilinear affine
    turns = torch.randint(4, (n,), generator=g)
    x = torch.stack([torch.rot90(xi, int(k), dims=(1, 2)) for xi, k in zip(x, turns)])
    angle = _uniform(n, 0.0, 2 * math.pi, g)
    scale = _uniform(n, *cfg.scale_range, g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * cfg.max_shift_px * 2 / w  # normalised coords
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * angle.cos(), -scale * angle.sin()
    theta[:, 1, 0], theta[:, 1, 1] = scale * angle.sin(), scale * angle.cos()
    theta[:, :, 2] = shift
    keep = ~_coin(n, cfg.p_affine, g)
    theta[keep] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # colour
    perm = torch.argsort(torch.rand(n, c, generator=g), dim=1)
    perm[~_coin(n, cfg.p_channel_perm, g)] = torch.arange(c)
    x = x.gather(1, perm[:, :, None, None].expand_as(x))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(n, *cfg.contrast, g)[:, None, None, None]
    offset = _uniform(n, -cfg.brightness, cfg.brightness, g)[:, None, None, None]
    offset = offset + (torch.rand(n, c, 1, 1, generator=g) * 2 - 1) * cfg.channel_shift
    x = (x - mean) * contrast + mean + offset
    # blur and low-pass resampling
    sigma = _uniform(n, *cfg.blur_sigma, g) * _coin(n, cfg.p_blur, g)
    x = gaussian_blur(x, sigma)
    low = _coin(n, cfg.p_lowpass, g)
    if low.any():
        size = cfg.lowpass_sizes[int(torch.randint(len(cfg.lowpass_sizes), (1,), generator=g))]
        small = F.interpolate(x[low], size=(size, size), mode="area")
        x[low] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    post = _coin(n, cfg.p_posterize, g)
    if post.any():
        levels = int(torch.randint(cfg.posterize_levels[0], cfg.posterize_levels[1] + 1, (1,), generator=g))
        x[post] = torch.round((x[post].clamp(-1, 1) + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    # noise: low-frequency blotches, then white
    blotch_sigma = _uniform(n, 0.0, cfg.lowfreq_sigma, g) * _coin(n, cfg.p_lowfreq_noise, g)
    blotches = torch.randn(n, c, 8, 8, generator=g) * blotch_sigma[:, None, None, None]
    x = x + F.interpolate(blotches, size=(h, w), mode="bilinear", align_corners=False)
    noise_sigma = _uniform(n, 0.0, cfg.noise_sigma, g) * _coin(n, cfg.p_noise, g)
    x = x + torch.randn(x.shape, generator=g) * noise_sigma[:, None, None, None]
    return x.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + batch_size]).argmax(dim=1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return correct / len(images)


def train_classifier(
    out_dir,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    log=print,
    *,
    num_train: int = 40_000,
    num_eval: int = 2_000,
    weight_decay: float = 0.05,
    warmup_frac: float = 0.05,
    config: ClassifierConfig | None = None,
    augment_config: AugmentConfig = AugmentConfig(),
    train_seed: int = TRAIN_SEED,
    progress: bool | None = None,
) -> dict:
    """Train a `ShapesClassifier` on fresh renders (dataset seed 1000), save it to `out_dir`; return its info.

    AdamW (Loshchilov & Hutter 2019) with linear warmup then cosine decay to zero. The
    held-out set is `ShapesDataset(num_eval, seed=2000)`, measured clean and after
    `noisy_eval_images`. The folder gets ``model.safetensors`` + ``config.json`` (atomically);
    ``config`` defaults to `ClassifierConfig()`. ``progress``: a bar over the steps on stderr with the
    whole-run estimate (`ditkit.io.progress.RunBar`; None: only on a terminal).
    """
    config = config or ClassifierConfig()
    start = time.time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    log(f"rendering {num_train} training and {num_eval} held-out images ...")
    train_pixels, train_labels = ShapesDataset(num_train, seed=train_seed).materialize()  # uint8 (N, 32, 32, 3)
    eval_pixels, eval_labels = ShapesDataset(num_eval, seed=EVAL_SEED).materialize()

    model = ShapesClassifier(config)
    log(f"classifier: {sum(p.numel() for p in model.parameters()):,} parameters, config {config}")
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay}], lr=lr)
    warmup = max(1, int(warmup_frac * steps))

    def lr_at(step: int) -> float:
        return warmup_cosine(step, lr, warmup, steps)

    model.train()
    running, log_every = 0.0, max(1, steps // 10)
    bar = RunBar(steps, "train classifier", progress)
    say = bar.above(log)
    for step in range(steps):
        idx = torch.randint(num_train, (batch_size,), generator=g)
        x = augment(to_tensor(train_pixels[idx].numpy()), g, augment_config)  # (B, 3, 32, 32)
        loss = F.cross_entropy(model(x), train_labels[idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        bar.note = f", loss {loss.item():.4f}"
        bar.update(1)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            say(f"step {step + 1}/{steps}  loss {running / n:.4f}  lr {lr_at(step):.2e}  {time.time() - start:.0f}s")
            running = 0.0
    bar.close()

    eval_images = to_tensor(eval_pixels.numpy())
    metrics = {
        "clean_accuracy": _accuracy(model, eval_images, eval_labels),
        "noisy_accuracy": _accuracy(model, noisy_eval_images(eval_images), eval_labels),
        "num_eval": num_eval,
        "eval_seed": EVAL_SEED,
        "train_seconds": round(time.time() - start, 1),
    }
    log(f"held-out accuracy: clean {metrics['clean_accuracy']:.4f}, noisy {metrics['noisy_accuracy']:.4f}")
    command = f"python -m ditkit.train.classifier --out {out_dir} --steps {steps} --batch-size {batch_size} "
    command += f"--lr {lr} --seed {seed}"
    if config.widths != ClassifierConfig().widths:
        command += " --widths " + ",".join(str(w) for w in config.widths)
    if train_seed != TRAIN_SEED:
        command += f" --train-seed {train_seed}"
    info = {
        "training": {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "weight_decay": weight_decay,
            "warmup_frac": warmup_frac,
            "num_train": num_train,
            "train_seed": train_seed,
            "augment": asdict(augment_config),
        },
        "metrics": metrics,
        "command": command,
    }
    save_classifier(out_dir, model, info)
    log(f"saved {out_dir}")
    return {"kind": KIND, "config": asdict(config), **info}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output model folder (model.safetensors + config.json)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--widths", default=None, help="channels per stage, e.g. 32,64,96,128 (default 24,48,96,128)")
    parser.add_argument("--train-seed", type=int, default=TRAIN_SEED,
                        help="dataset seed of the training renders (a REPA teacher uses its own, e.g. 6000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = functools.partial(print, flush=True)
    config = ClassifierConfig()
    if args.widths:
        try:
            config = ClassifierConfig(widths=tuple(int(w) for w in args.widths.split(",")))
        except ValueError:
            parser.error(f"--widths must be comma-separated integers, got {args.widths!r}")
    return train_classifier(args.out, args.steps, args.batch_size, args.lr, args.seed, log=log, config=config,
                            train_seed=args.train_seed, progress=False if args.no_progress else None)


if __name__ == "__main__":
    main()
