"""diffusers' ``DiTTransformer2DModel`` <-> ditkit ``DiT``: the key table, configs and numerics.

    sd = to_diffusers_state_dict(model.state_dict(), depth)   # and from_diffusers_state_dict back
    dmodel = to_diffusers_model(model)                        # an in-memory DiTTransformer2DModel (needs diffusers)
    model = from_diffusers_model(dmodel)

Folders (``save_pretrained`` layout, read and written without diffusers) are in ``diffusers_folder.py``.

Key table (docs/reference.md §4; huggingface/diffusers v0.42.1, ``scripts/convert_dit_to_diffusers.py``):

    ditkit                                   diffusers
    x_embedder.proj.*                        pos_embed.proj.*
    t_embedder.mlp.0.* / mlp.2.*             transformer_blocks.{i}.norm1.emb.timestep_embedder.linear_1.* / linear_2.*
    y_embedder.embedding_table.weight        transformer_blocks.{i}.norm1.emb.class_embedder.embedding_table.weight
    blocks.{i}.adaLN_modulation.1.*          transformer_blocks.{i}.norm1.linear.*
    blocks.{i}.attn.qkv.*  (rows [q; k; v])  transformer_blocks.{i}.attn1.to_q.* / to_k.* / to_v.*
    blocks.{i}.attn.proj.*                   transformer_blocks.{i}.attn1.to_out.0.*
    blocks.{i}.mlp.fc1.* / fc2.*             transformer_blocks.{i}.ff.net.0.proj.* / ff.net.2.*
    final_layer.adaLN_modulation.1.*         proj_out_1.*
    final_layer.linear.*                     proj_out_2.*

diffusers keeps a copy of the t/y embedders in **every** block (block 0's copy also conditions the
final layer). Export writes the copies; import checks that all copies are identical and raises a
``CheckpointError`` naming the block otherwise. The sin-cos position table is a non-persistent buffer
in diffusers (not in the file); a stored ``pos_embed.pos_embed`` is checked against ditkit's table.
Parity holds at the configured ``sample_size`` (square): at other sizes diffusers' ``PatchEmbed`` rescales
the positions by ``base_size / grid`` while ditkit keeps integer positions.

Numerics (docs/reference.md §4, read from diffusers 0.42.1). diffusers' port differs from the reference DiT in
  1. the timestep frequencies, ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)``:
     exp(-ln(1e4) i / 127) instead of / 128  -> ditkit ``DiTConfig.timestep_freq_shift`` (0 ref., 1 diffusers);
  2. the pre-MLP LayerNorm ``norm3``, whose eps is the config's ``norm_eps`` (default 1e-5; the reference
     uses 1e-6)  -> ditkit ``DiTConfig.mlp_norm_eps``. The pre-attention norm and the final norm are fixed
     at eps 1e-6 in diffusers, as in the reference.
Import sets ``timestep_freq_shift=1`` and ``mlp_norm_eps`` from the file, so the imported model computes
what diffusers computes. Export writes ``norm_eps`` = the model's pre-MLP eps (exact), but diffusers has no
way to express ``timestep_freq_shift != 1`` or a pre-attention/final eps other than 1e-6: exporting such a
model (every reference-numerics model) changes its function slightly (max |Δ| of the timestep features
0.0027 at t=1, 1.94 at t=999), so export **refuses** unless ``allow_numerics_change=True``.
"""

from __future__ import annotations

import torch

from ..config import DiTConfig
from ..io.checkpoint import CheckpointError
from ..models.dit import DiT
from ..models.layers import grid_positions, sincos_2d

CLASS_NAME = "DiTTransformer2DModel"
LEGACY_CLASS_NAME = "Transformer2DModel"  # older diffusers DiT folders (e.g. the converted facebook/DiT-XL-2-256)

