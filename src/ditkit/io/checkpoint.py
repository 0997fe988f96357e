"""Files: safetensors + JSON, written atomically, read without executing code.

* ``atomic_write(path)`` / ``atomic_dir(path)`` (from `ditkit.io.atomic`) — a temporary file or
  folder beside ``path`` that takes its place only when complete, so a reader never sees a
  half-written output and an old one stays at the path until the new one is there.
* ``save_model`` / ``load_model_files`` / ``model_folder`` — a model folder: ``model.safetensors`` (weights) and
  ``config.json`` (``{"kind": ..., "config": {...}, ...}``).
* ``load_torch_file`` — reads reference ``.pt`` files with ``weights_only=True`` only.

Every failure to read a user's file raises ``CheckpointError`` with one clear line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir, atomic_write, usual_mode

__all__ = ["CheckpointError", "atomic_dir", "atomic_write", "usual_mode", "save_json", "load_json", "save_tensors",
           "load_tensors", "check_state_dict", "save_model", "model_folder", "load_model_files", "load_torch_file"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe or does not fit the model."""


def save_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt safetensors file {path}: {str(e).splitlines()[0]}") from None


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source,
                     check_dtype: bool = False) -> None:
    """Raise CheckpointError unless `state` has exactly the keys of `expected`, with the same shapes
    (and dtypes, for packed low-bit tensors whose dtype is part of the format)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        want = expected[k]
        if v.shape != want.shape or (check_dtype and v.dtype != want.dtype):
            got = f"{v.dtype} " if check_dtype else ""
            need = f"{want.dtype} " if check_dtype else ""
            raise CheckpointError(f"{source}: {k} has shape {got}{tuple(v.shape)}, the config needs {need}{tuple(want.shape)}")


def save_model(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor], info: dict,
               subfolders: dict[str, str | os.PathLike] | None = None) -> None:
    """Write a model folder (``model.safetensors`` + ``config.json``) atomically as a whole.

    ``subfolders`` maps a name inside the folder to a directory copied there (e.g. the autoencoder).
    """
    with atomic_dir(folder) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for name, src in (subfolders or {}).items():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns(".*"))


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder at ``path`` (or holding the ``model.safetensors`` at ``path``); CheckpointError unless it
    exists and holds both ``model.safetensors`` and ``config.json``."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not folder.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder} is not a ditkit model folder (needs model.safetensors and config.json)")
    return folder


def load_model_files(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a model folder (or the ``model.safetensors`` inside one): (state_dict, info)."""
    folder = model_folder(path)
    info = load_json(folder / "config.json")
    return load_tensors(folder / "model.safetensors"), info


def load_torch_file(path: str | os.PathLike):
    """Load a ``.pt``/``.pth`` file with ``weights_only=True`` (no code from the file is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        # The reference training checkpoints store their argparse Namespace under "args";
        # it carries only plain values, so it is the one class allowed beyond tensors.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "refused or corrupt"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing to load {path}: not a weights-only torch file ({first[:200]})"
        ) from None
