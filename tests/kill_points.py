"""Kill a writer at its k-th rename, write or delete, for every k: the helpers of the kill tests.

`count_points(fn)` runs ``fn`` once in this process and counts the calls to the operations a kill can
fall between (``os.replace``, ``os.rename``, the folder exchange of `ditkit.io.atomic`, ``os.unlink``,
``shutil.rmtree`` and opening a file for writing). `killed_at(fn, k)` runs ``fn`` in a forked child
that dies (``os._exit``, so no ``finally`` and no clean-up runs, as under ``kill -9``) just before its
k-th such call. `fingerprint(path)` is the content of a file or folder, to compare the output after the
kill with the complete old and new outputs; `leftovers(folder)` lists the hidden temporary entries.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import ditkit.io.atomic as atomic

KILLED = 137


def _targets():
    """(owner, attribute) of every operation a kill is injected before."""
    return [(os, "replace"), (os, "rename"), (os, "unlink"), (shutil, "rmtree"), (atomic, "exchange"),
            (builtins, "open"), (io, "open")]


def _writing(name: str, args, kwargs) -> bool:
    if name != "open":
        return True
    mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
    return isinstance(mode, str) and any(c in mode for c in "wax+")


@contextlib.contextmanager
def _instrumented(on_call):
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in _targets()]
    for owner, attr, fn in saved:
        def wrapper(*args, _fn=fn, _name=attr, **kwargs):
            if _writing(_name, args, kwargs):
                on_call(_name)
            return _fn(*args, **kwargs)
        setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def count_points(fn) -> int:
    """How many renames, writes and deletes ``fn()`` makes (it runs here, for real)."""
    calls = []
    with _instrumented(calls.append):
        fn()
    return len(calls)


def killed_at(fn, k: int, timeout: float = 120.0) -> int:
    """Run ``fn()`` in a forked child killed just before its k-th (1-based) rename/write/delete; the exit status
    (`KILLED` when the kill point was reached, 0 when ``fn`` finished first)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            import torch

            torch.set_num_threads(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            n = [0]

            def on_call(name):
                n[0] += 1
                if n[0] == k:
                    os._exit(KILLED)

            with _instrumented(on_call):
                fn()
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a child must never fall back into the test runner
            os._exit(3)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError(f"the child killed at point {k} did not finish in {timeout} s")
        time.sleep(0.01)


_TIMING = re.compile(r"time|second|speed|elapsed|latency|_s$|_ms$|^s$|^ms$|command|^message$")


def _steady(v):
    """A JSON value without the fields that differ between two identical runs (timings, the command line)."""
    if isinstance(v, dict):
        return {k: _steady(x) for k, x in sorted(v.items()) if not _TIMING.search(k)}
    if isinstance(v, list):
        return [_steady(x) for x in v]
    return v


def _file_print(p: Path):
    data = p.read_bytes()
    if p.suffix == ".json":
        try:
            return json.dumps(_steady(json.loads(data)), sort_keys=True)
        except ValueError:
            return "corrupt:" + hashlib.sha256(data).hexdigest()
    if p.suffix in (".md", ".png") and p.parent.name and (p.parent / "bench.json").exists():
        return f"present:{len(data) > 0}"  # a benchmark's table and plot hold timings
    return hashlib.sha256(data).hexdigest()


def fingerprint(path: Path):
    """A file's content, a folder's {relative path: content} (hidden entries included), or None when absent;
    JSON compared without timings, a benchmark's table and plot only as present."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    if path.is_file():
        return _file_print(path)
    return {str(p.relative_to(path)): _file_print(p) for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary entries (``.NAME.<pid>...tmp``, ``.NAME.ditkit-old-<pid>``) in ``folder`` and below."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*")
                  if p.name.endswith(".tmp") or ".ditkit-old-" in p.name)


def cli(argv: list[str]):
    """A callable running ``ditkit argv`` in this process, asserting exit 0."""
    def run():
        from ditkit.cli import main

        code = main([str(a) for a in argv])
        if code != 0:
            print(f"ditkit {argv[0]} exited {code}", file=sys.stderr)
            raise SystemExit(code)
    return run
