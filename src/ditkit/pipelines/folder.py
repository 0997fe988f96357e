"""The model-folder format: folder kinds, the config.json and weight helpers, and the writers.

A ditkit model folder holds ``model.safetensors`` and ``config.json``::

    {"kind": "ditkit-dit", "config": {DiTConfig}, "process": {"type": "flow", "flow": {FlowConfig}},
     "class_names": [...], "sampling": {"sampler": "euler", "steps": 50, "cfg_scale": 2.0}, ...}

Kinds: ``"ditkit-dit"`` (class- or text-conditional image model, `ditkit.pipelines.image`),
``"ditkit-dit-quantized"`` (the same with packed low-bit layers, `ditkit.compress.files`) and
``"ditkit-video-dit"`` (text-to-video, `ditkit.pipelines.video`).

A text-to-image model (a `TextDiTConfig` in config.json: PixArt-α-style `CrossDiT` or SD3-style
`MMDiT`) holds its text encoder in ``text_encoder/`` (see `ditkit.models.text_encoder`).
A latent model also holds its autoencoder (a `LatentCodec`, see `ditkit.models.autoencoder`)
in the subfolder ``autoencoder/``, named in config.json as ``"autoencoder": {"path": "autoencoder",
"image_size": [H, W], ...}``. Paths in config.json (``autoencoder.path``, ``text_encoder.path``) are
relative to the folder and must stay inside it (`ditkit.io.confined`); a model that decodes with an
autoencoder kept elsewhere names it with ``"path": null`` and is given it by the caller
(``Pipeline.use_vae``, ``--vae DIR``). The fields and their checks are in `ditkit.pipelines.schema`.

The kinds and `SamplingDefaults` are defined with the schema and re-exported here. This module names
nothing above it (no pipeline, no compress): `ditkit.pipelines.load` reads any kind as a pipeline;
compress and interop read a float folder's network with `load_float_network`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .. import budget
from ..config import DiTConfig, config_from_dict
from ..diffusion.flow import FlowConfig, FlowMatching
from ..diffusion.gaussian import GaussianConfig, GaussianDiffusion
from ..io.checkpoint import CheckpointError, check_state_dict, load_json, load_tensors, save_model
from ..io.fields import check_finite, check_weights_header, expected_state
from ..models.autoencoder import LatentCodec, check_codec_fits, load_codec, resolve_codec_path
from ..models.text_dit import build_model
from ..models.text_encoder import TextEncoder, save_text_encoder
from ..models.text_video import check_text_dims
from .schema import (
    IMAGE_KIND,
    QUANTIZED_KIND,
    VIDEO_KIND,
    FolderSpec,
    SamplingDefaults,
    read_folder_spec,
    read_model_folder,
)

__all__ = [
    "IMAGE_KIND", "QUANTIZED_KIND", "VIDEO_KIND", "SamplingDefaults", "autoencoder_entry", "check_before_writing",
    "codec_from_info", "float_network", "folder_kind", "folder_of", "is_video_folder", "load_float_network",
    "process_from_info", "process_info", "read_weights", "save_pipeline", "save_video_pipeline", "source_autoencoder",
]


def folder_of(path: str | Path) -> Path:
    """The model folder of ``path`` (a folder, or the ``model.safetensors`` inside one)."""
    path = Path(path)
    return path.parent if path.suffix == ".safetensors" else path


def folder_kind(path: str | Path) -> str | None:
    """The ``kind`` in the config.json of the folder at ``path``; None when there is no readable one."""
    config = folder_of(path) / "config.json"
    try:
        return load_json(config).get("kind") if config.is_file() else None
    except (CheckpointError, AttributeError):
        return None


def is_video_folder(path: str | Path) -> bool:
    """Whether ``path`` is a video model folder (by its config.json; False for anything else)."""
    return folder_kind(path) == VIDEO_KIND


# ----------------------------------------------------------------------------- weights


def read_weights(folder: Path, spec: FolderSpec, skeleton: Callable[[], torch.nn.Module], *,
                 float_weights: bool = True) -> dict[str, torch.Tensor]:
    """The checked tensors of ``folder/model.safetensors``: the model's memory is estimated first (`ditkit.budget`),
    the file's header is checked against the network ``skeleton()`` builds (on the meta device, `expected_state`)
    before any tensor is read, and the tensors read are checked to be finite."""
    weights = folder / "model.safetensors"
    budget.check(budget.estimate_load(spec.config, f"loading {folder}", weights.stat().st_size))
    check_weights_header(weights, expected_state(skeleton), float_weights=float_weights)
    state = load_tensors(weights)
    check_finite(state, weights)
    return state


def float_network(state: dict[str, torch.Tensor], info: dict, path: str | Path) -> torch.nn.Module:
    """The float network (`DiT`, `CrossDiT` or `MMDiT`) of an image folder's config.json ``info``, weights from ``state``."""
    try:
        config = config_from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad model config in {path}: {e}") from None
    model = build_model(config)
    check_state_dict(state, model.state_dict(), path)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def load_float_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, FolderSpec]:
    """(the float network in eval mode on ``device``, config.json, its checked `FolderSpec`) of the float image
    folder at ``path`` (kind ``"ditkit-dit"``), checked as `ditkit.pipelines.load_pipeline` checks it; for the
    modules that work on a folder's network (pruning, conversion) without its pipeline. The autoencoder is
    `codec_from_info`. CheckpointError (one line) on any problem or another kind."""
    folder, info, spec = read_model_folder(path)
    if spec.kind != IMAGE_KIND:
        raise CheckpointError(f"{path} is a {spec.kind!r} folder; this needs a float model folder ({IMAGE_KIND!r})")
    state = read_weights(folder, spec, lambda: build_model(spec.config))
    return float_network(state, info, path).to(device).eval(), info, spec


