"""The README stays short, its links resolve, and its Python snippets run as pasted.

Each ```python block of README.md runs in a fresh namespace, in a temporary working directory that
sees the repository's assets/, with sampling cut to a few steps so the whole file runs in seconds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FAST_STEPS = 2

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def relative_links(path: Path) -> list[str]:
    """Markdown link targets of `path` that point into the repository (no URL, no bare anchor)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # links inside code blocks are not links
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_readme_is_at_most_250_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_readme_has_python_snippets():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 4


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    missing = [t for t in relative_links(doc) if not (doc.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


@pytest.fixture
def fast_sampling(monkeypatch, tmp_path):
    """Few sampler steps everywhere the snippets sample, and a working directory with assets/ in it."""
    import torch

    import ditkit
    from ditkit import pipelines
    from ditkit.models.dit import DiT
    from ditkit.models.reference import to_reference_state_dict

    def fewer_steps(fn):
        def wrapped(*args, **kwargs):
            kwargs["steps"] = FAST_STEPS
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ditkit, "sample", fewer_steps(ditkit.sample))
    monkeypatch.setattr(pipelines.Pipeline, "generate", fewer_steps(pipelines.Pipeline.generate))
    monkeypatch.setattr(pipelines.VideoPipeline, "generate", fewer_steps(pipelines.VideoPipeline.generate))
    # the reference checkpoint snippet: a DiT-S/8 in the reference's file format stands in for the download
    torch.manual_seed(0)
    torch.save(to_reference_state_dict(DiT(ditkit.get_preset("DiT-S/8"))), tmp_path / "DiT-XL-2-256x256.pt")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return tmp_path


def tiny_sd_vae(folder: Path) -> None:
    """A tiny random diffusers AutoencoderKL in the SD-VAE layout (4 latent channels, 8x down) stands in for the
    SD-VAE download; without diffusers there is none, and the snippet's `if vae_dir.exists()` skips decoding."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        return
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  sample_size=32).save_pretrained(folder)


@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text(encoding="utf-8")))))
def test_readme_snippet_runs(index: int, fast_sampling: Path, capsys):
    code = python_blocks(README.read_text(encoding="utf-8"))[index]
    if '"sd-vae-ft-ema"' in code:
        tiny_sd_vae(fast_sampling / "sd-vae-ft-ema")
    before = set(fast_sampling.iterdir())
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    written = set(fast_sampling.iterdir()) - before
    assert written or "save_" not in code, "a snippet that saves wrote nothing"
    for path in written:  # whatever a snippet writes is a complete file
        assert path.stat().st_size > 0, path


def test_cli_reference_page_renders_every_subcommand(monkeypatch):
    """docs/hooks/cli_reference.py builds the CLI page from the parsers: every subcommand gets a section."""
    import argparse
    import importlib

    from ditkit.cli import build_parser

    monkeypatch.syspath_prepend(str(ROOT / "docs" / "hooks"))  # the mkdocs hook, as mkdocs loads it
    hook = importlib.import_module("cli_reference")
    page = hook.on_page_markdown(f"# CLI\n\n{hook.MARKER}\n", None, None, None)
    assert hook.MARKER not in page

    def names(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield " ".join([*path, name])
                    yield from names(sub, [*path, name])

    expected = list(names(build_parser(), []))
    assert "bench accel" in expected and "bench compress" in expected
    for name in expected:
        assert f"`ditkit {name}`" in page, name
    assert "`ditkit generate --video`" in page
