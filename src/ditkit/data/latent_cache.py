"""Pre-encoded latents on disk: `ditkit encode` writes them once, the trainer reads them every step.

Latent diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752, §3) trains the DiT on the
frozen autoencoder's latents. Encoding every batch again costs a VAE forward per step (for an SD-VAE
at 256x256 more than the DiT-S step itself); DiT (Peebles & Xie 2023) and its successors therefore
extract the latents once. ``ditkit encode`` does that for the shapes dataset or an image folder::

    ditkit encode --data shapes --vae assets/shapes-ae --out caches/shapes-ae --num 50000
    ditkit encode --data photos/ --vae sd-vae-ft-ema --out caches/photos --image-size 256
    ditkit train --preset shapes-latent --data latents:caches/shapes-ae

The latents are the codec's *normalised* latents (``codec.encode``: the scale factor lives with the
VAE, see `ditkit.models.autoencoder`), so training from the cache equals training with on-the-fly
encoding. Layout of a cache folder::

    manifest.json                 kind, VAE (path, name, weights fingerprint, scale factor), latent
                                  shape, image size, source data, number of latents, shard list, key
    latents-00000.safetensors     {"latents": float32 (n, C, h, w), "labels": int64 (n,)}; metadata: key

Never half-written: each shard is written atomically (temp file + rename) and tagged with the
cache's *key* (a hash of VAE fingerprint, source data and shard size); ``manifest.json`` is written
last, atomically. A folder without a manifest is an unfinished cache that readers refuse; running
the same command again keeps the shards that carry the same key and encodes only the rest. A finished
cache replaced with ``overwrite`` stays whole until the new one is complete: the new cache is written
in a temporary folder beside it and swapped in (`ditkit.io.atomic.atomic_dir`).
`LatentCacheDataset` reads a finished cache (all latents in memory: 50k shapes latents 8x8x4 are
51 MB) and yields ``(latent (C, h, w), label)`` like the image datasets yield images.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..io import atomic
from ..io.checkpoint import CheckpointError, load_json, load_tensors, save_json, save_tensors
from ..io.confined import confined_path

KIND = "ditkit-latent-cache"
FORMAT = 1
PREFIX = "latents:"  # TrainConfig.dataset = "latents:DIR" trains from a cache
MANIFEST = "manifest.json"
SHARD_GLOB = "latents-*.safetensors"


@dataclass(frozen=True)
class EncodeConfig:
    data: str = "shapes"  # "shapes" or an image folder (one sub-folder per class, or flat)
    vae: str = "assets/shapes-ae"  # a ditkit autoencoder or a diffusers AutoencoderKL folder
    out: str = "latent-cache"  # cache folder to write
    num: int | None = None  # images to encode; None = 50,000 for shapes, every image of a folder
    image_size: int = 32  # side of the (square, centre-cropped) images fed to the VAE
    seed: int = 0  # dataset seed of the shapes renders (folders are read in sorted order)
    batch_size: int = 64  # images per VAE forward
    shard_size: int = 4096  # latents per shard file (the unit of resumption)
    overwrite: bool = False  # replace a finished cache of other data / another VAE in `out`

    def __post_init__(self):
        for name in ("image_size", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num is not None and self.num <= 0:
            raise ValueError(f"num must be positive, got {self.num}")


# ----------------------------------------------------------------------------- helpers


def cache_path(dataset: str) -> Path | None:
    """The folder of a ``"latents:DIR"`` dataset string, else None (shapes or an image folder)."""
    return Path(dataset[len(PREFIX):]) if dataset.startswith(PREFIX) else None


def _vae_scale(codec) -> dict:
    """The normalisation `codec.encode` applies: what turns the raw latents into the cached ones."""
    if hasattr(codec, "scaling_factor"):  # diffusers AutoencoderKL: (mode - shift) * scaling_factor
        return {"scaling_factor": codec.scaling_factor, "shift_factor": codec.shift_factor}
    return {"latent_mean": codec.latent_mean.tolist(), "latent_std": codec.latent_std.tolist()}  # ditkit autoencoder


def _source(cfg: EncodeConfig):
    """(dataset, number of items to encode, JSON description of the source) for `cfg.data`."""
    from ..shapes.data import CLASSES, ShapesDataset
    from .folder import ImageFolderDataset

    if cfg.data == "shapes":
        num = cfg.num or 50_000
        ds = ShapesDataset(num, seed=cfg.seed, image_size=cfg.image_size)
        return ds, num, {"type": "shapes", "seed": cfg.seed, "class_names": list(CLASSES)}
    ds = ImageFolderDataset(cfg.data, image_size=cfg.image_size)  # ValueError on a missing/empty folder
    num = min(cfg.num or len(ds), len(ds))
    listing = hashlib.sha256()  # ties the cache to the files (names and sizes) it was made from
    for f, label in ds.files[:num]:
        listing.update(f"{f.relative_to(ds.root)}\t{f.stat().st_size}\t{label}\n".encode())
    return ds, num, {"type": "folder", "path": str(ds.root.resolve()), "class_names": ds.classes,
                     "files_sha256": listing.hexdigest()[:16]}


def _full_res_width(codec) -> int:
    """Channels of the autoencoder's full-resolution layers (its widest activations per pixel)."""
    config = getattr(codec, "config", None)
    for name in ("widths", "block_out_channels"):  # ditkit's autoencoder, a diffusers AutoencoderKL
        widths = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if widths:
            return int(widths[0])
    return 128  # an SD-VAE's