# ----------------------------------------------------------------------------- config.json entries


def process_from_info(info: dict) -> FlowMatching | GaussianDiffusion:
    proc = info.get("process", {"type": "flow"})
    if proc.get("type") == "flow":
        return FlowMatching(FlowConfig(**proc.get("flow", {})))
    if proc.get("type") == "gaussian":
        return GaussianDiffusion(GaussianConfig(**proc.get("gaussian", {})))
    raise CheckpointError(f"unknown process type {proc.get('type')!r} in config.json")


def process_info(process: FlowMatching | GaussianDiffusion) -> dict:
    if isinstance(process, FlowMatching):
        return {"type": "flow", "flow": dataclasses.asdict(process.config)}
    return {"type": "gaussian", "gaussian": dataclasses.asdict(process.config)}


def autoencoder_entry(config: DiTConfig, autoencoder: str | Path | dict | None,
                      copy: bool = True) -> tuple[dict | None, dict[str, Path]]:
    """(config.json's "autoencoder" entry, subfolders to copy) for a model folder; (None, {}) without one.

    The codec is loaded and checked against the DiT's input; ``copy=False`` leaves it out of the folder:
    the entry names it (``"path": null``) and whoever loads the folder gives it (``use_vae``, ``--vae``).
    An entry dict (of a source folder, `source_autoencoder`) is kept as it is.
    """
    if autoencoder is None:
        return None, {}
    if isinstance(autoencoder, dict):
        return dict(autoencoder), {}
    src = resolve_codec_path(autoencoder)
    codec = load_codec(src)
    f = codec.downsample
    image_hw = [config.hw[0] * f, config.hw[1] * f]
    check_codec_fits(codec, image_hw, config.in_channels, config.hw)
    entry = {"path": "autoencoder" if copy else None, "name": codec.name, "image_size": image_hw}
    return entry, ({"autoencoder": src} if copy else {})


def source_autoencoder(path: str | Path, info: dict) -> tuple[Path | dict | None, bool]:
    """(the codec folder, copy it?) of the model folder at ``path`` (or its model.safetensors) with
    config.json ``info``, so that a model derived from it (quantized, pruned) carries the same
    autoencoder: one inside the folder is copied again, one kept outside (``"path": null``) stays
    outside (its entry is returned and written as it is)."""
    ae = info.get("autoencoder")
    if not ae:
        return None, True
    if ae.get("path") is None:
        return dict(ae), False
    return resolve_codec_path(ae["path"], base=folder_of(path)), True


