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

Data: the judge is trained (`ditkit.train.classifier`, with its augmentations) on freshly
rendered `ShapesDataset(num_train, seed=1000)`; held-out evaluation uses `seed=2000`
(disjoint by construction of the dataset's seeding). "Noisy accuracy" is measured on the
held-out set after a fixed degradation (Gaussian blur σ=0.75 px, then white noise σ=0.25,
clamped) — see `noisy_eval_images`.

Files: a classifier folder holds ``model.safetensors`` + ``config.json`` (kind
``shapes-classifier``); `save_classifier` writes one, `load_classifier` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io.checkpoint import CheckpointError, load_model_files, save_model
from .data import CLASSES

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


# ----------------------------------------------------------------------------- degradations and files


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


def noisy_eval_images(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The fixed degradation behind "noisy accuracy": blur σ=0.75 px, white noise σ=0.25, clamp."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(x, torch.full((x.shape[0],), 0.75))
    return (x + 0.25 * torch.randn(x.shape, generator=g)).clamp(-1.0, 1.0)


def save_classifier(folder, model: ShapesClassifier, info: dict | None = None) -> None:
    """Write a classifier folder (``model.safetensors`` + ``config.json``, kind shapes-classifier) atomically;
    ``info`` adds entries (training settings, metrics, command) to the config."""
    save_model(folder, model.state_dict(), {"kind": KIND, "config": asdict(model.config), **(info or {})})


def load_classifier(path) -> ShapesClassifier:
    """Load a classifier folder written by `save_classifier` (eval mode, CPU)."""
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
