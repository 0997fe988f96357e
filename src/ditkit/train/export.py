"""Turn a training run into a model folder (the EMA weights + everything needed to sample).

    ditkit export --run runs/shapes-repa --out shapes-dit --dtype float32 --cfg-scale 3

The folder gets ``model.safetensors`` + ``config.json`` (see `ditkit.pipelines.folder`), with the run's
training summary (steps, wall time, recipe) in config.json and a copy of ``train_log.jsonl``.
A latent run's autoencoder is copied into the folder as ``autoencoder/`` (self-contained), a
text-to-image run's word encoder (its EMA weights, with the vocabulary) as ``text_encoder/``.
A text-to-video run becomes a video model folder (`ditkit.pipelines.video`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..data.latent_cache import cache_class_names
from ..diffusion.flow import FlowMatching
from ..io.checkpoint import CheckpointError, atomic_dir, load_json, load_tensors
from ..models.autoencoder import codec_fingerprint, resolve_codec_path
from ..pipelines.folder import SamplingDefaults, save_pipeline, save_video_pipeline
from ..shapes.data import CLASSES
from .trainer import TrainConfig, build_run_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


WEIGHTS = {"ema": "ema.safetensors", "raw": "model.safetensors"}


def export_run(run_dir: str | Path, out_dir: str | Path, *, defaults: SamplingDefaults | None = None,
               dtype: str = "float32", command: str | None = None, weights: str = "ema") -> dict:
    """Write the run's latest checkpoint as a model folder; ``weights`` "ema" (default) or "raw"
    (the optimiser's current weights, e.g. to probe a run mid-training)."""
    run_dir = Path(run_dir)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint to export (missing checkpoints/latest)")
    from ..io.confined import read_pointer

    ckpt = read_pointer(pointer, "the latest checkpoint")  # inside checkpoints/, never outside the run
    state = load_json(ckpt / "state.json")
    cfg = TrainConfig.from_dict(state["train_config"])
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    model = build_run_model(cfg)
    model.load_state_dict(load_tensors(ckpt / WEIGHTS[weights]))
    summary = {
        "steps": state["step"],
        "weights": weights,
        "training_minutes": round(state["elapsed_seconds"] / 60, 1),
        "samples_seen": state["step"] * cfg.batch_size,
        "recipe": cfg.to_dict(),
        "command": command,
    }
    autoencoder = None
    if cfg.autoencoder is not None:
        autoencoder = resolve_codec_path(cfg.autoencoder)
        trained_with = state.get("autoencoder_fingerprint")
        if trained_with is not None and trained_with != codec_fingerprint(autoencoder):
            raise CheckpointError(f"{run_dir} was trained with a different autoencoder than {autoencoder} holds now")
    common = {"defaults": defaults, "dtype": DTYPES[dtype], "extra": {"training": summary}, "autoencoder": autoencoder}
    with atomic_dir(out_dir) as tmp:  # the folder and its training log take the place of out_dir together
        if cfg.video is not None:  # TextToVideo -> a video model folder
            save_video_pipeline(tmp, model.dit, FlowMatching(cfg.flow), model.encoder, **common)
        else:
            text = getattr(cfg.model, "text_dim", None) is not None
            class_names = [] if text else list(CLASSES) if cfg.dataset == "shapes" else cache_class_names(cfg.dataset)
            dit, encoder = (model.dit, model.encoder) if text else (model, None)
            save_pipeline(tmp, dit, FlowMatching(cfg.flow), class_names=class_names, text_encoder=encoder, **common)
        log = run_dir / "train_log.jsonl"
        if log.is_file():
            shutil.copyfile(log, tmp / "train_log.jsonl")
    return summary
