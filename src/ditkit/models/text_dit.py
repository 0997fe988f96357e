"""Text-to-image models assembled: which network a config builds, the encoder + DiT pair that
trains as one module, and the start from a class-conditional DiT.

* `build_model(config)` — `DiT` for a `DiTConfig`, `CrossDiT` / `MMDiT` for a `TextDiTConfig`.
* `TextToImage(encoder, dit)` — ``forward(x, t, ids, ids_mask)``: the encoder runs inside the
  forward, so a trainable encoder (`WordTextEncoder`) learns with the DiT, shares its optimizer,
  EMA and checkpoints (state-dict keys ``encoder.*`` and ``dit.*``), and DDP sees one module.
* `init_from_class_dit(model, dit)` — copy the weights a text model shares with a trained
  class-conditional DiT of the same trunk size. PixArt-α (Chen et al. 2023, §2.3 "Re-parameterization")
  starts from a class-conditional DiT the same way; its adaLN-single tables are initialised so the
  text model's modulation equals the DiT's at one reference time t_ref (here with the null class,
  the DiT's unconditional model): E_i = adaLN_i(c_ref) - t_block(t_emb(t_ref)), with t_block taken
  as the mean of the DiT's per-block adaLN MLPs. MMDiT's image stream has DiT's block layout and
  copies it directly (the text stream and pooled embedder start fresh).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import DiTConfig, TextDiTConfig
from .cross_dit import CrossDiT
from .dit import DiT
from .mmdit import MMDiT
from .text_encoder import TextEncoder

TextDiT = CrossDiT | MMDiT


def build_model(config: DiTConfig) -> DiT | CrossDiT | MMDiT:
    if isinstance(config, TextDiTConfig):
        return CrossDiT(config) if config.arch == "cross" else MMDiT(config)
    return DiT(config)


class TextToImage(nn.Module):
    """A text encoder and a text-conditioned DiT as one trainable module."""

    def __init__(self, encoder: TextEncoder, dit: CrossDiT | MMDiT):
        super().__init__()
        if encoder.text_dim != dit.config.text_dim:
            raise ValueError(f"the text encoder gives {encoder.text_dim}-dim tokens, the DiT expects text_dim "
                             f"{dit.config.text_dim}")
        self.encoder, self.dit = encoder, dit

    @property
    def config(self) -> TextDiTConfig:
        return self.dit.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, ids_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(ids, ids_mask)  # (N, L, D_txt)
        return self.dit(x, t, tokens, ids_mask)  # (N, C_out, H, W)


_TRUNK_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
                 "learn_sigma", "use_abs_pos", "use_rope", "rope_theta", "qk_norm", "norm_type", "mlp_type",
                 "frequency_embedding_size", "norm_eps", "timestep_freq_shift", "mlp_norm_eps")


@torch.no_grad()
def init_from_class_dit(model: CrossDiT | MMDiT, dit: DiT, t_ref: float = 500.0) -> list[str]:
    """Copy the shared weights of a class-conditional `dit` into `model` (see the module docstring).

    Returns the names of the parameters of `model` that were set. Raises ValueError when the
    two trunks differ in any shape-defining or numerics field.
    """
    diff = [f for f in _TRUNK_FIELDS if getattr(model.config, f) != getattr(dit.config, f)]
    if diff:
        raise ValueError("the class-conditional DiT's trunk differs from the text model's in "
                         + ", ".join(f"{f} ({getattr(dit.config, f)} vs {getattr(model.config, f)})" for f in diff))
    src = dit.state_dict()
    dst = model.state_dict()
    copied: dict[str, torch.Tensor] = {}

    def take(prefix_to: str, prefix_from: str) -> None:
        for k, v in src.items():
            if k.startswith(prefix_from):
                copied[prefix_to + k[len(prefix_from):]] = v

    take("x_embedder.", "x_embedder.")
    take("t_embedder.", "t_embedder.")
    if isinstance(model, CrossDiT):
        for i in range(dit.config.depth):
            take(f"blocks.{i}.attn.", f"blocks.{i}.attn.")
            take(f"blocks.{i}.mlp.", f"blocks.{i}.mlp.")
        take("final_layer.linear.", "final_layer.linear.")
        t = torch.tensor([t_ref])
        t_emb = dit.t_embedder(t)  # (1, D)
        c_ref = dit.condition(t, torch.full((1,), dit.config.num_classes, dtype=torch.long)) \
            if dit.y_embedder is not None and dit.y_embedder.embedding_table.num_embeddings > dit.config.num_classes \
            else t_emb  # (1, D): the null class where the DiT has one
        weight = torch.stack([b.adaLN_modulation[-1].weight for b in dit.blocks]).mean(0)  # (6D, D)
        bias = torch.stack([b.adaLN_modulation[-1].bias for b in dit.blocks]).mean(0)  # (6D,)
        copied["t_block.1.weight"], copied["t_block.1.bias"] = weight, bias
        shared = nn.functional.linear(nn.functional.silu(t_emb), weight, bias)  # (1, 6D)
        for i, b in enumerate(dit.blocks):
            copied[f"blocks.{i}.scale_shift_table"] = (b.adaLN_modulation(c_ref) - shared).view(6, -1)  # (6, D)
        final = dit.final_layer.adaLN_modulation(c_ref)  # (1, 2D)
        copied["final_layer.scale_shift_table"] = (final - t_emb.repeat(1, 2)).view(2, -1)  # (2, D)
    else:  # MMDiT: the image stream is DiT's block
        for i in range(dit.config.depth):
            take(f"blocks.{i}.attn.image.", f"blocks.{i}.attn.")
            take(f"blocks.{i}.mlp.", f"blocks.{i}.mlp.")
            take(f"blocks.{i}.adaLN_modulation.", f"blocks.{i}.adaLN_modulation.")
        take("final_layer.", "final_layer.")
    unknown = sorted(set(copied) - set(dst))
    if unknown:  # a programming error in the tables above, never the user's
        raise RuntimeError(f"init_from_class_dit: no such parameters {unknown[:3]}")
    for k, v in copied.items():
        dst[k].copy_(v.to(dst[k].dtype))
    return sorted(copied)