def check_budget(cfg: EncodeConfig, codec) -> None:
    """Refuse (`ditkit.budget.BudgetError`, one line) a batch beyond the machine's memory before any work: the
    batch's images (``batch x 3 x size^2`` floats, twice: the rendered items and their stack) and the encoder's
    live activations at full resolution (three ``batch x width x size^2`` tensors: input, output, residual)."""
    from .. import budget

    pixels = float(min(cfg.batch_size, cfg.num or cfg.batch_size)) * cfg.image_size ** 2
    memory = pixels * 3 * 4 * 2 + pixels * _full_res_width(codec) * 4 * 3
    budget.check(budget.Estimate(f"encoding batches of {cfg.batch_size} images of {cfg.image_size}x{cfg.image_size}",
                                 memory))


def _shard_key(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:  # noqa: BLE001 - any unreadable shard is simply encoded again
        return None


# ----------------------------------------------------------------------------- writing


@torch.no_grad()
def encode_dataset(cfg: EncodeConfig, log=print) -> dict:
    """Encode `cfg.data` with `cfg.vae` into the cache folder `cfg.out`; returns the manifest.

    Resumes an unfinished cache of the same data and VAE; a finished one is returned as it is.
    """
    from ..models.autoencoder import codec_fingerprint, load_codec, resolve_codec_path

    vae_path = resolve_codec_path(cfg.vae).resolve()
    codec = load_codec(vae_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(codec, torch.nn.Module):
        codec.to(device).eval()
    check_budget(cfg, codec)  # before a single image is rendered or read
    dataset, num, source = _source(cfg)
    latent_shape = list(codec.latent_shape((cfg.image_size, cfg.image_size)))  # ValueError if not divisible
    plan = {
        "vae": {"path": str(vae_path), "name": codec.name, "fingerprint": codec_fingerprint(vae_path),
                "scale": _vae_scale(codec)},
        "source": {**source, "data": cfg.data, "image_size": [cfg.image_size, cfg.image_size]},
        "latent_shape": latent_shape, "num_latents": num, "shard_size": cfg.shard_size,
    }
    key = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]

    out = Path(cfg.out)
    manifest_path = out / MANIFEST
    atomic.tidy(out)  # what a killed replacement left beside the folder
    if manifest_path.is_file():
        old = load_json(manifest_path)
        if old.get("key") == key:
            log(f"{out} already holds this cache ({old['num_latents']} latents); nothing to do")
            return old
        if not cfg.overwrite:
            raise ValueError(f"{out} already holds a latent cache of other data or another VAE "
                             f"({old.get('vae', {}).get('name')}); use another --out or --overwrite")
        with atomic.atomic_dir(out) as new:  # the finished cache stays until the new one takes its place
            return _write_cache(new, out, cfg, codec, dataset, num, source, plan, key, log)
    if out.exists() and (not out.is_dir() or any(p.name != MANIFEST and not p.match(SHARD_GLOB) and
                                                 not p.name.startswith(".") for p in out.iterdir())):
        raise ValueError(f"{out} exists and is not a latent cache folder; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic.tidy_dir(out)  # temporary shards of a killed run
    return _write_cache(out, out, cfg, codec, dataset, num, source, plan, key, log)


def _write_cache(folder: Path, out: Path, cfg: EncodeConfig, codec, dataset, num: int, source: dict, plan: dict,
                 key: str, log) -> dict:
    """Encode the shards into ``folder`` (``out`` itself, or the new folder that replaces it), keeping those a
    killed run of the same cache left there, then write the manifest; returns it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where encode_dataset put the codec
    start, shards, reused = time.time(), [], 0
    for k, lo in enumerate(range(0, num, cfg.shard_size)):
        hi = min(num, lo + cfg.shard_size)
        name = f"latents-{k:05d}.safetensors"
        shards.append({"file": name, "start": lo, "count": hi - lo})
        if _shard_key(folder / name) == key:  # written by an earlier, interrupted run of this command
            reused += 1
            continue
        zs, ys = [], []
        for b in range(lo, hi, cfg.batch_size):
            items = [dataset[i] for i in range(b, min(hi, b + cfg.batch_size))]
            x = torch.stack([it[0] for it in items]).to(device)  # (B, 3, H, W) in [-1, 1]
            zs.append(codec.encode(x).float().cpu())  # (B, C, h, w), normalised
            ys.extend(int(it[1]) for it in items)
        save_tensors(folder / name, {"latents": torch.cat(zs), "labels": torch.tensor(ys, dtype=torch.long)},
                     metadata={"key": key})  # one entry: safetensors writes several in a random order
        log(f"shard {k + 1}/{-(-num // cfg.shard_size)}: latents {lo}-{hi - 1} ({time.time() - start:.0f}s)")
    keep = {s["file"] for s in shards}
    for stale in folder.glob(SHARD_GLOB):  # shards of an earlier, larger cache in the same folder
        if stale.name not in keep:
            stale.unlink()
    manifest = {"kind": KIND, "format": FORMAT, "key": key, **plan, "shards": shards,
                "class_names": source["class_names"], "seconds": round(time.time() - start, 1),
                "reused_shards": reused}
    save_json(folder / MANIFEST, manifest)  # last: its presence marks the cache finished
    log(f"wrote {num} latents {'x'.join(map(str, plan['latent_shape']))} to {out}"
        + (f" ({reused} shards kept from an earlier run)" if reused else ""))
    return manifest


# ----------------------------------------------------------------------------- reading


class LatentCacheDataset(torch.utils.data.Dataset):
    """A finished latent cache: items ``(latent float32 (C, h, w), label int)``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"no such latent cache: {self.root}")
        if not (self.root / MANIFEST).is_file():
            raise CheckpointError(f"{self.root} is not a finished latent cache (no {MANIFEST}); "
                                  f"run the ditkit encode command again to finish it")
        self.manifest = m = load_json(self.root / MANIFEST)
        if not isinstance(m, dict) or m.get("kind") != KIND or m.get("format") != FORMAT:
            raise CheckpointError(f"{self.root}/{MANIFEST} is not a ditkit latent cache manifest (format {FORMAT})")
        source = self.root / MANIFEST
        shards = m.get("shards")
        if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("count"), int)
                                                   for s in shards):
            raise CheckpointError(f"{source}: shards must be a list of {{file, start, count}} entries")
        if not isinstance(m.get("latent_shape"), list):
            raise CheckpointError(f"{source}: latent_shape must be a list [channels, height, width]")
        latents, labels = [], []
        for s in shards:
            shard = confined_path(self.root, s.get("file"), "shard file", source)  # never outside the cache
            if not Path(s["file"]).match(SHARD_GLOB):
                raise CheckpointError(f"{source}: shard file {s['file']!r} is not named like {SHARD_GLOB}")
            t = load_tensors(shard)  # CheckpointError on a missing or corrupt shard
            z, y = t.get("latents"), t.get("labels")
            if z is None or y is None or len(z) != s["count"] or len(y) != s["count"] or \
                    list(z.shape[1:]) != m["latent_shape"]:
                raise CheckpointError(f"{self.root / s['file']} does not match {MANIFEST}; encode the cache again")
            latents.append(z)
            labels.append(y)
        self.latents = torch.cat(latents)  # (N, C, h, w)
        self.labels = torch.cat(labels)  # (N,)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["latent_shape"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names") or [])

    @property
    def vae(self) -> dict:
        """path, name, fingerprint and scale factor of the VAE the latents came from."""
        return self.manifest["vae"]

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int):
        return self.latents[i], int(self.labels[i])


