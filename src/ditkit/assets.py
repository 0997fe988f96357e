"""Where the bundled model and classifier live.

They are committed under ``assets/`` at the repository root. ``DITKIT_ASSETS`` overrides the
location (e.g. for a wheel install that keeps the assets elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    env = os.environ.get("DITKIT_ASSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "assets"


def default_model_dir() -> Path:
    return assets_dir() / "shapes-dit"


def default_text_model_dir() -> Path:
    return assets_dir() / "shapes-t2i"


def default_video_model_dir() -> Path:
    return assets_dir() / "shapes-t2v"


def default_classifier_dir() -> Path:
    return assets_dir() / "classifier"


def resolve_asset_path(path, what: str, base: Path | None = None) -> Path:
    """`path` as given if it exists; else relative to `base` (e.g. a model folder); else under the
    assets dir (``"assets/x"`` or ``"x"``). Raises CheckpointError("no such <what>: <path>")."""
    from .io.checkpoint import CheckpointError

    p = Path(path)
    if p.exists():
        return p
    candidates = [] if p.is_absolute() else [base / p] if base is not None else []
    if not p.is_absolute():
        candidates.append(assets_dir() / p)
        if p.parts[0] == "assets":  # "assets/shapes-ae" from outside the repo root
            candidates.append(assets_dir().joinpath(*p.parts[1:]))
    for c in candidates:
        if c.exists():
            return c
    raise CheckpointError(f"no such {what}: {path}")
