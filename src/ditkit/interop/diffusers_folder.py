"""diffusers DiT model folders, read and written without diffusers.

    export_diffusers(model, "out/transformer")     # config.json + diffusion_pytorch_model.safetensors
    model = import_diffusers("out/transformer")     # reads those two files; diffusers need not be installed

The folder is diffusers' own ``save_pretrained`` layout (checked against diffusers 0.42.1): a
``config.json`` holding every ``DiTTransformer2DModel.__init__`` argument plus ``_class_name`` and
``_diffusers_version``, and the weights in ``diffusion_pytorch_model.safetensors`` (metadata
``{"format": "pt"}``). On import, a pipeline folder (``model_index.json`` + ``transformer/``), a sharded
``*.safetensors.index.json`` and a legacy ``Transformer2DModel`` DiT config are accepted too; a legacy
``diffusion_pytorch_model.bin`` is read with ``weights_only=True`` (no code from the file runs).

The key table, the config mapping and the numerics rules (export refuses numerics diffusers cannot express
unless ``allow_numerics_change=True``) are in ``diffusers_dit.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..io.checkpoint import CheckpointError, atomic_dir, load_json, load_tensors, load_torch_file
from ..models.dit import DiT
from .diffusers_dit import (
    CLASS_NAME,
    LEGACY_CLASS_NAME,
    diffusers_config,
    model_from_diffusers_state,
    to_diffusers_state_dict,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
LAYOUT_VERSION = "0.42.1"  # the diffusers version this layout was checked against (written if diffusers is absent)


def _diffusers_version() -> str:
    try:
        import diffusers
    except ImportError:
        return LAYOUT_VERSION
    return diffusers.__version__


def export_diffusers(model: DiT, folder: str | os.PathLike, *, allow_numerics_change: bool = False,
                     dtype: torch.dtype | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` as a diffusers ``DiTTransformer2DModel`` folder (replaced atomically as a whole).

    ``dtype``: weights dtype (default: the model's). Refuses numerics diffusers cannot express unless
    ``allow_numerics_change`` (module doc). ``extra`` (JSON) is stored in config.json under ``"_ditkit"``,
    which diffusers ignores (it drops config keys starting with "_"). Returns the folder.
    """
    from safetensors.torch import save_file

    cfg = model.config
    config = {"_class_name": CLASS_NAME, "_diffusers_version": _diffusers_version(),
              **diffusers_config(cfg, allow_numerics_change=allow_numerics_change)}
    if extra:
        config["_ditkit"] = extra
    tensors = to_diffusers_state_dict(model.state_dict(), cfg.depth)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    tensors = {k: v.cpu() for k, v in tensors.items()}
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def resolve_diffusers_folder(path: str | os.PathLike) -> Path | None:
    """The model folder holding a diffusers DiT's config.json (a pipeline root resolves to ``transformer/``),
    or None if ``path`` does not look like one."""
    path = Path(path)
    if path.is_dir() and (path / "model_index.json").is_file() and (path / "transformer").is_dir():
        path = path / "transformer"
    if not path.is_dir() or not (path / CONFIG_NAME).is_file():
        return None
    if not any((path / n).is_file() for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, LEGACY_WEIGHTS_NAME)):
        return None
    try:
        name = json.loads((path / CONFIG_NAME).read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return path if name in (CLASS_NAME, LEGACY_CLASS_NAME) else None


def read_diffusers_folder(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(state_dict, config dict, model folder) of a diffusers DiT folder, read without diffusers."""
    folder = resolve_diffusers_folder(path)
    if folder is None:
        raise CheckpointError(f"{path} is not a diffusers {CLASS_NAME} folder (needs {CONFIG_NAME} with "
                              f"_class_name {CLASS_NAME!r} and {WEIGHTS_NAME})")
    config = load_json(folder / CONFIG_NAME)
    if (folder / WEIGHTS_NAME).is_file():
        sd = load_tensors(folder / WEIGHTS_NAME)
    elif (folder / WEIGHTS_INDEX_NAME).is_file():  # sharded: {"weight_map": {key: shard file}}
        index = load_json(folder / WEIGHTS_INDEX_NAME)
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{folder / WEIGHTS_INDEX_NAME}: empty weight_map")
        sd = {}
        for shard in shards:
            if Path(shard).name != shard:
                raise CheckpointError(f"{folder / WEIGHTS_INDEX_NAME}: shard {shard!r} is not a file in the folder")
            sd.update(load_tensors(folder / shard))
    else:
        sd = load_torch_file(folder / LEGACY_WEIGHTS_NAME)
        if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            raise CheckpointError(f"{folder / LEGACY_WEIGHTS_NAME}: not a state dict of named tensors")
    return sd, config, folder


def import_diffusers(path: str | os.PathLike) -> DiT:
    """A ditkit DiT (eval, float32, CPU) from a diffusers DiT folder; it reproduces diffusers' outputs."""
    sd, config, folder = read_diffusers_folder(path)
    return model_from_diffusers_state(sd, config, where=str(folder))
