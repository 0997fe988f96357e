"""Any model folder as a pipeline, by its kind: `load` and the kind -> loader table `LOADERS`.

This module sits above the image and video pipelines (it imports both), so the folder format
(`ditkit.pipelines.folder`) stays below them and names no loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..io.checkpoint import CheckpointError
from .folder import IMAGE_KIND, QUANTIZED_KIND, VIDEO_KIND, folder_kind, folder_of
from .image import Pipeline, load_pipeline
from .video import VideoPipeline, load_video_pipeline

# kind -> the loader of a folder of that kind, (path, device="cpu", **options) -> pipeline
LOADERS: dict[str, Callable[..., Pipeline | VideoPipeline]] = {
    IMAGE_KIND: load_pipeline,
    QUANTIZED_KIND: load_pipeline,
    VIDEO_KIND: load_video_pipeline,
}


def load(path: str | Path, device: str | torch.device = "cpu", **options) -> Pipeline | VideoPipeline:
    """The pipeline of the model folder at ``path``, by its kind (`LOADERS`): a `Pipeline` for the image
    kinds, a `VideoPipeline` for a video folder. Raises CheckpointError (one clear line) on any problem."""
    kind = folder_kind(path)
    if kind not in LOADERS:
        if not (folder_of(path) / "config.json").is_file():
            raise CheckpointError(f"{path} is not a ditkit model folder (needs model.safetensors and config.json)")
        raise CheckpointError(f"{path} is not a ditkit model folder this version reads (kind={kind!r})")
    return LOADERS[kind](path, device=device, **options)
