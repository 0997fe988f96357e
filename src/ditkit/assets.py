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


def default_classifier_dir() -> Path:
    return assets_dir() / "classifier"
