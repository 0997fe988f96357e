"""The schema of the model-folder format: every config.json field a loader reads, checked before anything is built.

`read_folder_spec` checks a model folder's config.json (image, quantized, pruned and video kinds) and returns a
typed `FolderSpec`; `check_fields` checks one config dataclass (a DiT, video DiT, text encoder or autoencoder
config) from its JSON object; `check_weights_header` checks the weights of ``model.safetensors`` against the
shapes and dtypes the config implies, from the file's header, before any tensor is read or any model built.
Every failure is a `CheckpointError` of one line naming the file and the field::

    assets/x/config.json: config.depth must be a positive integer, got 2.5

Types follow the dataclass annotations (an ``int`` is a JSON integer, never a float or a boolean; a ``bool``
is a JSON boolean, never ``"yes"``; a ``float`` is a finite number); ranges and choices are in `RULES`.
Unknown keys are refused. The folder kinds and `SamplingDefaults` (config.json's ``"sampling"``) are defined
here, below every reader and writer of the format (`ditkit.pipelines.folder` re-exports them).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DiTConfig, TextDiTConfig
from ..diffusion.flow import FlowConfig, FlowMatching
from ..diffusion.gaussian import GaussianConfig, GaussianDiffusion
from ..diffusion.samplers import SAMPLERS
from ..io.checkpoint import CheckpointError, load_json
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


WEIGHT_DTYPES = ("float32", "float16", "bfloat16")  # what a float folder's tensors may be stored as
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                       "U64": "uint64", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A value check: ``ok(value)`` and what a good value is, for the error line."""

    ok: Callable[[object], bool]
    need: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


POSITIVE_INT = Rule(lambda v: _is_int(v) and v > 0, "a positive integer")
COUNT = Rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Rule(lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
FINITE = Rule(_is_number, "a finite number")
PROBABILITY = Rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false (a JSON boolean)")
STRING = Rule(lambda v: isinstance(v, str), "a string")
SIDE = Rule(lambda v: (_is_int(v) and v > 0) or (isinstance(v, list) and len(v) == 2
                                                 and all(_is_int(s) and s > 0 for s in v)),
            "a positive integer or a list [height, width] of positive integers")


def choice(*names) -> Rule:
    return Rule(lambda v: isinstance(v, type(names[0])) and not isinstance(v, bool) and v in names,
                "one of " + ", ".join(repr(n) for n in names))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.need}")


def int_list(length: int | None = None) -> Rule:
    n = "" if length is None else f" of {length}"
    return Rule(lambda v: isinstance(v, list) and (length is None or len(v) == length) and len(v) > 0
                and all(_is_int(s) and s > 0 for s in v), f"a list{n} positive integers")


_DIT = {
    "input_size": SIDE, "patch_size": POSITIVE_INT, "in_channels": POSITIVE_INT, "hidden_size": POSITIVE_INT,
    "depth": POSITIVE_INT, "num_heads": POSITIVE_INT, "mlp_ratio": POSITIVE, "class_dropout_prob": PROBABILITY,
    "num_classes": COUNT, "rope_theta": POSITIVE, "norm_type": choice("layernorm", "rmsnorm"),
    "mlp_type": choice("gelu", "swiglu", "mixffn"), "frequency_embedding_size": Rule(
        lambda v: _is_int(v) and v >= 2 and v % 2 == 0, "a positive even integer"),
    "norm_eps": POSITIVE, "timestep_freq_shift": COUNT, "mlp_norm_eps": optional(POSITIVE),
}
# class name -> field -> rule; fields not listed are checked by their annotation (bool, str, ...)
RULES: dict[str, dict[str, Rule]] = {
    "DiTConfig": _DIT,
    "TextDiTConfig": {**_DIT, "arch": choice("cross", "mmdit"), "text_dim": POSITIVE_INT,
                      "caption_dropout_prob": PROBABILITY},
    "VideoDiTConfig": {"num_frames": POSITIVE_INT, "temporal_patch": POSITIVE_INT,
                       "attention": choice("full", "factorized"), "rope_layout": choice("image", "axial"),
                       "temporal_rope_pairs": COUNT, "rope_dims": optional(int_list(3)), "pooled_text_dim": COUNT,
                       "text_dim": COUNT},
    "WordEncoderConfig": {"dim": POSITIVE_INT, "depth": COUNT, "num_heads": POSITIVE_INT, "mlp_ratio": POSITIVE,
                          "max_length": POSITIVE_INT},
    "AutoencoderConfig": {"downsample": choice(2, 4, 8, 16), "latent_channels": POSITIVE_INT, "widths": int_list(),
                          "num_res_blocks": COUNT, "groups": POSITIVE_INT, "image_channels": POSITIVE_INT,
                          "latent_l2": NON_NEGATIVE},
    "FlowConfig": {"time_sampling": choice("uniform", "logit_normal"), "logit_mean": FINITE, "logit_std": POSITIVE,
                   "time_scale": POSITIVE, "train_shift": POSITIVE},
    "GaussianConfig": {"num_timesteps": POSITIVE_INT, "schedule": choice("linear", "cosine"),
                       "prediction": choice("epsilon", "v"), "fixed_variance": choice("large", "small"),
                       "respacing": optional(STRING)},
    "SamplingDefaults": {"sampler": choice(*SAMPLERS), "steps": POSITIVE_INT, "cfg_scale": NON_NEGATIVE,
                         "shift": POSITIVE},
}
_BY_TYPE = {bool: BOOL, int: Rule(_is_int, "an integer"), float: FINITE, str: STRING}


