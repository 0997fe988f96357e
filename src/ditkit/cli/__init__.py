"""ditkit command line: generate, train, export, train-classifier, eval, info, and the accel, compress,
interop and data commands (one module each in this package).

Every user error (bad argument, unknown class, missing or corrupt checkpoint, shape mismatch, and what the
operating system refuses: a missing file, a read-only or full disk, a file where a folder should be, no
permission) ends in one line on stderr and exit status 2 — never a traceback; the usage block is printed
only by ``--help``. Exit status 1 is kept for ditkit's own bugs ("internal error"); set DITKIT_DEBUG=1 to
see their traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli_types import UserError
from ..version import __version__
from . import accel, compress, data, evaluate, generate, info, interop, train
from .parser import Parser, UsageError


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


def _say(command: str, message: object, kind: str = "error") -> None:
    """``ditkit <command>: <kind>: <message>`` as one line on stderr."""
    line = " ".join(str(message).splitlines()) or "(no message)"
    print(f"ditkit {command}: {kind}: {line}", file=sys.stderr)


def os_error(e: OSError) -> str:
    """An operating-system refusal in the user's words: ``<path>: <reason>`` (both paths of a rename)."""
    reason = e.strerror or str(e)
    if e.filename is None:
        return reason
    if getattr(e, "filename2", None) is not None:
        return f"{e.filename} -> {e.filename2}: {reason}"
    return f"{e.filename}: {reason}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:  # an option of the other mode (image vs video), options that do not go together
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    command = args.command if getattr(args, "bench_command", None) is None else f"bench {args.bench_command}"
    try:
        args.func(args)
    except (UserError, ValueError) as e:
        _say(command, e)
        return 2
    except KeyboardInterrupt:
        print(f"ditkit {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except OSError as e:  # the user's files or disk: missing, read-only, full, a file for a folder, no permission
        _say(command, os_error(e))
        return 2
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("DITKIT_DEBUG"):
            raise
        _say(command, f"{type(e).__name__}: {e} (set DITKIT_DEBUG=1 for details)", "internal error")
        return 1
    return 0
