"""The schema of the model-folder format: every config.json field a loader reads, checked before anything is built.

`read_folder_spec` checks a model folder's config.json (image, quantized, pruned and video kinds) and returns a
typed `FolderSpec`; `check_fields` checks one config dataclass of a folder (a DiT, video DiT, process or
sampling config) from its JSON object, with the ranges and choices of `RULES`; the tools it is built on (the
`Rule` s, `check_weights_header`, `check_finite`, ...) are `ditkit.io.fields`. Every failure is a
`CheckpointError` of one line naming the file and the field::

    assets/x/config.json: config.depth must be a positive integer, got 2.5

Unknown keys are refused. The folder kinds and `SamplingDefaults` (config.json's ``"sampling"``) are defined
here, below every reader and writer of the format (`ditkit.pipelines.folder` re-exports them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import DiTConfig, TextDiTConfig
from ..diffusion.flow import FlowConfig, FlowMatching
from ..diffusion.gaussian import GaussianConfig, GaussianDiffusion
from ..diffusion.samplers import SAMPLERS
from ..io import fields
from ..io.checkpoint import CheckpointError, load_json, model_folder
from ..io.fields import (
    BOOL,
    COUNT,
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    PROBABILITY,
    SIDE,
    STRING,
    WEIGHT_DTYPES,
    Rule,
    choice,
    int_list,
    is_int,
    is_number,
    optional,
    shown,
)
from ..models.video_dit import VideoDiTConfig

IMAGE_KIND = "ditkit-dit"  # a class- or text-conditional image model (`ditkit.pipelines.image`)
QUANTIZED_KIND = "ditkit-dit-quantized"  # the same with packed low-bit layers (`ditkit.compress.files`)
VIDEO_KIND = "ditkit-video-dit"  # text-to-video (`ditkit.pipelines.video`)


@dataclass
class SamplingDefaults:
    """config.json's ``"sampling"``: how the model is sampled unless the caller says otherwise."""

    sampler: str = "euler"
    steps: int = 50
    cfg_scale: float = 1.0
    shift: float = 1.0  # flow timestep shift at sampling (SD3); 1 = none


# ----------------------------------------------------------------------------- rules of the folder's configs


_DIT = {
    "input_size": SIDE, "patch_size": POSITIVE_INT, "in_channels": POSITIVE_INT, "hidden_size": POSITIVE_INT,
    "depth": POSITIVE_INT, "num_heads": POSITIVE_INT, "mlp_ratio": POSITIVE, "class_dropout_prob": PROBABILITY,
    "num_classes": COUNT, "rope_theta": POSITIVE, "norm_type": choice("layernorm", "rmsnorm"),
    "mlp_type": choice("gelu", "swiglu", "mixffn"), "frequency_embedding_size": Rule(
        lambda v: is_int(v) and v >= 2 and v % 2 == 0, "a positive even integer"),
    "norm_eps": POSITIVE, "timestep_freq_shift": COUNT, "mlp_norm_eps": optional(POSITIVE),
}
# class name -> field -> rule; fields not listed are checked by their annotation (bool, str, ...)
RULES: fields.RuleTable = {
    "DiTConfig": _DIT,
    "TextDiTConfig": {**_DIT, "arch": choice("cross", "mmdit"), "text_dim": POSITIVE_INT,
                      "caption_dropout_prob": PROBABILITY},
    "VideoDiTConfig": {"num_frames": POSITIVE_INT, "temporal_patch": POSITIVE_INT,
                       "attention": choice("full", "factorized"), "rope_layout": choice("image", "axial"),
                       "temporal_rope_pairs": COUNT, "rope_dims": optional(int_list(3)), "pooled_text_dim": COUNT,
                       "text_dim": COUNT},
    "FlowConfig": {"time_sampling": choice("uniform", "logit_normal"), "logit_mean": FINITE, "logit_std": POSITIVE,
                   "time_scale": POSITIVE, "train_shift": POSITIVE},
    "GaussianConfig": {"num_timesteps": POSITIVE_INT, "schedule": choice("linear", "cosine"),
                       "prediction": choice("epsilon", "v"), "fixed_variance": choice("large", "small"),
                       "respacing": optional(STRING)},
    "SamplingDefaults": {"sampler": choice(*SAMPLERS), "steps": POSITIVE_INT, "cfg_scale": NON_NEGATIVE,
                         "shift": POSITIVE},
}


