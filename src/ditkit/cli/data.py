"""``ditkit encode``: the command-line face of ``ditkit.data.latent_cache``.

    ditkit encode --data shapes --vae assets/shapes-ae --out caches/shapes-ae --num 50000
    ditkit encode --data photos/ --vae sd-vae-ft-ema --out caches/photos --image-size 256
    ditkit train --preset shapes-latent --data latents:caches/shapes-ae

``register(subparsers)`` adds the subcommand to ditkit's parser (``ditkit.cli`` wires it). Errors are
``ValueError``s (``CheckpointError`` included), which ditkit's ``main`` prints as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import functools

from .. import cli_types as T


def cmd_encode(args: argparse.Namespace) -> None:
    import torch

    from ..cli_types import new_output
    from ..data.latent_cache import EncodeConfig, describe, encode_dataset

    inputs = [None if args.data == "shapes" else args.data, args.vae]
    new_output(args.out, True, inputs=inputs, folder=True)  # never inside an input; a folder there: the cache's rules
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EncodeConfig(data=args.data, vae=args.vae, out=args.out, num=args.num, image_size=args.image_size,
                       seed=args.seed, batch_size=args.batch_size, shard_size=args.shard_size, overwrite=args.overwrite)
    manifest = encode_dataset(cfg, log=(lambda *a: None) if args.quiet else functools.partial(print, flush=True))
    print(f"{args.out}: {describe(manifest)}; train with --data latents:{args.out}")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``encode`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``); returns its parser."""
    p = subparsers.add_parser(
        "encode", help="encode a dataset's images into latents cached on disk for training",
        description="Encode images with a VAE (a ditkit autoencoder or a diffusers AutoencoderKL folder) into "
                    "scaled latents, cached as safetensors shards + manifest.json. Interrupted runs resume when "
                    "the same command is run again.",
    )
    p.add_argument("--data", type=T.text, required=True, help="'shapes' or an image folder (one sub-folder per class, or flat)")
    p.add_argument("--vae", type=T.text, required=True,
                   help="autoencoder folder: ditkit's (e.g. assets/shapes-ae) or a diffusers "
                        "AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors)")
    p.add_argument("--out", type=T.text, required=True,
                   help="cache folder to write (new, empty or a cache of ditkit encode; never "
                        "inside --data or --vae)")
    p.add_argument("--num", type=T.positive(10**8), help="images to encode (default: 50000 for shapes, all of a folder)")
    p.add_argument("--image-size", type=T.positive(T.MAX_IMAGE_SIZE), default=32, help="image side fed to the VAE (default 32)")
    p.add_argument("--seed", type=T.seed, default=0, help="dataset seed of the shapes renders")
    p.add_argument("--batch-size", type=T.batch_size, default=64, help="images per VAE forward")
    p.add_argument("--shard-size", type=T.positive(T.MAX_COUNT), default=4096, help="latents per shard file")
    p.add_argument("--overwrite", action="store_true", help="replace a finished cache of other data or another VAE")
    p.add_argument("--threads", type=T.threads_arg, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_encode)
    return p
