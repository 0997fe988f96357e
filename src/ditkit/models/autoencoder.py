"""Latent codecs: a small convolutional autoencoder for 32x32 shapes, and diffusers' AutoencoderKL.

Latent diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752) trains the DiT on a
compact latent instead of pixels; a decoder renders the crisp image. Anything with this
interface is a `LatentCodec`::

    z = codec.encode(x)      # images (N, 3, H, W) in [-1, 1] -> latents (N, C, H/f, W/f), ~N(0, 1) per channel
    x = codec.decode(z)      # and back
    codec.latent_shape((H, W)) == (C, H // f, W // f);  codec.downsample == f;  codec.name

**Latent scale lives here**, never in a sampler (see `ditkit.diffusion`): `encode` returns
*normalised* latents, `decode` undoes the normalisation.

* `Autoencoder` (ditkit's own): per-channel statistics ``latent_mean``/``latent_std`` are
  measured on data after training and stored as buffers with the weights, so
  ``encode(x) = (E(x) - mean) / std`` has ≈ zero mean and unit std per channel.
* `DiffusersVAE` wraps a diffusers ``AutoencoderKL`` from a LOCAL folder (sd-vae-ft-ema layout):
  ``z = (posterior mode - shift_factor) * scaling_factor`` with both factors from its config
  (0.18215 for SD-VAE; diffusers is an optional dependency).

Autoencoder design. Encoder: 3x3 conv, then per resolution level residual blocks
(GroupNorm → SiLU → 3x3 conv, twice; Wu & He 2018) and a stride-2 conv down, then
GroupNorm → SiLU → 3x3 conv to C channels. The decoder mirrors it with nearest-neighbour
upsampling + 3x3 conv (no transposed-conv checkerboards). It is a *deterministic* autoencoder
with a small L2 penalty on the latent (``latent_l2``) instead of LDM's KL-regularised VAE:
LDM's KL weight (~1e-6) is so small that the learned posterior variance is negligible and the
term acts as a weak pull of the latent towards zero — which an L2 penalty does directly, without
a sampling step, so `encode` is a plain function. It only has to keep the latent's scale
bounded and free of runaway channels; the per-channel normalisation measured after training
then sets the exact scale the diffusion model sees. Loss: MSE (which is what PSNR measures)
+ ``latent_l2 * mean(z**2)``.

Train the bundled one (fresh renders, dataset seed 4000; held-out evaluation seed 5000; the
bundled classifier judges the reconstructions)::

    python -m ditkit.models.autoencoder --out assets/shapes-ae --steps 12000 --batch-size 8 --lr 1e-3 --threads 1

Bundled result (f=4, C=4, widths 32/64/64, 451k parameters, 1.8 MB): 8x8x4 latents; 594 s of
training on 1 CPU thread; on 2,000 held-out images PSNR 36.6 dB, SSIM 0.969, and the bundled
classifier recognises 100 % of the reconstructions (100 % of the originals). The decoder
tolerates generator error: Gaussian noise of σ 0.1 / 0.2 / 0.3 on the normalised latents still
decodes to 99.9 / 99.4 / 95.2 % classifier accuracy. At equal compute, small batches won
(300 steps x 64: 24.2 dB; 600 x 32: 25.9; 1200 x 16: 27.5; 2400 x 8: 28.2 dB), hence batch 8.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import CheckpointError, load_json, load_model_files, save_model
from ..train.schedule import warmup_cosine

KIND = "ditkit-autoencoder"
TRAIN_SEED = 4000  # dataset seed of the training images (the classifier uses 1000/2000)
EVAL_SEED = 5000  # held-out images for PSNR / classifier accuracy
STATS_SEED = 4500  # images the latent statistics are measured on


@runtime_checkable
class LatentCodec(Protocol):
    """What the trainer and the pipeline need from an autoencoder."""

    name: str
    downsample: int  # f: a latent cell covers f x f pixels
    latent_channels: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, 3, H, W) in [-1, 1] -> (N, C, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...  # (N, C, H/f, W/f) -> (N, 3, H, W)

    def latent_shape(self, image_hw: tuple[int, int]) -> tuple[int, int, int]: ...


def _latent_shape(codec, image_hw) -> tuple[int, int, int]:
    h, w = (int(v) for v in image_hw)
    f = codec.downsample
    if h % f or w % f:
        raise ValueError(f"{codec.name}: image size {h}x{w} is not divisible by its downsample factor {f}")
    return codec.latent_channels, h // f, w // f


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AutoencoderConfig:
    downsample: int = 4  # f ∈ {4, 8}: 32x32 images -> 8x8 or 4x4 latents
    latent_channels: int = 4  # C
    widths: tuple[int, ...] = (32, 64, 64)  # channels per resolution level, full res first; log2(f) + 1 entries
    num_res_blocks: int = 1  # residual blocks per level, in the encoder and the decoder
    groups: int = 8  # GroupNorm groups (divides every width)
    image_channels: int = 3
    latent_l2: float = 1e-4  # weight of mean(z**2) in the loss (see the module docstring)

    def __post_init__(self):
        if self.downsample not in (2, 4, 8, 16):
            raise ValueError(f"downsample must be a power of two (4 or 8 for 32x32 shapes), got {self.downsample}")
        levels = int(math.log2(self.downsample)) + 1
        if len(self.widths) != levels:
            raise ValueError(f"downsample {self.downsample} needs {levels} widths (one per level), got {self.widths}")
        if any(w % self.groups for w in self.widths):
            raise ValueError(f"groups={self.groups} must divide every width {self.widths}")
        if self.latent_channels <= 0 or self.num_res_blocks < 0:
            raise ValueError("latent_channels must be positive and num_res_blocks >= 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AutoencoderConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


# ----------------------------------------------------------------------------- network


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x))))))."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))  # (N, C, H, W)


def _out_head(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        w, g = cfg.widths, cfg.groups
        self.conv_in = nn.Conv2d(cfg.image_channels, w[0], 3, padding=1)
        self.levels = nn.ModuleList(nn.Sequential(*(ResBlock(c, g) for _ in range(cfg.num_res_blocks))) for c in w)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(w[:-1], w[1:]))
        self.out = _out_head(w[-1], cfg.latent_channels, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (N, w0, H, W)
        for k, level in enumerate(self.levels):
            h = level(h)  # (N, wk, H / 2**k, W / 2**k)
            if k < len(self.down):
                h = self.down[k](h)  # (N, w(k+1), H / 2**(k+1), W / 2**(k+1))
        return self.out(h)  # (N, C, H / f, W / f)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        w, g = cfg.widths[::-1], cfg.groups  # coarse level first
        self.conv_in = nn.Conv2d(cfg.latent_channels, w[0], 3, padding=1)
        self.levels = nn.ModuleList(nn.Sequential(*(ResBlock(c, g) for _ in range(cfg.num_res_blocks))) for c in w)
        self.up = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(w[:-1], w[1:]))
        self.out = _out_head(w[-1], cfg.image_channels, g)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)  # (N, w_last, H / f, W / f)
        for k, level in enumerate(self.levels):
            h = level(h)
            if k < len(self.up):
                h = self.up[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # 2x the side
        return self.out(h)  # (N, 3, H, W)


class Autoencoder(nn.Module):
    """A `LatentCodec`: `encode`/`decode` work on normalised latents; `*_raw` on the network's own."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        c = config.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c))  # identity until `set_latent_stats`
        self.register_buffer("latent_std", torch.ones(c))

    @property
    def name(self) -> str:
        return f"ditkit-ae-f{self.config.downsample}c{self.config.latent_channels}"

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, image_hw) -> tuple[int, int, int]:
        return _latent_shape(self, image_hw)

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.view(1, -1, 1, 1).to(z.dtype), self.latent_std.view(1, -1, 1, 1).to(z.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode_raw(x)
        mean, std = self._stats(z)
        return (z - mean) / std  # (N, C, H/f, W/f), ≈ N(0, 1) per channel

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return self.decode_raw(z * std + mean)  # (N, 3, H, W)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode_raw(x)
        return self.decode_raw(z), z

    @torch.no_grad()
    def set_latent_stats(self, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Measure the per-channel mean/std of raw latents of `images` (N, 3, H, W) and store them."""
        zs = torch.cat([self.encode_raw(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        zs = zs.transpose(0, 1).flatten(1).double()  # (C, N * h * w)
        self.latent_mean.copy_(zs.mean(dim=1).float())
        self.latent_std.copy_(zs.std(dim=1).clamp_min(1e-6).float())
        return self.latent_mean.clone(), self.latent_std.clone()


def save_autoencoder(folder, model: Autoencoder, extra: dict | None = None) -> None:
    """Write an autoencoder folder (``model.safetensors`` + ``config.json``, kind ditkit-autoencoder) atomically."""
    save_model(folder, model.state_dict(), {"kind": KIND, "config": model.config.to_dict(), **(extra or {})})


def load_autoencoder(path) -> Autoencoder:
    """Load an autoencoder folder written by `save_autoencoder`/`train_autoencoder` (eval mode, frozen, CPU)."""
    state, info = load_model_files(path)
    if info.get("kind") != KIND:
        raise CheckpointError(f"{path} holds a {info.get('kind')!r} model, not a {KIND!r}")
    try:
        model = Autoencoder(AutoencoderConfig.from_dict(info["config"]))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: weights/config do not fit an Autoencoder ({first})") from None
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- diffusers AutoencoderKL


class DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` as a `LatentCodec`: z = (posterior mode - shift) * scaling_factor."""

    def __init__(self, vae, name: str = "diffusers-autoencoderkl"):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)  # SD3/FLUX VAEs; 0 for SD-VAE
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)
        self.name = name

    @classmethod
    def from_folder(cls, path) -> DiffusersVAE:
        try:
            from diffusers import AutoencoderKL
        except ImportError:
            raise CheckpointError(f"{path} is a diffusers AutoencoderKL folder; install diffusers to use it") from None
        try:
            vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load an AutoencoderKL from {path}: {str(e).splitlines()[0]}") from None
        return cls(vae, name=f"diffusers-autoencoderkl:{Path(path).name}")

    def latent_shape(self, image_hw) -> tuple[int, int, int]:
        return _latent_shape(self, image_hw)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(x).latent_dist.mode()  # (N, C, H/f, W/f), deterministic
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z / self.scaling_factor + self.shift_factor).sample  # (N, 3, H, W)