def check_fields(cls: type, d, source: str | Path, prefix: str = "config.") -> dict:
    """`ditkit.io.fields.check_fields` with the rules of `RULES`: ``d`` checked as a ``cls``, or CheckpointError."""
    return fields.check_fields(cls, d, source, prefix, rules=RULES)


def build_config(cls: type, d, source: str | Path, prefix: str = "config."):
    """`ditkit.io.fields.build_config` with the rules of `RULES`: ``cls.from_dict(d)`` once checked."""
    return fields.build_config(cls, d, source, prefix, rules=RULES)


# ----------------------------------------------------------------------------- a model folder's config.json


@dataclass(frozen=True)
class FolderSpec:
    """What a model folder's config.json says, checked: the loaders build from this, never from raw JSON."""

    kind: str
    config: DiTConfig | VideoDiTConfig
    process: FlowMatching | GaussianDiffusion
    defaults: SamplingDefaults
    class_names: list[str]
    autoencoder: dict | None  # {"path": str | None, "image_size": [H, W] | None, "name": str | None}
    text_encoder: str | None  # the text encoder's path inside the folder
    weights_dtype: str | None


def read_folder_spec(info, source: str | Path) -> FolderSpec:
    """The checked `FolderSpec` of a model folder's config.json ``info`` read from ``source``."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{source}: config.json must hold a JSON object, got {shown(info)}")
    kind = info.get("kind")
    if kind not in (IMAGE_KIND, QUANTIZED_KIND, VIDEO_KIND):
        raise CheckpointError(f"{source}: kind must be one of {IMAGE_KIND!r}, {QUANTIZED_KIND!r}, {VIDEO_KIND!r}, "
                              f"got {shown(kind)}")
    raw = info.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: config must be a JSON object, got {shown(raw)}")
    if kind == VIDEO_KIND:
        config = build_config(VideoDiTConfig, raw, source)
    elif kind == QUANTIZED_KIND or "arch" not in raw:
        config = build_config(DiTConfig, raw, source)
    else:
        config = build_config(TextDiTConfig, raw, source)
    process = _process(info.get("process", {"type": "flow"}), source)
    defaults = _defaults(info.get("sampling", {}), process, source)
    dit = config.dit if isinstance(config, VideoDiTConfig) else config
    class_names = _class_names(info.get("class_names", []), dit.num_classes, source)
    dtype = info.get("weights_dtype")
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"{source}: weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {shown(dtype)}")
    text = getattr(dit, "text_dim", None) is not None or kind == VIDEO_KIND
    if kind == QUANTIZED_KIND:
        _quantization(info.get("quantization"), source)
    return FolderSpec(kind, config, process, defaults, class_names, _autoencoder(info.get("autoencoder"), source),
                      _text_encoder(info.get("text_encoder"), text, source), dtype)


def read_model_folder(path: str | Path) -> tuple[Path, dict, FolderSpec]:
    """(folder, config.json as read, its checked `FolderSpec`) of the model folder at ``path`` (or the
    ``model.safetensors`` inside one); CheckpointError for a missing folder or file, or a bad field."""
    folder = model_folder(path)
    info = load_json(folder / "config.json")
    return folder, info, read_folder_spec(info, folder / "config.json")


_LAYER = {"type": choice("w8a8", "w8a16", "w4a8", "w4a16", "vq", "fp"), "in_features": POSITIVE_INT,
          "out_features": POSITIVE_INT, "bias": BOOL, "groups": POSITIVE_INT, "smooth": BOOL, "rotate": POSITIVE_INT,
          "group_size": POSITIVE_INT, "codebook_size": POSITIVE_INT, "dim": POSITIVE_INT, "fmt": STRING,
          "act_format": optional(STRING)}
_QUANTIZATION = {"alpha": optional(FINITE), "group_size": optional(POSITIVE_INT), "rotate": COUNT,
                 "scheme": STRING, "timestep_bounds": Rule(lambda v: isinstance(v, list) and all(map(is_number, v)),
                                                           "a list of finite numbers")}


def _quantization(qinfo, source) -> None:
    """A quantized folder's ``quantization`` entry: the scheme's settings and one spec per quantized layer (the
    constructor arguments of `ditkit.compress.files.layer_from_spec`); other keys are kept as they are."""
    if not isinstance(qinfo, dict) or not isinstance(qinfo.get("layers"), dict):
        raise CheckpointError(f"{source}: quantization must be a JSON object with a layers object")
    for name, rule in _QUANTIZATION.items():
        if name in qinfo and not rule.ok(qinfo[name]):
            raise CheckpointError(f"{source}: quantization.{name} must be {rule.need}, got {shown(qinfo[name])}")
    for layer, spec in qinfo["layers"].items():
        if not isinstance(spec, dict):
            raise CheckpointError(f"{source}: quantization.layers.{layer} must be a JSON object, got {shown(spec)}")
        for name, rule in _LAYER.items():
            if (name in spec or name in ("type", "in_features", "out_features", "bias")) and not rule.ok(spec.get(name)):
                raise CheckpointError(f"{source}: quantization.layers.{layer}.{name} must be {rule.need}, "
                                      f"got {shown(spec.get(name))}")


def _process(proc, source) -> FlowMatching | GaussianDiffusion:
    if not isinstance(proc, dict):
        raise CheckpointError(f"{source}: process must be a JSON object, got {shown(proc)}")
    unknown = sorted(set(proc) - {"type", "flow", "gaussian"})
    if unknown:
        raise CheckpointError(f"{source}: process.{unknown[0]} is not a process field")
    kind = proc.get("type")
    if kind == "flow":
        return FlowMatching(FlowConfig(**check_fields(FlowConfig, proc.get("flow", {}), source, "process.flow.")))
    if kind == "gaussian":
        d = check_fields(GaussianConfig, proc.get("gaussian", {}), source, "process.gaussian.")
        try:
            return GaussianDiffusion(GaussianConfig(**d))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: process.gaussian: {e}") from None
    raise CheckpointError(f"{source}: process.type must be 'flow' or 'gaussian', got {shown(kind)}")


def _defaults(d, process, source) -> SamplingDefaults:
    """The folder's sampling defaults. The sampler is one of `SAMPLERS`; whether it suits the process is the
    sampler's own check at run time (writers store "euler" for Gaussian folders, whose callers name theirs)."""
    return SamplingDefaults(**check_fields(SamplingDefaults, d, source, "sampling."))


