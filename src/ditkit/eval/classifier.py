"""A small CNN that recognises the 10 shapes classes: judge of generated samples and FD feature net.

Two jobs, one network:

* **class accuracy of generated images** — `forward(x)` gives logits over `CLASSES`;
* **Fréchet distance features** — `features(x)` gives the globally pooled penultimate
  embedding (128-d by default), used in place of Inception-v3 pool3 features
  (Heusel et al. 2017, https://arxiv.org/abs/1706.08500) on this 32x32 toy domain.

Architecture: a VGG-style stack of 3x3 conv → GroupNorm (Wu & He 2018,
https://arxiv.org/abs/1803.08494) → SiLU blocks, halving resolution per stage
(32→16→8→4 px), global average pooling and one linear head (~420k parameters).
GroupNorm rather than BatchNorm so that a sample's features never depend on the rest
of its batch or on running statistics, which matters when the inputs are a generator's.

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
`seed=2000` (disjoint by construction of the dataset's seeding). "Noisy accuracy" is
measured on the held-out set after a fixed degradation (Gaussian blur σ=0.75 px, then
white noise σ=0.25, clamped) — see `noisy_eval_images`.

Command (until the CLI wires ``ditkit train-classifier``)::

    python -m ditkit.eval.classifier --out assets/classifier --steps 1500
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

from ditkit.data.shapes import CLASSES, ShapesDataset, to_tensor
from ditkit.io.checkpoint import CheckpointError, load_model_files, save_model
from ditkit.train.schedule import warmup_cosine

KIND = "shapes-classifier"
TRAIN_SEED = 1000  # dataset seed of the training images
EVAL_SEED = 2000  # dataset seed of the held-out images (also used by tests and evaluation)

# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ClassifierConfig:
    widths: tuple[int, ...] = (24, 48, 96, 128)  # channels of each stage; stage k runs at 32 / 2**k px
    groups: int = 8  # GroupNorm groups (must divide every width)
    in_channels: int = 3
    num_classes: int = len(CLASSES)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


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


# ----------------------------------------------------------------------------- model


class ConvBlock(nn.Sequential):
    """3x3 conv → GroupNorm → SiLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
        )


class ShapesClassifier(nn.Module):
    """Images (N, 3, H, W) in [-1, 1] → `features` (N, D) → `forward` logits (N, num_classes)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = ConvBlock(config.in_channels, w[0], 1, config.groups)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBlock(c_in, c_out, 2, config.groups), ConvBlock(c_out, c_out, 1, config.groups))
            for c_in, c_out in zip(w[:-1], w[1:])
        )
        self.head = nn.Linear(w[-1], config.num_classes)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage: [(N, w1, H/2, W/2), (N, w2, H/4, W/4), ...] (REPA's teacher features)."""
        h, maps = self.stem(x), []  # (N, w0, H, W)
        for stage in self.stages:
            h = stage(h)  # (N, wk, H / 2**k, W / 2**k)
            maps.append(h)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x)[-1].mean(dim=(2, 3))  # (N, D) global average pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes)


# ----------------------------------------------------------------------------- augmentations


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample σ (px); σ = 0 leaves a sample unchanged."""
    n, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)  # (K,)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]  # (N, 1)
    k = torch.exp(-0.5 * (offsets[None] / s) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)  # horizontal
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)  # vertical
    return y.reshape(n, c, h, w)


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


def noisy_eval_images(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The fixed degradation behind "noisy accuracy": blur σ=0.75 px, white noise σ=0.25, clamp."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(x, torch.full((x.shape[0],), 0.75))
    return (x + 0.25 * torch.randn(x.shape, generator=g)).clamp(-1.0, 1.0)


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
    config: ClassifierConfig = ClassifierConfig(),
    augment_config: AugmentConfig = AugmentConfig(),
    train_seed: int = TRAIN_SEED,
) -> dict:
    """Train a `ShapesClassifier` on fresh renders (dataset seed 1000), save it to `out_dir`; return its info.

    AdamW (Loshchilov & Hutter 2019) with linear warmup then cosine decay to zero. The
    held-out set is `ShapesDataset(num_eval, seed=2000)`, measured clean and after
    `noisy_eval_images`. The folder gets ``model.safetensors`` + ``config.json`` (atomically).
    """
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
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            log(f"step {step + 1}/{steps}  loss {running / n:.4f}  lr {lr_at(step):.2e}  {time.time() - start:.0f}s")
            running = 0.0

    eval_images = to_tensor(eval_pixels.numpy())
    metrics = {
        "clean_accuracy": _accuracy(model, eval_images, eval_labels),
        "noisy_accuracy": _accuracy(model, noisy_eval_images(eval_images), eval_labels),
        "num_eval": num_eval,
        "eval_seed": EVAL_SEED,
        "train_seconds": round(time.time() - start, 1),
    }
    log(f"held-out accuracy: clean {metrics['clean_accuracy']:.4f}, noisy {metrics['noisy_accuracy']:.4f}")
    command = f"python -m ditkit.eval.classifier --out {out_dir} --steps {steps} --batch-size {batch_size} "
    command += f"--lr {lr} --seed {seed}"
    if config.widths != ClassifierConfig().widths:
        command += " --widths " + ",".join(str(w) for w in config.widths)
    if train_seed != TRAIN_SEED:
        command += f" --train-seed {train_seed}"
    info = {
        "kind": KIND,
        "config": asdict(config),
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
    save_model(out_dir, model.state_dict(), info)
    log(f"saved {out_dir}")
    return info


def load_classifier(path) -> ShapesClassifier:
    """Load a classifier folder written by `train_classifier` (eval mode, CPU)."""
    state, info = load_model_files(path)
    if info.get("kind") != KIND:
        raise CheckpointError(f"{path} holds a {info.get('kind')!r} model, not a {KIND!r}")
    try:
        raw = dict(info["config"])
        config = ClassifierConfig(**{**raw, "widths": tuple(raw["widths"])})
        model = ShapesClassifier(config)
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: weights/config do not fit a ShapesClassifier ({first})") from None
    return model.eval()


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
                            train_seed=args.train_seed)


if __name__ == "__main__":
    main()
