"""Which outputs a command may replace: never an input, never what ditkit did not write (without --overwrite).

The rules every writing command applies to its ``--out`` (``--json``, ``--report``, ...) before any work:

1. An output may not be, contain or lie inside one of the command's inputs (``export --out R --run R``,
   ``quantize --out M --model M``): refused, whatever the flags.
2. Nothing there yet, or an empty folder: written.
3. An output ditkit wrote (`ditkit_wrote`: a model folder whose ``config.json`` names one of ditkit's
   kinds, a benchmark folder, a JSON report of the same command, an image beside its options record)
   is replaced — atomically, the old one in place until the new one is complete. Commands whose
   ``--overwrite`` predates these rules (``quantize``, ``convert``, ``encode``) still ask for it.
4. Anything else is refused unless ``--overwrite`` is given.

Before the checks the path is tidied (`ditkit.io.atomic.tidy`): a swap a kill interrupted is undone and
dead temporary files are removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .atomic import tidy

MODEL_KINDS = ("ditkit-", "shapes-classifier")
BENCH_FILES = {"bench.json", "bench.md", "bench.png"}


class OutputError(ValueError):
    """An output path that may not be written (one line for the CLI)."""


def _resolved(p) -> Path:
    return Path(os.path.abspath(Path(p).expanduser())).resolve()


def overlaps(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same path or one lies inside the other (symlinks resolved)."""
    a, b = _resolved(a), _resolved(b)
    return a == b or a in b.parents or b in a.parents


def _json_object(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def model_folder(path: Path) -> bool:
    """A folder ditkit wrote as a model: ``config.json`` with one of ditkit's kinds."""
    info = _json_object(path / "config.json") if path.is_dir() else None
    kind = info.get("kind") if info else None
    return isinstance(kind, str) and kind.startswith(MODEL_KINDS)


def bench_folder(path: Path) -> bool:
    """A folder of ``ditkit bench``: bench.json and nothing but bench.{json,md,png}."""
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return "bench.json" in names and names <= BENCH_FILES and _json_object(path / "bench.json") is not None


def json_with(*keys: str) -> Callable[[Path], bool]:
    """A JSON report of ditkit: an object holding all of ``keys`` (a command's signature)."""
    def check(path: Path) -> bool:
        d = _json_object(path) if path.is_file() else None
        return d is not None and all(k in d for k in keys)
    return check


def with_options_record(path: Path) -> bool:
    """An image or clip of ``ditkit generate``: the options record ``<file>.json`` lies beside it."""
    return path.is_file() and json_with("options")(Path(f"{path}.json"))


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def claim(path, *, overwrite: bool, inputs: Iterable = (), ditkit_wrote: Callable[[Path], bool] | None = None,
          ask: bool = False, flag: str = "--out", folder: bool | None = None) -> Path:
    """``path`` as a `Path` once the rules above allow writing it; else `OutputError` with one line.

    ``inputs`` are the command's input paths (None entries skipped); ``ditkit_wrote`` recognises an
    output of this command; ``ask`` makes every existing output need ``--overwrite``; ``folder`` (when
    known) refuses a file where a folder goes and the other way round."""
    path = Path(path)
    for inp in inputs:
        if inp is not None and str(inp) != "" and overlaps(path, inp):
            raise OutputError(f"{flag} {path} is, holds or lies inside the input {inp}: write it elsewhere")
    if path.parent.is_dir():
        tidy(path)
    if not os.path.lexists(path):
        return path
    if folder is True and path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file: a folder goes there")
    if folder is False and path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: a file goes there")
    if overwrite or (not ask and _empty_dir(path)):
        return path
    if ask:
        raise OutputError(f"{flag} {path} exists: give --overwrite to replace it, or another {flag}")
    if ditkit_wrote is not None and ditkit_wrote(path):
        return path
    raise OutputError(f"{flag} {path} exists and ditkit did not write it: give --overwrite to replace it, "
                      f"or another {flag}")