def _class_names(names, num_classes: int, source) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{source}: class_names must be a list of strings, got {shown(names)}")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{source}: class_names must be unique")
    if len(names) > num_classes:  # names for the first classes (or none: indices only)
        raise CheckpointError(f"{source}: class_names has {len(names)} names, the config has num_classes={num_classes}")
    return list(names)


def _autoencoder(entry, source) -> dict | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise CheckpointError(f"{source}: autoencoder must be a JSON object, got {shown(entry)}")
    unknown = sorted(set(entry) - {"path", "name", "image_size"})
    if unknown:
        raise CheckpointError(f"{source}: autoencoder.{unknown[0]} is not an autoencoder field")
    for name, rule in (("path", optional(STRING)), ("name", optional(STRING)), ("image_size", optional(int_list(2)))):
        if not rule.ok(entry.get(name)):
            raise CheckpointError(f"{source}: autoencoder.{name} must be {rule.need}, got {shown(entry.get(name))}")
    return {"path": entry.get("path"), "name": entry.get("name"), "image_size": entry.get("image_size")}


def _text_encoder(entry, needed: bool, source) -> str | None:
    if entry is None:
        return "text_encoder" if needed else None
    if not isinstance(entry, dict) or not isinstance(entry.get("path", "text_encoder"), str):
        raise CheckpointError(f"{source}: text_encoder must be a JSON object with a string path, got {shown(entry)}")
    unknown = sorted(set(entry) - {"path", "type"})
    if unknown:
        raise CheckpointError(f"{source}: text_encoder.{unknown[0]} is not a text encoder field")
    return entry.get("path", "text_encoder") if needed else None