def _rule_of(cls: type, name: str, hint) -> Rule | None:
    rule = RULES.get(cls.__name__, {}).get(name)
    if rule is not None:
        return rule
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)]
        return optional(_BY_TYPE[inner[0]]) if len(inner) == 1 and inner[0] in _BY_TYPE else None
    return _BY_TYPE.get(hint)


def _where(source, prefix: str) -> str:
    return f"{source}: {prefix}"


def check_fields(cls: type, d, source: str | Path, prefix: str = "config.") -> dict:
    """Check the JSON object ``d`` against the fields of the config dataclass ``cls`` (types by its annotations,
    ranges by `RULES`; a nested config dataclass is checked in turn); returns ``d``. CheckpointError naming
    ``source`` and the field (``prefix`` + name) for the first bad one, or an unknown key."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: {prefix.rstrip('.')} must be a JSON object, got {_show(d)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise CheckpointError(f"{_where(source, prefix)}{unknown[0]} is not a {cls.__name__} field")
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            check_fields(hint, value, source, f"{prefix}{name}.")
            continue
        rule = _rule_of(cls, name, hint)
        if rule is not None and not rule.ok(value):
            raise CheckpointError(f"{_where(source, prefix)}{name} must be {rule.need}, got {_show(value)}")
    return d


def _show(value) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def build_config(cls: type, d, source: str | Path, prefix: str = "config."):
    """``cls.from_dict(d)`` after `check_fields`; a config's own consistency checks (e.g. hidden_size divisible by
    num_heads) become one CheckpointError line naming ``source``."""
    check_fields(cls, d, source, prefix)
    try:
        return cls.from_dict(d)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{source}: {prefix.rstrip('.')}: {e}") from None


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
        raise CheckpointError(f"{source}: config.json must hold a JSON object, got {_show(info)}")
    kind = info.get("kind")
    if kind not in (IMAGE_KIND, QUANTIZED_KIND, VIDEO_KIND):
        raise CheckpointError(f"{source}: kind must be one of {IMAGE_KIND!r}, {QUANTIZED_KIND!r}, {VIDEO_KIND!r}, "
                              f"got {_show(kind)}")
    raw = info.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: config must be a JSON object, got {_show(raw)}")
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
        raise CheckpointError(f"{source}: weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {_show(dtype)}")
    text = getattr(dit, "text_dim", None) is not None or kind == VIDEO_KIND
    if kind == QUANTIZED_KIND:
        _quantization(info.get("quantization"), source)
    return FolderSpec(kind, config, process, defaults, class_names, _autoencoder(info.get("autoencoder"), source),
                      _text_encoder(info.get("text_encoder"), text, source), dtype)


def read_model_folder(path: str | Path) -> tuple[Path, dict, FolderSpec]:
    """(folder, config.json as read, its checked `FolderSpec`) of the model folder at ``path`` (or the
    ``model.safetensors`` inside one); CheckpointError for a missing folder or file, or a bad field."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not folder.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder} is not a ditkit model folder (needs model.safetensors and config.json)")
    info = load_json(folder / "config.json")
    return folder, info, read_folder_spec(info, folder / "config.json")


_LAYER = {"type": choice("w8a8", "w8a16", "w4a8", "w4a16", "vq", "fp"), "in_features": POSITIVE_INT,
          "out_features": POSITIVE_INT, "bias": BOOL, "groups": POSITIVE_INT, "smooth": BOOL, "rotate": POSITIVE_INT,
          "group_size": POSITIVE_INT, "codebook_size": POSITIVE_INT, "dim": POSITIVE_INT, "fmt": STRING,
          "act_format": optional(STRING)}
_QUANTIZATION = {"alpha": optional(FINITE), "group_size": optional(POSITIVE_INT), "rotate": COUNT,
                 "scheme": STRING, "timestep_bounds": Rule(lambda v: isinstance(v, list) and all(map(_is_number, v)),
                                                           "a list of finite numbers")}


