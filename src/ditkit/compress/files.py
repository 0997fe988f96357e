"""Quantized model folders: packed tensors in safetensors, the quantization config in config.json.

A quantized folder is a ditkit model folder (`ditkit.pipelines.folder`) whose ``model.safetensors`` holds
each quantized layer's buffers as they live in memory — int8 weights, packed uint8 4-bit weights,
float16/int8 group scales, float32 channel scales — next to the float tensors of the layers kept
in float, and whose ``config.json`` has ``"kind": "ditkit-dit-quantized"`` plus

    "quantization": {"scheme": "w8a8", "alpha": 0.5, "group_size": 128, "timestep_bounds": [],
                     "layers": {"blocks.0.attn.qkv": {"type": "w8a8", "in_features": 768, ...}, ...}}

Loading rebuilds the DiT from its config, swaps in empty quantized layers from the per-layer
specs and fills them from the file: no calibration, no float weights for quantized layers
(`quantized_network`, which `ditkit.pipelines.load_pipeline` calls for this kind, so that it reads
these folders too). The folder is checked against the schema before it is written, and written
atomically as a whole (`io.checkpoint.atomic_dir`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..config import DiTConfig
from ..io.checkpoint import CheckpointError, check_state_dict, save_model
from ..models.dit import DiT
from ..pipelines.folder import (
    QUANTIZED_KIND,
    SamplingDefaults,
    autoencoder_entry,
    check_before_writing,
    process_info,
)
from .calibrate import TimestepRouter
from .fp import FPLinear
from .int8 import Int8Linear, Int8WeightOnlyLinear
from .vq import VQLinear
from .w4 import W4A8Linear, W4A16Linear

KIND = QUANTIZED_KIND
QUANTIZED_TYPES = (Int8Linear, Int8WeightOnlyLinear, W4A8Linear, W4A16Linear, FPLinear, VQLinear)


def layer_spec(module: nn.Module) -> dict:
    """The constructor arguments of a quantized layer, as stored in config.json."""
    base = {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None}
    if isinstance(module, Int8Linear):
        return {"type": "w8a8", **base, "groups": module.groups, "smooth": module.inv_smooth is not None,
                "rotate": module.rotate}
    if isinstance(module, Int8WeightOnlyLinear):
        return {"type": "w8a16", **base}
    if isinstance(module, W4A8Linear):
        return {"type": "w4a8", **base, "group_size": module.group_size, "smooth": module.inv_smooth is not None,
                "rotate": module.rotate}
    if isinstance(module, W4A16Linear):
        return {"type": "w4a16", **base, "group_size": module.group_size}
    if isinstance(module, VQLinear):
        return {"type": "vq", **base, "codebook_size": module.codebook_size, "dim": module.dim}
    if isinstance(module, FPLinear):
        return {"type": "fp", **base, "fmt": module.fmt, "group_size": module.group_size, "act_format": module.act_format}
    raise TypeError(f"not a quantized layer: {type(module).__name__}")


def layer_from_spec(spec: dict, cache_int8: bool = False) -> nn.Module:
    """An empty quantized layer (zeros) of the shape and kind ``spec`` describes."""
    try:
        kind = spec["type"]
        args = (int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]))
        if kind == "w8a8":
            return Int8Linear(*args, groups=int(spec["groups"]), smooth=bool(spec["smooth"]), rotate=int(spec.get("rotate", 1)))
        if kind == "w8a16":
            return Int8WeightOnlyLinear(*args)
        if kind == "w4a8":
            return W4A8Linear(*args, group_size=int(spec["group_size"]), smooth=bool(spec["smooth"]), cache_int8=cache_int8,
                              rotate=int(spec.get("rotate", 1)))
        if kind == "w4a16":
            return W4A16Linear(*args, group_size=int(spec["group_size"]))
        if kind == "vq":
            return VQLinear(*args, codebook_size=int(spec["codebook_size"]), dim=int(spec["dim"]))
        if kind == "fp":
            return FPLinear(*args, fmt=spec["fmt"], group_size=int(spec["group_size"]), act_format=spec["act_format"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad quantized layer spec {spec!r}: {e}") from None
    raise CheckpointError(f"unknown quantized layer type {kind!r}")


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)}


def save_quantized(folder: str | Path, model: DiT, process, *, class_names=None,
                   defaults: SamplingDefaults | None = None, extra: dict | None = None,
                   autoencoder: str | Path | None = None, copy_autoencoder: bool = True) -> None:
    """Write a quantized model folder atomically (tensors exactly as held in memory).

    A latent model keeps its ``autoencoder`` (float, copied as in `ditkit.save_pipeline`)."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no quantized layers; use ditkit.save_pipeline for float models")
    ae_info, subfolders = autoencoder_entry(model.config, autoencoder, copy_autoencoder)
    qinfo = dict(getattr(model, "quantization", {}))
    qinfo["layers"] = {n: layer_spec(m) for n, m in layers.items()}
    info = {
        "kind": KIND,
        "config": model.config.to_dict(),
        "process": process_info(process),
        "class_names": list(class_names or []),
        "sampling": dataclasses.asdict(defaults or SamplingDefaults()),
        "quantization": qinfo,
        **(extra or {}),
    }
    if ae_info is not None:
        info["autoencoder"] = ae_info
    check_before_writing(info, folder)
    save_model(folder, model.state_dict(), info, subfolders=subfolders)


def build_quantized(config: DiTConfig, qinfo: dict, cache_int8: bool = False) -> DiT:
    """An empty DiT with the quantized layers ``qinfo["layers"]`` swapped in."""
    model = DiT(config)
    for name, spec in qinfo.get("layers", {}).items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(f"quantized layer {name!r} does not exist in this DiT config") from None
        new = layer_from_spec(spec, cache_int8)
        if not isinstance(old, nn.Linear) or (old.in_features, old.out_features) != (new.in_features, new.out_features):
            raise CheckpointError(f"quantized layer {name!r} does not match the model's {old}")
        model.set_submodule(name, new)
    model.quantization = {k: v for k, v in qinfo.items() if k != "layers"}
    if any(getattr(m, "groups", 1) > 1 for m in model.modules()):
        TimestepRouter().attach(model)
    return model


def quantized_network(state: dict[str, torch.Tensor], info: dict, path: str | Path, cache_int8: bool = False) -> DiT:
    """The DiT of a quantized folder's config.json ``info``, its quantized layers filled from ``state``."""
    try:
        config = DiTConfig.from_dict(info["config"])
        qinfo = info["quantization"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad config in {path}: {e}") from None
    model = build_quantized(config, qinfo, cache_int8)
    check_state_dict(state, model.state_dict(), path, check_dtype=True)
    model.load_state_dict(state)
    return model