DIFFUSERS_TIMESTEP_FREQ_SHIFT = 1  # CombinedTimestepLabelEmbeddings: Timesteps(..., downscale_freq_shift=1)
DIFFUSERS_FIXED_EPS = 1e-6  # AdaLayerNormZero.norm (pre-attention) and norm_out: LayerNorm(eps=1e-6)
DIFFUSERS_FREQ_SIZE = 256  # Timesteps(num_channels=256)
POS_EMBED_KEY = "pos_embed.pos_embed"  # only present if a writer made the buffer persistent
POS_EMBED_ATOL = 1e-5

# ----------------------------------------------------------------------------- the key table

# (ditkit module, diffusers module): one tensor each, leaves "weight" and "bias".
_TOP = (
    ("x_embedder.proj", "pos_embed.proj"),  # Conv2d (D, C, p, p)
    ("final_layer.adaLN_modulation.1", "proj_out_1"),  # (2D, D): shift, scale
    ("final_layer.linear", "proj_out_2"),  # (p*p*C_out, D)
)
_BLOCK = (  # under blocks.{i}. / transformer_blocks.{i}.
    ("adaLN_modulation.1", "norm1.linear"),  # (6D, D): shift/scale/gate msa, shift/scale/gate mlp
    ("attn.proj", "attn1.to_out.0"),  # (D, D)
    ("mlp.fc1", "ff.net.0.proj"),  # (4D, D), GELU(tanh) inside ff.net.0
    ("mlp.fc2", "ff.net.2"),  # (D, 4D)
)
_QKV = ("attn.qkv", ("attn1.to_q", "attn1.to_k", "attn1.to_v"))  # (3D, D) rows [q; k; v] -> 3 x (D, D)
_EMBEDDERS = (  # one ditkit tensor -> a copy under transformer_blocks.{i}. for every block i
    ("t_embedder.mlp.0.weight", "norm1.emb.timestep_embedder.linear_1.weight"),  # (D, 256)
    ("t_embedder.mlp.0.bias", "norm1.emb.timestep_embedder.linear_1.bias"),
    ("t_embedder.mlp.2.weight", "norm1.emb.timestep_embedder.linear_2.weight"),  # (D, D)
    ("t_embedder.mlp.2.bias", "norm1.emb.timestep_embedder.linear_2.bias"),
    ("y_embedder.embedding_table.weight", "norm1.emb.class_embedder.embedding_table.weight"),  # (classes + 1, D)
)

COPY, SPLIT, REPLICATE = "copy", "split", "replicate"


