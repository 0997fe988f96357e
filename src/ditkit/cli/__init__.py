"""ditkit command line: generate, train, export, train-classifier, eval, info, and the accel, compress,
interop and data commands (one module each in this package).

Every user error (bad argument, unknown class, missing or corrupt checkpoint, shape mismatch)
ends in one line on stderr and exit status 2 — never a traceback. Set DITKIT_DEBUG=1 to see
the traceback of an unexpected internal error.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli_types import UserError
from ..version import __version__
from . import accel, compress, data, evaluate, generate, info, interop, train
from .parser import ModeError, Parser


def build_parser() -> argparse.ArgumentParser:
    """The ``ditkit`` parser. ``generate`` and ``eval`` hold their video mode's parser as ``.video``."""
    p = Parser(prog="ditkit", description="Train, sample, accelerate, compress and serve DiTs.")
    p.add_argument("--version", action="version", version=f"ditkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    generate.register(sub)
    train.register(sub)
    evaluate.register(sub)
    interop.register(sub)
    accel.register(sub)
    bench = sub.add_parser("bench", help="benchmarks on identical seeds: accel (caching, forecasting, RAS), "
                                         "compress (quantized and pruned folders)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    accel.add_bench_accel(bench_sub)
    compress.add_bench_compress(bench_sub)
    data.register(sub)
    compress.register(sub)
    info.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ModeError as e:  # an option of the other mode (image vs video)
        print(f"ditkit {e.command}: error: {e}", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"ditkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("DITKIT_DEBUG"):
            raise
        print(f"ditkit {args.command}: internal error: {type(e).__name__}: {e} (set DITKIT_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
    return 0
