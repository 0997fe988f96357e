"""Run a benchmark script as its users do, ``python benchmarks/NAME.py ARGS``, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The finished process (``returncode``, ``stdout``, ``stderr`` as text) of benchmarks/<name>.py."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *map(str, args)], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=900)
