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

Training (the loop, its seeds and the bundled autoencoder's figures) lives in `ditkit.train.autoencoder`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import CheckpointError, load_json, load_model_files, save_model
from ..io.fields import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE_INT,
    RuleTable,
    build_config,
    check_finite,
    check_weights_header,
    choice,
    expected_state,
    int_list,
)

KIND = "ditkit-autoencoder"


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


# config.json's ranges and choices (`ditkit.io.fields.build_config`); other fields are checked by their type
CONFIG_RULES: RuleTable = {
    "AutoencoderConfig": {"downsample": choice(2, 4, 8, 16), "latent_channels": POSITIVE_INT, "widths": int_list(),
                          "num_res_blocks": COUNT, "groups": POSITIVE_INT, "image_channels": POSITIVE_INT,
                          "latent_l2": NON_NEGATIVE},
}


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
    """Load an autoencoder folder written by `save_autoencoder` (eval mode, frozen, CPU)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    info = load_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if not isinstance(info, dict) or info.get("kind") != KIND:
        kind = info.get("kind") if isinstance(info, dict) else None
        raise CheckpointError(f"{path} holds a {kind!r} model, not a {KIND!r}")
    config = build_config(AutoencoderConfig, info.get("config"), folder / "config.json", rules=CONFIG_RULES)
    if (folder / "model.safetensors").is_file():
        check_weights_header(folder / "model.safetensors", expected_state(lambda: Autoencoder(config)))
    state, info = load_model_files(path)
    check_finite(state, folder / "model.safetensors")
    try:
        model = Autoencoder(config)
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
    """The autoencoder folder ``path``.

    Without ``base`` it is a path the user gave: as given, else under the assets dir. With ``base`` (a
    model folder) it is the ``autoencoder.path`` of that folder's config.json: relative to ``base`` only,
    and it must stay inside it (`ditkit.io.confined`; the working directory never takes part)."""
    if base is not None:
        from ..io.confined import confined_path

        base = Path(base)
        found = confined_path(base, path, "autoencoder.path", base / "config.json")
        if not found.exists():
            raise CheckpointError(f"{base / 'config.json'}: autoencoder.path {path!r}: no such folder in {base}")
        return found
    from ..assets import resolve_asset_path

    return resolve_asset_path(path, "autoencoder")


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