def _quantization(qinfo, source) -> None:
    """A quantized folder's ``quantization`` entry: the scheme's settings and one spec per quantized layer (the
    constructor arguments of `ditkit.compress.files.layer_from_spec`); other keys are kept as they are."""
    if not isinstance(qinfo, dict) or not isinstance(qinfo.get("layers"), dict):
        raise CheckpointError(f"{source}: quantization must be a JSON object with a layers object")
    for name, rule in _QUANTIZATION.items():
        if name in qinfo and not rule.ok(qinfo[name]):
            raise CheckpointError(f"{source}: quantization.{name} must be {rule.need}, got {_show(qinfo[name])}")
    for layer, spec in qinfo["layers"].items():
        if not isinstance(spec, dict):
            raise CheckpointError(f"{source}: quantization.layers.{layer} must be a JSON object, got {_show(spec)}")
        for name, rule in _LAYER.items():
            if (name in spec or name in ("type", "in_features", "out_features", "bias")) and not rule.ok(spec.get(name)):
                raise CheckpointError(f"{source}: quantization.layers.{layer}.{name} must be {rule.need}, "
                                      f"got {_show(spec.get(name))}")


def _process(proc, source) -> FlowMatching | GaussianDiffusion:
    if not isinstance(proc, dict):
        raise CheckpointError(f"{source}: process must be a JSON object, got {_show(proc)}")
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
    raise CheckpointError(f"{source}: process.type must be 'flow' or 'gaussian', got {_show(kind)}")


def _defaults(d, process, source) -> SamplingDefaults:
    """The folder's sampling defaults. The sampler is one of `SAMPLERS`; whether it suits the process is the
    sampler's own check at run time (writers store "euler" for Gaussian folders, whose callers name theirs)."""
    return SamplingDefaults(**check_fields(SamplingDefaults, d, source, "sampling."))


def _class_names(names, num_classes: int, source) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{source}: class_names must be a list of strings, got {_show(names)}")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{source}: class_names must be unique")
    if len(names) > num_classes:  # names for the first classes (or none: indices only)
        raise CheckpointError(f"{source}: class_names has {len(names)} names, the config has num_classes={num_classes}")
    return list(names)


def _autoencoder(entry, source) -> dict | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise CheckpointError(f"{source}: autoencoder must be a JSON object, got {_show(entry)}")
    unknown = sorted(set(entry) - {"path", "name", "image_size"})
    if unknown:
        raise CheckpointError(f"{source}: autoencoder.{unknown[0]} is not an autoencoder field")
    for name, rule in (("path", optional(STRING)), ("name", optional(STRING)), ("image_size", optional(int_list(2)))):
        if not rule.ok(entry.get(name)):
            raise CheckpointError(f"{source}: autoencoder.{name} must be {rule.need}, got {_show(entry.get(name))}")
    return {"path": entry.get("path"), "name": entry.get("name"), "image_size": entry.get("image_size")}


def _text_encoder(entry, needed: bool, source) -> str | None:
    if entry is None:
        return "text_encoder" if needed else None
    if not isinstance(entry, dict) or not isinstance(entry.get("path", "text_encoder"), str):
        raise CheckpointError(f"{source}: text_encoder must be a JSON object with a string path, got {_show(entry)}")
    unknown = sorted(set(entry) - {"path", "type"})
    if unknown:
        raise CheckpointError(f"{source}: text_encoder.{unknown[0]} is not a text encoder field")
    return entry.get("path", "text_encoder") if needed else None


# ----------------------------------------------------------------------------- weights against the config


def header_of(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of a safetensors file, from its header only (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for k in f.keys():
                sl = f.get_slice(k)
                out[k] = (tuple(sl.get_shape()), _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower()))
            return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt safetensors file {path}: {str(e).splitlines()[0] if str(e) else e}") from None


def expected_state(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict of the module ``build()`` makes, built on the meta device (shapes and dtypes, no memory)."""
    with torch.device("meta"):
        return build().state_dict()


def check_weights_header(path: str | Path, expected: dict[str, torch.Tensor], *, float_weights: bool = True) -> None:
    """CheckpointError unless the safetensors file ``path`` holds exactly the tensors of ``expected`` (a state dict,
    e.g. from `expected_state`) with their shapes: float tensors stored as one of `WEIGHT_DTYPES` when
    ``float_weights`` (an integer tensor is refused, never cast), else with the expected dtype exactly."""
    header = header_of(path)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, (shape, dtype) in header.items():
        want = expected[k]
        if shape != tuple(want.shape):
            raise CheckpointError(f"{path}: {k} has shape {shape}, the config needs {tuple(want.shape)}")
        need = str(want.dtype).replace("torch.", "")
        if want.is_floating_point() and float_weights:
            if dtype not in WEIGHT_DTYPES:
                raise CheckpointError(f"{path}: {k} is stored as {dtype}; float weights must be one of "
                                      f"{', '.join(WEIGHT_DTYPES)}")
        elif dtype != need:
            raise CheckpointError(f"{path}: {k} is stored as {dtype}, the model needs {need}")


def check_finite(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """CheckpointError naming the first tensor of ``state`` (read from ``source``) holding NaN or Inf."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: {k} holds NaN or Inf values")
