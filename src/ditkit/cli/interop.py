"""``ditkit convert SRC DST --to FORMAT``: the command-line face of ``ditkit.interop.convert``.

    ditkit convert DiT-XL-2-256x256.pt models/dit-xl --to ditkit
    ditkit convert models/dit-xl models/dit-xl-diffusers --to diffusers --allow-numerics-change
    ditkit convert path/to/diffusers/DiT-XL-2-256 models/from-diffusers --to ditkit

``register(subparsers)`` adds the subcommand to ditkit's parser (``ditkit.cli`` wires it). Errors are
``ValueError``s (``CheckpointError`` included), which ditkit's ``main`` prints as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .. import cli_types as T
from .parser import Parser

FORMATS = ("ditkit", "diffusers", "reference")
DTYPES = ("float32", "float16", "bfloat16")


def cmd_convert(args: argparse.Namespace) -> None:
    import torch

    from ..cli_types import new_output
    from ..interop.convert import convert

    new_output(args.dst, True, inputs=[args.src], flag="DST")  # never onto or inside SRC (existing DST: convert's rule)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    command = "ditkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if args.record_command else None
    result = convert(args.src, args.dst, to=args.to, allow_numerics_change=args.allow_numerics_change,
                     overwrite=args.overwrite, dtype=dtype, source_format=args.source_format,
                     num_heads=args.num_heads, command=command)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"converted {result['source_format']} -> {result['format']}: {result['dst']} "
          f"({result['parameters']:,} parameters)")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``convert`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``); returns its parser."""
    p = subparsers.add_parser(
        "convert", help="convert between the reference DiT checkpoint, a diffusers folder and a ditkit folder",
        description="Convert a DiT between formats. The source format is detected: a reference .pt/.pth/.safetensors "
                    "file (read without executing code), a diffusers DiTTransformer2DModel folder (or pipeline root), "
                    "or a ditkit model folder.",
    )
    p.add_argument("src", type=T.text, help="source checkpoint file or model folder")
    p.add_argument("dst", type=T.text, help="destination: a folder (ditkit, diffusers) or a .safetensors/.pt file (reference)")
    p.add_argument("--to", required=True, choices=FORMATS, help="target format")
    p.add_argument("--source-format", choices=FORMATS, help="skip detection and read SRC as this format")
    p.add_argument("--allow-numerics-change", action="store_true",
                   help="allow a target that computes the model with slightly different numerics "
                        "(reference <-> diffusers: timestep-frequency divisor, pre-MLP LayerNorm eps)")
    p.add_argument("--num-heads", type=T.positive(4_096),
                   help="head count of a reference checkpoint that is not a DiT-S/B/L/XL size")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--dtype", choices=DTYPES, help="weights dtype to write (default: float32)")
    p.add_argument("--no-record-command", dest="record_command", action="store_false",
                   help="do not record this command line in the model card")
    if isinstance(p, Parser):  # ditkit's parser (a plain argparse one takes the options alone)
        p.requires("--num-heads", lambda a: a.source_format in (None, "reference"),
                   "a reference checkpoint (other formats record their head count)")
    p.set_defaults(func=cmd_convert)
    return p
