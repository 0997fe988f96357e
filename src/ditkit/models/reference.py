"""Load and export checkpoints of the reference DiT (facebookresearch/DiT, `models.py`).

    model = DiT.from_reference("DiT-XL-2-256x256.pt")            # released weights (plain state_dict)
    model = DiT.from_reference("results/000-DiT-S-2/checkpoints/0400000.pt")  # train.py checkpoint -> "ema"
    sd = to_reference_state_dict(model)                            # back to the reference layout

What is read (docs/reference.md §2):

* a ``.pt``/``.pth`` file, read with ``weights_only=True`` only (``load_torch_file``): either a plain
  state_dict, or a training checkpoint ``{"model", "ema", "opt", "args"}`` from which the EMA weights
  are taken (as the reference's ``find_model`` does) and ``args`` (an ``argparse.Namespace``) gives
  ``model`` (e.g. ``"DiT-XL/2"``), ``image_size`` and ``num_classes``;
* a ``.safetensors`` file with the same keys;
* an already-loaded dict of either kind.

The config comes from the tensor shapes: D, C and p from ``x_embedder.proj.weight`` (D, C, p, p), the
depth from the block indices, the MLP ratio from ``fc1``, the classes from the label table (minus the
null row), learned sigma from the final linear, the input side from ``pos_embed`` (1, T, D) with
T = (I/p)^2. The head count is not in any shape: it comes from ``args.model``, else from the DiT size
table for (depth, D) (S/B/L/XL), else it must be passed as ``num_heads=``. Keyword overrides win.

Weights move through one explicit key table (``reference_key_map``), with a shape check on every
tensor. The file's ``pos_embed`` is not a parameter in ditkit (the sin-cos table is computed per
grid); it is compared with ditkit's table (max |diff| <= 1e-5) and dropped. Every failure is a
``CheckpointError`` with one line naming the key (and both shapes, for a mismatch).

The reference architecture is ditkit's default config (LayerNorm, GELU-tanh MLP, absolute sin-cos
positions, no RoPE, no QK-norm); switches that change the network are refused as overrides here —
build ``DiT(config)`` yourself and ``load_state_dict(strict=False)`` to start a variant from these weights.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..config import PRESETS, DiTConfig
from ..io.checkpoint import CheckpointError, load_tensors, load_torch_file
from .layers import grid_positions, sincos_2d

# ----------------------------------------------------------------------------- the key table

# (reference key, ditkit key). ditkit's module names were chosen equal to the reference's
# (timm's PatchEmbed/Attention/Mlp names), so the table is the identity — written out anyway,
# so that a rename on either side shows up here and nowhere else.
_TOP_KEYS = (
    ("x_embedder.proj.weight", "x_embedder.proj.weight"),  # (D, C, p, p)
    ("x_embedder.proj.bias", "x_embedder.proj.bias"),  # (D,)
    ("t_embedder.mlp.0.weight", "t_embedder.mlp.0.weight"),  # (D, 256)
    ("t_embedder.mlp.0.bias", "t_embedder.mlp.0.bias"),  # (D,)
    ("t_embedder.mlp.2.weight", "t_embedder.mlp.2.weight"),  # (D, D)
    ("t_embedder.mlp.2.bias", "t_embedder.mlp.2.bias"),  # (D,)
    ("y_embedder.embedding_table.weight", "y_embedder.embedding_table.weight"),  # (classes + 1, D)
    ("final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.weight"),  # (2D, D)
    ("final_layer.adaLN_modulation.1.bias", "final_layer.adaLN_modulation.1.bias"),  # (2D,)
    ("final_layer.linear.weight", "final_layer.linear.weight"),  # (p*p*C_out, D)
    ("final_layer.linear.bias", "final_layer.linear.bias"),  # (p*p*C_out,)
)
_BLOCK_KEYS = (  # under "blocks.{i}."
    ("attn.qkv.weight", "attn.qkv.weight"),  # (3D, D), rows [q; k; v]
    ("attn.qkv.bias", "attn.qkv.bias"),  # (3D,)
    ("attn.proj.weight", "attn.proj.weight"),  # (D, D)
    ("attn.proj.bias", "attn.proj.bias"),  # (D,)
    ("mlp.fc1.weight", "mlp.fc1.weight"),  # (4D, D)
    ("mlp.fc1.bias", "mlp.fc1.bias"),  # (4D,)
    ("mlp.fc2.weight", "mlp.fc2.weight"),  # (D, 4D)
    ("mlp.fc2.bias", "mlp.fc2.bias"),  # (D,)
    ("adaLN_modulation.1.weight", "adaLN_modulation.1.weight"),  # (6D, D)
    ("adaLN_modulation.1.bias", "adaLN_modulation.1.bias"),  # (6D,)
)
POS_EMBED_KEY = "pos_embed"  # (1, T, D) frozen sin-cos table; computed, not stored, in ditkit
POS_EMBED_ATOL = 1e-5

# Config fields that change the network away from the reference architecture.
_REFERENCE_SWITCHES = {
    "use_abs_pos": True, "use_rope": False, "qk_norm": False, "norm_type": "layernorm", "mlp_type": "gelu",
}


def reference_key_map(depth: int) -> dict[str, str]:
    """Reference key -> ditkit key for a DiT with `depth` blocks (no `pos_embed`)."""
    table = dict(_TOP_KEYS)
    for i in range(depth):
        for ref, ours in _BLOCK_KEYS:
            table[f"blocks.{i}.{ref}"] = f"blocks.{i}.{ours}"
    return table


# ----------------------------------------------------------------------------- reading


def read_reference(source) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """(state_dict, args or None) from a path (.pt/.pth/.safetensors) or an already-loaded dict."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        obj = load_tensors(path) if path.suffix == ".safetensors" else load_torch_file(path)
        where = str(path)
    else:
        obj, where = source, "the given object"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a state_dict or a training checkpoint dict, got {type(obj).__name__}")
    args = obj.get("args") if isinstance(obj.get("args"), argparse.Namespace) else None
    if "ema" in obj or "model" in obj:  # train.py checkpoint {"model", "ema", "opt", "args"}: use the EMA
        which = "ema" if "ema" in obj else "model"
        obj = obj[which]
        where = f"{where}[{which!r}]"
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where}: expected a state_dict, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            raise CheckpointError(f"{where}: entry {k!r} is not a named tensor ({type(v).__name__})")
    return dict(obj), args