def codec_from_info(path: str | Path, info: dict) -> LatentCodec | None:
    """The autoencoder named in a model folder's config.json (None for a pixel model), checked against the DiT."""
    ae = info.get("autoencoder")
    if not ae or ae.get("path") is None:  # a pixel model, or one whose caller gives the autoencoder
        return None
    folder = folder_of(path)
    codec = load_codec(resolve_codec_path(ae["path"], base=folder))  # CheckpointError naming the file
    try:
        config = config_from_dict(info["config"])
        check_codec_fits(codec, ae.get("image_size") or [s * codec.downsample for s in config.hw],
                         config.in_channels, config.hw, where=f"the DiT in {folder}")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder}: bad autoencoder entry: {e}") from None
    return codec


# ----------------------------------------------------------------------------- writers


def check_before_writing(info: dict, folder: str | Path) -> None:
    """ValueError (one line naming the field) unless ``info`` passes the schema its loader will check
    (`ditkit.pipelines.schema`): a writer never leaves a folder that fails later (NaN guidance, a bad size)."""
    read_folder_spec(info, Path(folder) / "config.json")


def save_pipeline(folder: str | Path, model, process, *, class_names=None, defaults: SamplingDefaults | None = None,
                  dtype: torch.dtype = torch.float32, extra: dict | None = None, autoencoder: str | Path | None = None,
                  copy_autoencoder: bool = True, text_encoder: TextEncoder | None = None) -> None:
    """Write an image model folder (a `DiT`, `CrossDiT` or `MMDiT`) atomically; weights may be stored in half
    precision to save space.

    `autoencoder`: the folder of the codec a latent model was trained with; it is copied into the
    model folder as ``autoencoder/`` (self-contained), or with ``copy_autoencoder=False`` referenced
    by its absolute path (e.g. a large diffusers VAE). `text_encoder`: a text model's encoder, written
    to ``text_encoder/`` (float32).
    """
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ae_info, subfolders = autoencoder_entry(model.config, autoencoder, copy_autoencoder)
    info = {
        "kind": IMAGE_KIND,
        "config": model.config.to_dict(),
        "process": process_info(process),
        "class_names": list(class_names or []),
        "sampling": dataclasses.asdict(defaults or SamplingDefaults()),
        "weights_dtype": str(dtype).replace("torch.", ""),
        **(extra or {}),
    }
    if ae_info is not None:
        info["autoencoder"] = ae_info
    if (text_encoder is None) != (getattr(model.config, "text_dim", None) is None):
        raise ValueError("a text-conditioned model is saved with its text encoder (and only such a model)")
    if text_encoder is not None:
        info["text_encoder"] = {"path": "text_encoder", "type": type(text_encoder).__name__}
    check_before_writing(info, folder)
    with tempfile.TemporaryDirectory() as tmp:
        if text_encoder is not None:
            if text_encoder.text_dim != model.config.text_dim:
                raise ValueError(f"the text encoder gives {text_encoder.text_dim}-dim tokens, the model expects "
                                 f"{model.config.text_dim}")
            save_text_encoder(text_encoder, Path(tmp) / "text_encoder")
            subfolders["text_encoder"] = Path(tmp) / "text_encoder"
        save_model(folder, state, info, subfolders=subfolders)


def save_video_pipeline(folder: str | Path, model, process: FlowMatching, text_encoder: TextEncoder, *,
                        defaults: SamplingDefaults | None = None, dtype: torch.dtype = torch.float32,
                        extra: dict | None = None, autoencoder: str | Path | None = None) -> None:
    """Write a video model folder (a `VideoDiT` and its text encoder) atomically (weights optionally in half
    precision)."""
    check_text_dims(text_encoder.text_dim, model.config)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ae_info, subfolders = autoencoder_entry(model.config.dit, autoencoder)
    info = {
        "kind": VIDEO_KIND,
        "config": model.config.to_dict(),
        "process": process_info(process),
        "sampling": dataclasses.asdict(defaults or SamplingDefaults()),
        "weights_dtype": str(dtype).replace("torch.", ""),
        "text_encoder": {"path": "text_encoder", "type": type(text_encoder).__name__},
        **(extra or {}),
    }
    if ae_info is not None:
        info["autoencoder"] = ae_info
    check_before_writing(info, folder)
    with tempfile.TemporaryDirectory() as tmp:
        save_text_encoder(text_encoder, Path(tmp) / "text_encoder")
        subfolders["text_encoder"] = Path(tmp) / "text_encoder"
        save_model(folder, state, info, subfolders=subfolders)
