"""Every file the commands of the README and of the docs pages write, and every default output, is ignored by git."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")

OUTPUT = re.compile(r"""(?:--(?:out|json|grid|report|plot|full-samples)\s+|save_(?:grid|video)\([^,]+,\s*["'])([\w./-]+)""")
PLACEHOLDER = re.compile(r"[A-Z_]+")  # --out M, --json J, --out NAME: a name the reader chooses
DEFAULTS = ["demo.png", "samples.png", "samples.gif", "classifier/config.json", "runs/shapes-tiny/train_config.json",
            "shapes-dit-w8a8/config.json", "shapes-dit-vq2/config.json", "shapes-dit-teacache.json",
            "bench-accel/bench.json", "bench-compress/bench.json", "site/index.html"]


def ignored(path: str) -> bool:
    probe = path.rstrip("/") + ("/file" if not Path(path).suffix else "")
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT).returncode == 0


def documented_outputs() -> list[str]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if doc.is_file():
            found += OUTPUT.findall(doc.read_text())
    return [p for p in dict.fromkeys(found) if not p.startswith(("assets/", "docs/")) and not PLACEHOLDER.fullmatch(p)]


def test_quickstart_outputs_are_ignored():
    outputs = documented_outputs()
    assert {"stars.png", "hearts.png", "circle.gif", "metrics.json"} <= set(outputs)
    assert {"bench-w4a8-d4", "full-2000x25.safetensors", "curve.json"} <= set(outputs)  # results pages' commands
    assert [p for p in outputs if not ignored(p)] == []


def test_default_outputs_are_ignored():
    assert [p for p in DEFAULTS if not ignored(p)] == []
    assert not ignored("README.md") and not ignored("assets/shapes-dit/config.json") and not ignored("docs/samples.png")