def _shape(sd: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"not a reference DiT checkpoint: missing key {key!r}")
    return tuple(sd[key].shape)


def _heads_for(depth: int, hidden: int) -> int | None:
    """Head count of the DiT size (S/B/L/XL) with this depth and width, if there is one."""
    for name, preset in PRESETS.items():
        if name.startswith("DiT-") and (preset.depth, preset.hidden_size) == (depth, hidden):
            return preset.num_heads
    return None


def infer_config(sd: dict[str, torch.Tensor], args: argparse.Namespace | None = None, **overrides) -> DiTConfig:
    """The DiTConfig of a reference state_dict (shapes), refined by train.py `args` and `overrides`."""
    bad = {k: v for k, v in overrides.items() if k in _REFERENCE_SWITCHES and v != _REFERENCE_SWITCHES[k]}
    if bad:
        raise ValueError(
            f"{', '.join(f'{k}={v!r}' for k, v in bad.items())} is not the reference architecture; build "
            "DiT(config) and load_state_dict(strict=False) to start a variant from reference weights"
        )
    d, c, p, p2 = _shape(sd, "x_embedder.proj.weight")
    if p != p2:
        raise CheckpointError(f"x_embedder.proj.weight has a non-square patch {(p, p2)}")
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in sd:
        depth += 1
    fc1_out = _shape(sd, "blocks.0.mlp.fc1.weight")[0] if depth else 4 * d
    freq = _shape(sd, "t_embedder.mlp.0.weight")[1]
    rows = _shape(sd, "y_embedder.embedding_table.weight")[0]
    out = _shape(sd, "final_layer.linear.weight")[0]
    if out == 2 * p * p * c:
        learn_sigma = True
    elif out == p * p * c:
        learn_sigma = False
    else:
        raise CheckpointError(
            f"final_layer.linear.weight has {out} outputs; expected p*p*C = {p * p * c} or 2*p*p*C = {2 * p * p * c}"
        )

    fields: dict = dict(patch_size=p, in_channels=c, hidden_size=d, depth=depth, mlp_ratio=fc1_out / d,
                        frequency_embedding_size=freq, learn_sigma=learn_sigma,
                        num_classes=rows - 1, class_dropout_prob=0.1)  # reference: a null row (dropout 0.1)
    heads = _heads_for(depth, d)
    if POS_EMBED_KEY in sd:
        t = _shape(sd, POS_EMBED_KEY)[1]
        g = math.isqrt(t)
        if g * g != t:
            raise CheckpointError(f"pos_embed has {t} tokens, not a square grid")
        fields["input_size"] = g * p

    if args is not None:  # train.py args: model name, image size (pixels; latents are /8), classes
        name = getattr(args, "model", None)
        if name in PRESETS:
            preset = PRESETS[name]
            if (preset.depth, preset.hidden_size, preset.patch_size) != (depth, d, p):
                raise CheckpointError(
                    f"args.model={name!r} (depth {preset.depth}, D {preset.hidden_size}, p {preset.patch_size}) "
                    f"does not match the weights (depth {depth}, D {d}, p {p})"
                )
            heads = preset.num_heads
        if getattr(args, "image_size", None) and "input_size" not in fields:
            fields["input_size"] = int(args.image_size) // 8
        if getattr(args, "num_classes", None) is not None:
            fields["num_classes"] = int(args.num_classes)

    if "num_classes" in overrides:
        fields["num_classes"] = overrides["num_classes"]
    if fields["num_classes"] == rows:  # no null row: trained without label dropout
        fields["class_dropout_prob"] = 0.0
    if heads is not None:
        fields["num_heads"] = heads
    fields.update(overrides)
    if "num_heads" not in fields:
        raise CheckpointError(
            f"cannot infer num_heads for depth {depth}, hidden size {d} (not a DiT S/B/L/XL size); pass num_heads="
        )
    if "input_size" not in fields:
        raise CheckpointError("cannot infer input_size: no pos_embed and no args.image_size; pass input_size=")
    return DiTConfig(**fields)