def diffusers_key_table(depth: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """(ditkit key, kind, diffusers keys) for a DiT with ``depth`` blocks, used both ways.

    kind ``copy``: one tensor; ``split``: the ditkit tensor is the concatenation (dim 0) of the diffusers
    tensors; ``replicate``: every diffusers key holds a copy of the ditkit tensor (one per block).
    """
    table: list[tuple[str, str, tuple[str, ...]]] = []
    leaves = ("weight", "bias")
    for ours, theirs in _TOP:
        table += [(f"{ours}.{leaf}", COPY, (f"{theirs}.{leaf}",)) for leaf in leaves]
    for ours, theirs in _EMBEDDERS:
        table.append((ours, REPLICATE, tuple(f"transformer_blocks.{i}.{theirs}" for i in range(depth))))
    for i in range(depth):
        for leaf in leaves:
            table.append((f"blocks.{i}.{_QKV[0]}.{leaf}", SPLIT,
                          tuple(f"transformer_blocks.{i}.{name}.{leaf}" for name in _QKV[1])))
            table += [(f"blocks.{i}.{ours}.{leaf}", COPY, (f"transformer_blocks.{i}.{theirs}.{leaf}",))
                      for ours, theirs in _BLOCK]
    return table


def _listing(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def to_diffusers_state_dict(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A ditkit DiT state dict under diffusers' keys: qkv split, embedders copied into every block.

    Every output tensor is a fresh, contiguous copy (safetensors refuses tensors sharing storage).
    """
    table = diffusers_key_table(depth)
    unknown = set(sd) - {ours for ours, _, _ in table}
    if unknown:
        raise CheckpointError(f"no diffusers counterpart for ditkit key(s): {_listing(unknown)}")
    missing = [ours for ours, _, _ in table if ours not in sd]
    if missing:
        raise CheckpointError(f"missing ditkit key(s): {_listing(missing)}")
    out: dict[str, torch.Tensor] = {}
    for ours, kind, theirs in table:
        value = sd[ours].detach()
        parts = value.chunk(3, dim=0) if kind == SPLIT else [value] * len(theirs)  # SPLIT: 3 x (D, ...)
        for key, part in zip(theirs, parts):
            out[key] = part.clone(memory_format=torch.contiguous_format)
    return out


def from_diffusers_state_dict(sd: dict[str, torch.Tensor], depth: int, where: str = "diffusers weights"
                              ) -> dict[str, torch.Tensor]:
    """diffusers keys -> ditkit keys (the inverse of ``to_diffusers_state_dict``), checking that the
    per-block embedder copies are identical. Shapes are checked by the caller against the model."""
    table = diffusers_key_table(depth)
    known = {key for _, _, theirs in table for key in theirs} | {POS_EMBED_KEY}
    unexpected = set(sd) - known
    if unexpected:
        raise CheckpointError(f"{where}: unexpected key(s) for a {depth}-block DiT: {_listing(unexpected)}")
    missing = [key for _, _, theirs in table for key in theirs if key not in sd]
    if missing:
        raise CheckpointError(f"{where}: missing key(s): {_listing(missing)}")
    out: dict[str, torch.Tensor] = {}
    for ours, kind, theirs in table:
        tensors = [sd[key] for key in theirs]
        if kind == SPLIT:
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1:
                raise CheckpointError(f"{where}: q/k/v shapes differ for {ours}: {', '.join(map(str, shapes))}")
            out[ours] = torch.cat(tensors, dim=0)  # rows [q; k; v]
        elif kind == REPLICATE:
            first = tensors[0]
            for i, other in enumerate(tensors[1:], start=1):
                if other.shape != first.shape or not torch.equal(other, first):
                    diff = ((other.double() - first.double()).abs().max().item()
                            if other.shape == first.shape else f"shapes {tuple(other.shape)} vs {tuple(first.shape)}")
                    raise CheckpointError(
                        f"{where}: the per-block embedder copies differ ({theirs[i]} vs {theirs[0]}: max |diff| "
                        f"{diff}); diffusers conditions each block with its own copy, ditkit has one embedder, "
                        "so this model cannot be imported"
                    )
            out[ours] = first
        else:
            out[ours] = tensors[0]
    return out


# ----------------------------------------------------------------------------- configs


def numerics_changes(cfg: DiTConfig) -> list[str]:
    """What diffusers would compute differently from ``cfg`` (empty: the export is exact)."""
    changes = []
    if cfg.timestep_freq_shift != DIFFUSERS_TIMESTEP_FREQ_SHIFT:
        changes.append(f"timestep frequencies /(half - {DIFFUSERS_TIMESTEP_FREQ_SHIFT}) instead of "
                       f"/(half - {cfg.timestep_freq_shift}) (timestep_freq_shift)")
    if cfg.norm_eps != DIFFUSERS_FIXED_EPS:
        changes.append(f"pre-attention and final LayerNorm eps {DIFFUSERS_FIXED_EPS:g} instead of {cfg.norm_eps:g} (norm_eps)")
    return changes


def diffusers_config(cfg: DiTConfig, *, allow_numerics_change: bool = False) -> dict:
    """``DiTTransformer2DModel.__init__`` arguments for ``cfg`` (every argument, as ``save_pretrained`` writes).

    Raises ValueError for an architecture diffusers' DiT cannot express, and for numerics it would change
    (see module doc) unless ``allow_numerics_change``.
    """
    h, w = cfg.hw
    unsupported = {
        "non-square input": h != w,
        "use_rope": cfg.use_rope,
        "qk_norm": cfg.qk_norm,
        "norm_type != layernorm": cfg.norm_type != "layernorm",
        "mlp_type != gelu": cfg.mlp_type != "gelu",
        "use_abs_pos=False": not cfg.use_abs_pos,
        "mlp_ratio != 4": cfg.mlp_ratio != 4.0,
        f"frequency_embedding_size != {DIFFUSERS_FREQ_SIZE}": cfg.frequency_embedding_size != DIFFUSERS_FREQ_SIZE,
        "unconditional (num_classes=0)": cfg.num_classes <= 0,
        "class_dropout_prob=0 (no null row)": cfg.class_dropout_prob <= 0,
    }
    bad = [name for name, hit in unsupported.items() if hit]
    if bad:
        raise ValueError(f"diffusers' {CLASS_NAME} has no equivalent for: {', '.join(bad)}")
    changes = numerics_changes(cfg)
    if changes and not allow_numerics_change:
        raise ValueError(
            f"diffusers would compute this model with different numerics: {'; '.join(changes)}. "
            "Pass allow_numerics_change=True (CLI: --allow-numerics-change) to export anyway (docs/reference.md §4)"
        )
    return {
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_layers": cfg.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,  # unused by the DiT blocks; diffusers' default
        "attention_bias": True,
        "sample_size": h,
        "patch_size": cfg.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": cfg.num_classes,
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps,  # only norm3 reads it
    }


# (key, value the ditkit DiT needs); a legacy Transformer2DModel config has more keys, checked here too.
_REQUIRED = (
    ("norm_type", "ada_norm_zero"),
    ("activation_fn", "gelu-approximate"),
    ("attention_bias", True),
    ("norm_elementwise_affine", False),
)
_LEGACY_REQUIRED = (  # Transformer2DModel: switches that would change the network, at their DiT values
    ("cross_attention_dim", None), ("num_vector_embeds", None), ("only_cross_attention", False),
    ("double_self_attention", False), ("ff_inner_dim", None), ("caption_channels", None),
)


def config_from_diffusers(d: dict, where: str = "config.json") -> DiTConfig:
    """The ditkit DiTConfig computing what diffusers computes for this ``DiTTransformer2DModel`` config."""
    name = d.get("_class_name", CLASS_NAME)
    if name not in (CLASS_NAME, LEGACY_CLASS_NAME):
        raise CheckpointError(f"{where}: _class_name is {name!r}, not a diffusers DiT ({CLASS_NAME})")
    checks = _REQUIRED + (_LEGACY_REQUIRED if name == LEGACY_CLASS_NAME else ())
    for key, want in checks:
        if d.get(key, want) != want:
            raise CheckpointError(f"{where}: {key}={d[key]!r} is not supported (ditkit's DiT needs {want!r})")
    try:
        heads, head_dim = int(d.get("num_attention_heads", 16)), int(d.get("attention_head_dim", 72))
        in_ch = int(d.get("in_channels", 4))
        out_ch = int(d["out_channels"]) if d.get("out_channels") is not None else in_ch
        patch, side = d.get("patch_size", 2), int(d.get("sample_size", 32))
        classes = d.get("num_embeds_ada_norm", 1000)
        depth, eps = int(d.get("num_layers", 28)), float(d.get("norm_eps", 1e-5))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad value in the model config ({e})") from None
    if patch is None or classes is None:
        raise CheckpointError(f"{where}: patch_size and num_embeds_ada_norm are needed for a class-conditional DiT")
    if out_ch not in (in_ch, 2 * in_ch):
        raise CheckpointError(f"{where}: out_channels={out_ch}; ditkit needs in_channels ({in_ch}) or twice that")
    try:
        return DiTConfig(
            input_size=side, patch_size=int(patch), in_channels=in_ch, hidden_size=heads * head_dim, depth=depth,
            num_heads=heads, mlp_ratio=4.0, num_classes=int(classes), class_dropout_prob=0.1,  # diffusers: always a null row
            learn_sigma=out_ch == 2 * in_ch, frequency_embedding_size=DIFFUSERS_FREQ_SIZE, norm_eps=DIFFUSERS_FIXED_EPS,
            timestep_freq_shift=DIFFUSERS_TIMESTEP_FREQ_SHIFT,
            mlp_norm_eps=None if eps == DIFFUSERS_FIXED_EPS else eps,
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- in memory


def model_from_diffusers_state(sd: dict[str, torch.Tensor], config: dict, where: str = "diffusers model") -> DiT:
    """A ditkit DiT (eval, float32, CPU) from a diffusers state dict and its config dict."""
    cfg = config_from_diffusers(config, where)
    ours = from_diffusers_state_dict(sd, cfg.depth, where)
    if POS_EMBED_KEY in sd:
        _check_pos_embed(sd[POS_EMBED_KEY], cfg, where)
    with torch.device("meta"):  # no allocation or init: every parameter is assigned below
        model = DiT(cfg)
    expected = model.state_dict()
    for key, want in expected.items():
        if ours[key].shape != want.shape:
            raise CheckpointError(f"{where}: shape mismatch for {key}: file {tuple(ours[key].shape)}, "
                                  f"config needs {tuple(want.shape)}")
    state = {k: v.detach().to(device="cpu", dtype=torch.float32).clone() for k, v in ours.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _check_pos_embed(pe: torch.Tensor, cfg: DiTConfig, where: str) -> None:
    g = cfg.hw[0] // cfg.patch_size
    table = sincos_2d(cfg.hidden_size, grid_positions(g, g)).unsqueeze(0)  # (1, T, D)
    if tuple(pe.shape) != tuple(table.shape):
        raise CheckpointError(f"{where}: shape mismatch for {POS_EMBED_KEY}: file {tuple(pe.shape)}, "
                              f"config needs {tuple(table.shape)}")
    diff = (pe.double() - table.double()).abs().max().item()
    if not diff <= POS_EMBED_ATOL:
        raise CheckpointError(f"{where}: {POS_EMBED_KEY} is not the 2D sin-cos table (max |diff| {diff:.3g})")


def to_diffusers_model(model: DiT, *, allow_numerics_change: bool = False, **config_overrides):
    """A ``DiTTransformer2DModel`` with ``model``'s weights (strict load), on its device and dtype.

    ``config_overrides`` replace entries of ``diffusers_config`` (e.g. ``norm_eps=1e-5`` for diffusers'
    default). Needs diffusers installed.
    """
    from diffusers import DiTTransformer2DModel

    cfg = model.config
    dmodel = DiTTransformer2DModel(**{**diffusers_config(cfg, allow_numerics_change=allow_numerics_change),
                                      **config_overrides})
    mapped = to_diffusers_state_dict(model.state_dict(), cfg.depth)
    expected = dmodel.state_dict()
    if set(mapped) != set(expected):
        raise CheckpointError(f"key table mismatch with diffusers: missing {_listing(set(expected) - set(mapped))}, "
                              f"unexpected {_listing(set(mapped) - set(expected))}")
    for k, v in mapped.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{k}: ditkit gives {tuple(v.shape)}, diffusers expects {tuple(expected[k].shape)}")
    dmodel.load_state_dict(mapped, strict=True)
    first = next(model.parameters())
    return dmodel.to(device=first.device, dtype=first.dtype).eval()


def from_diffusers_model(dmodel) -> DiT:
    """A ditkit DiT from an in-memory ``DiTTransformer2DModel`` (its config and state dict)."""
    config = {"_class_name": type(dmodel).__name__, **dict(dmodel.config)}
    return model_from_diffusers_state(dmodel.state_dict(), config, where=type(dmodel).__name__)