def open_training_cache(train_config) -> LatentCacheDataset | None:
    """The cache a `TrainConfig` with ``dataset="latents:DIR"`` trains on (None otherwise), checked
    against its model config and, when it names one, its autoencoder. Raises ValueError (one line)."""
    from ..models.autoencoder import codec_fingerprint, resolve_codec_path

    path = cache_path(train_config.dataset)
    if path is None:
        return None
    cache = LatentCacheDataset(path)
    model = train_config.model
    want = (model.in_channels, *model.hw)
    if cache.latent_shape != want:
        c, h, w = cache.latent_shape
        raise ValueError(f"latent cache {path} holds {c}x{h}x{w} latents (channels x height x width), but the model "
                         f"config expects in_channels={want[0]}, input_size={want[1]}x{want[2]}; "
                         f"use a model preset for these latents (e.g. shapes-latent for 4x8x8)")
    if model.num_classes and len(cache) and int(cache.labels.max()) >= model.num_classes:
        raise ValueError(f"latent cache {path} has labels up to {int(cache.labels.max())}, but the model config "
                         f"has num_classes={model.num_classes}")
    if train_config.autoencoder is not None:
        named = resolve_codec_path(train_config.autoencoder)
        if codec_fingerprint(named) != cache.vae["fingerprint"]:
            raise ValueError(f"latent cache {path} was encoded with {cache.vae['path']}, but the training config "
                             f"names a different autoencoder ({named})")
    return cache


def cache_class_names(dataset: str) -> list[str]:
    """Class names recorded in the manifest of a ``"latents:DIR"`` dataset ([] if unknown or gone)."""
    path = cache_path(dataset)
    try:
        return list(load_json(path / MANIFEST).get("class_names") or []) if path is not None else []
    except CheckpointError:
        return []


def describe(manifest: dict) -> str:
    """One line about a cache: count, shape, VAE and source."""
    src = manifest["source"]
    data = "shapes" if src["type"] == "shapes" else src["path"]
    return (f"{manifest['num_latents']} latents {'x'.join(map(str, manifest['latent_shape']))} of {data} "
            f"({src['image_size'][0]}x{src['image_size'][1]}) by {manifest['vae']['name']}")