# ----------------------------------------------------------------------------- loading any codec


def resolve_codec_path(path, base: Path | None = None) -> Path:
    """An autoencoder path as given; else relative to `base` (a model folder); else under the assets dir."""
    from ..assets import resolve_asset_path

    return resolve_asset_path(path, "autoencoder", base)


def load_codec(path) -> LatentCodec:
    """Load a ditkit autoencoder folder or a diffusers AutoencoderKL folder (decided by its config.json)."""
    path = Path(path)
    info = load_json(path / "config.json") if path.is_dir() else None
    if info is None:
        raise CheckpointError(f"{path} is not an autoencoder folder (needs config.json)")
    if info.get("kind") == KIND:
        return load_autoencoder(path)
    if info.get("_class_name") == "AutoencoderKL":
        return DiffusersVAE.from_folder(path)
    raise CheckpointError(f"{path} is neither a ditkit autoencoder nor a diffusers AutoencoderKL folder")


def codec_fingerprint(path) -> str:
    """sha256 (first 16 hex digits) of the weights in an autoencoder folder: ties a run to its AE."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def check_codec_fits(codec: LatentCodec, image_hw, in_channels: int, latent_hw, where: str = "the model") -> None:
    """Raise ValueError (one line) unless `codec` maps `image_hw` images to (in_channels, *latent_hw)."""
    want = (int(in_channels), *(int(v) for v in latent_hw))
    h, w = (int(v) for v in image_hw)
    hint = "use a latent preset (e.g. shapes-latent)"
    if codec.latent_channels != want[0]:
        raise ValueError(f"autoencoder {codec.name} has {codec.latent_channels} latent channels, but {where} "
                         f"expects in_channels={want[0]}; {hint}")
    got = codec.latent_shape((h, w))
    if tuple(got) != want:
        raise ValueError(f"autoencoder {codec.name} maps {h}x{w} images to {got[0]}x{got[1]}x{got[2]} latents, but "
                         f"{where} expects in_channels={want[0]}, input_size={want[1]}x{want[2]}; {hint}")


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate_autoencoder(model: Autoencoder, images: torch.Tensor, labels: torch.Tensor, classifier=None,
                         batch_size: int = 250) -> dict:
    """Held-out reconstruction PSNR/SSIM (dB, mean over images) and classifier accuracy on reconstructions."""
    from ..eval.metrics import class_accuracy, psnr, ssim

    model.eval()
    recon = torch.cat([model.decode(model.encode(images[i:i + batch_size])).clamp(-1, 1)
                       for i in range(0, len(images), batch_size)])
    out = {"psnr_db": round(psnr(recon, images).mean().item(), 2), "ssim": round(ssim(recon, images).mean().item(), 4)}
    if classifier is not None:
        out["classifier_accuracy_recon"] = class_accuracy(classifier, recon, labels)
        out["classifier_accuracy_original"] = class_accuracy(classifier, images, labels)
    return out


def train_autoencoder(out_dir, steps: int = 12_000, batch_size: int = 8, lr: float = 1e-3, seed: int = 0, log=print, *,
                      config: AutoencoderConfig = AutoencoderConfig(), num_train: int = 50_000, num_eval: int = 2_000,
                      num_stats: int = 4_000, classifier: str | Path | None = "default", warmup_frac: float = 0.03,
                      command: str | None = None) -> dict:
    """Train an `Autoencoder` on fresh shapes renders, measure its latent statistics, evaluate, save; return its info.

    AdamW (no weight decay) with linear warm-up then cosine decay to zero; MSE + ``latent_l2``.
    Latent statistics from `num_stats` images of seed 4500; evaluation on `num_eval` held-out images
    of seed 5000, judged by the bundled classifier (``classifier="default"``; None skips it).
    """
    from ..data.shapes import ShapesDataset, to_tensor

    start = time.time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_pixels, _ = ShapesDataset(num_train, seed=TRAIN_SEED).materialize()  # uint8 (N, 32, 32, 3)
    model = Autoencoder(config)
    log(f"autoencoder {model.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {config}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, int(warmup_frac * steps))

    def lr_at(step: int) -> float:
        return warmup_cosine(step, lr, warmup, steps)

    model.train()
    running, log_every = [0.0, 0.0], max(1, steps // 20)
    for step in range(steps):
        idx = torch.randint(num_train, (batch_size,), generator=g)
        x = to_tensor(train_pixels[idx])  # (B, 3, 32, 32) in [-1, 1]
        recon, z = model(x)
        rec = F.mse_loss(recon, x)
        loss = rec + config.latent_l2 * z.pow(2).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running[0] += rec.item()
        running[1] += z.detach().pow(2).mean().item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            mse = running[0] / n
            log(f"step {step + 1}/{steps}  mse {mse:.5f} (~{10 * math.log10(4 / mse):.1f} dB)  "
                f"z^2 {running[1] / n:.3f}  lr {lr_at(step):.2e}  {time.time() - start:.0f}s")
            running = [0.0, 0.0]
    train_seconds = time.time() - start

    model.eval()
    stats_pixels, _ = ShapesDataset(num_stats, seed=STATS_SEED).materialize()
    mean, std = model.set_latent_stats(to_tensor(stats_pixels))
    log(f"latent mean {[round(v, 3) for v in mean.tolist()]}  std {[round(v, 3) for v in std.tolist()]}")
    eval_pixels, eval_labels = ShapesDataset(num_eval, seed=EVAL_SEED).materialize()
    clf = None
    if classifier is not None:
        from ..assets import default_classifier_dir
        from ..eval.classifier import load_classifier

        clf = load_classifier(default_classifier_dir() if classifier == "default" else classifier)
    metrics = evaluate_autoencoder(model, to_tensor(eval_pixels), eval_labels, clf)
    metrics.update({"num_eval": num_eval, "eval_seed": EVAL_SEED, "train_seconds": round(train_seconds, 1),
                    "threads": torch.get_num_threads()})
    log(f"held-out: {metrics}")
    info = {
        "config": config.to_dict(),
        "name": model.name,
        "latent_shape_32": list(model.latent_shape((32, 32))),
        "latent_stats": {"mean": mean.tolist(), "std": std.tolist(), "num_images": num_stats, "seed": STATS_SEED},
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "warmup_frac": warmup_frac,
                     "loss": "mse + latent_l2 * mean(z^2)", "optimizer": "AdamW, cosine", "num_train": num_train,
                     "train_seed": TRAIN_SEED},
        "metrics": metrics,
        "command": command,
    }
    save_autoencoder(out_dir, model, info)
    log(f"saved {out_dir}")
    return {"kind": KIND, **info}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Train the shapes autoencoder (see ditkit.models.autoencoder).")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    parser.add_argument("--steps", type=int, default=12_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--downsample", type=int, default=AutoencoderConfig.downsample)
    parser.add_argument("--latent-channels", type=int, default=AutoencoderConfig.latent_channels)
    parser.add_argument("--widths", default=",".join(map(str, AutoencoderConfig.widths)), help="e.g. 32,64,64")
    parser.add_argument("--res-blocks", type=int, default=AutoencoderConfig.num_res_blocks)
    parser.add_argument("--latent-l2", type=float, default=AutoencoderConfig.latent_l2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = AutoencoderConfig(downsample=args.downsample, latent_channels=args.latent_channels,
                               widths=tuple(int(w) for w in args.widths.split(",")), num_res_blocks=args.res_blocks,
                               latent_l2=args.latent_l2)
    command = (f"python -m ditkit.models.autoencoder --out {args.out} --steps {args.steps} --batch-size {args.batch_size} "
               f"--lr {args.lr} --seed {args.seed} --downsample {args.downsample} --latent-channels "
               f"{args.latent_channels} --widths {args.widths} --res-blocks {args.res_blocks} "
               f"--latent-l2 {args.latent_l2} --threads {args.threads}")
    log = functools.partial(print, flush=True)
    return train_autoencoder(args.out, args.steps, args.batch_size, args.lr, args.seed, log=log, config=config,
                             command=command)


if __name__ == "__main__":
    main()