# ----------------------------------------------------------------------------- loading / exporting


def convert_reference(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], cfg: DiTConfig,
                      copy: bool = True) -> dict[str, torch.Tensor]:
    """The reference weights ``sd`` under ditkit keys (float32, CPU), checked key by key against ``expected``
    (the state dict of a ``DiT(cfg)``, e.g. on the meta device) and the positional table against ditkit's.
    ``copy=False`` reuses the tensors (read from a file, so ours). `DiT.from_reference` loads the result."""
    table = reference_key_map(cfg.depth)

    unexpected = sorted(k for k in sd if k not in table and k != POS_EMBED_KEY)
    if unexpected:
        raise CheckpointError(f"unexpected key(s) in reference checkpoint: {', '.join(unexpected[:5])}"
                              + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    missing = [k for k in table if k not in sd]
    if missing:
        raise CheckpointError(f"missing key(s) in reference checkpoint: {', '.join(missing[:5])}"
                              + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    unmapped = sorted(set(expected) - set(table.values()))
    if unmapped:  # a config override gave the model parameters the reference does not have
        raise CheckpointError(f"the model has parameters with no reference counterpart: {', '.join(unmapped[:5])}")

    ours: dict[str, torch.Tensor] = {}
    for ref_key, key in table.items():
        src, want = sd[ref_key], expected[key]
        if src.shape != want.shape:
            raise CheckpointError(
                f"shape mismatch for {ref_key}: checkpoint {tuple(src.shape)}, model {tuple(want.shape)}"
            )
        t = src.detach().to(device="cpu", dtype=torch.float32)
        ours[key] = t.clone() if copy else t

    if POS_EMBED_KEY in sd:
        _check_pos_embed(sd[POS_EMBED_KEY], cfg)
    return ours


def _check_pos_embed(pe: torch.Tensor, cfg: DiTConfig) -> None:
    h, w = cfg.hw
    p = cfg.patch_size
    table = sincos_2d(cfg.hidden_size, grid_positions(h // p, w // p)).unsqueeze(0)  # (1, T, D)
    if tuple(pe.shape) != tuple(table.shape):
        raise CheckpointError(f"shape mismatch for pos_embed: checkpoint {tuple(pe.shape)}, model {tuple(table.shape)}")
    diff = (pe.detach().cpu().double() - table.double()).abs().max().item()
    if not diff <= POS_EMBED_ATOL:  # also catches NaN
        raise CheckpointError(
            f"the positional table differs from DiT's 2D sin-cos table (max |diff| {diff:.3g} > {POS_EMBED_ATOL:g}); "
            "ditkit computes it and cannot load a learned or differently laid-out pos_embed"
        )


def to_reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under reference keys, plus the reference's stored `pos_embed` (1, T, D)."""
    cfg = model.config
    bad = {k: getattr(cfg, k) for k, v in _REFERENCE_SWITCHES.items() if getattr(cfg, k) != v}
    if bad or cfg.num_classes <= 0:
        raise ValueError(f"not a reference-architecture DiT (config differs: {bad or {'num_classes': 0}})")
    h, w = cfg.hw
    if h != w:
        raise ValueError(f"the reference DiT is square; this model's input is {h}x{w}")
    ours = model.state_dict()
    out = {POS_EMBED_KEY: None}  # the reference's first key
    for ref_key, key in reference_key_map(cfg.depth).items():
        out[ref_key] = ours[key].detach()
    weight = ours["x_embedder.proj.weight"]
    pe = sincos_2d(cfg.hidden_size, grid_positions(h // cfg.patch_size, w // cfg.patch_size)).unsqueeze(0)
    out[POS_EMBED_KEY] = pe.to(device=weight.device, dtype=weight.dtype)  # (1, T, D)
    return out
