"""diffusers twins of ditkit models, for forward-parity checks and side-by-side benchmarks.

    model = randomize_zero_init(DiT(cfg))          # nonzero adaLN-Zero layers: parity is not vacuous
    twin = build_diffusers(model)                  # reference architecture: DiTTransformer2DModel, strict load
    twin, notes = diffusers_twin(model)            # any ditkit DiT, RoPE / QK-norm / Mix-FFN added to the twin

``build_diffusers`` is the export of ``ditkit.interop.diffusers_dit`` with diffusers' numerics accepted: the
twin computes the model up to diffusers' timestep-frequency divisor (docs/reference.md §4).
``diffusers_twin`` makes the twin compute the model's own function: its ``Timesteps`` shift and LayerNorm eps
are set to the model's values, and the features ``DiTTransformer2DModel`` has no switch for (2D RoPE,
QK-norm, Mix-FFN) are added as small modules — diffusers' own ``RMSNorm``, an attention processor with the
model's rotary tables, a copy of the model's Mix-FFN as each block's ``.ff``. Needs diffusers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.dit import DiT
from ..models.layers import apply_rope, grid_positions, rope_tables
from .diffusers_dit import numerics_changes, to_diffusers_model


def randomize_zero_init(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill the all-zero tensors (adaLN-Zero, final layer) with N(0, std): at init a DiT's output is exactly
    0, which would make a parity check vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def embedder_parameters(model: DiT) -> int:
    """Parameters of the t and y embedders, which diffusers' port holds once per block."""
    return sum(p.numel() for m in (model.t_embedder, model.y_embedder) for p in m.parameters())


def build_diffusers(model: DiT, **config_overrides) -> nn.Module:
    """A ``DiTTransformer2DModel`` holding ``model``'s weights (strict load, every shape checked), computing it up
    to diffusers' numerics; ``config_overrides`` e.g. ``norm_eps=1e-5`` for diffusers' default."""
    return to_diffusers_model(model, allow_numerics_change=True, **config_overrides)


class RotaryAttnProcessor:
    """Self-attention for diffusers' ``Attention`` with the ditkit model's 2D RoPE (and QK-norm if the module
    has ``norm_q``/``norm_k``): to_q/k/v -> heads -> norm -> rotary -> SDPA -> to_out."""

    def __init__(self, head_dim: int, grid: tuple[int, int], theta: float):
        self.cos, self.sin = rope_tables(head_dim, grid_positions(*grid), theta)  # (T, hd) each

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        n, t, _ = hidden_states.shape
        q, k, v = (proj(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (N, H, T, hd)
                   for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        cos, sin = self.cos.to(q.device), self.sin.to(q.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, hd)
        out = out.transpose(1, 2).reshape(n, t, -1)  # (N, T, D)
        return attn.to_out[1](attn.to_out[0](out))


class GridFeedForward(nn.Module):
    """A copy of the model's Mix-FFN as a block's ``.ff``: diffusers calls ``ff(hidden_states)`` and the
    depthwise conv needs the token grid, which is fixed for one model."""

    def __init__(self, mlp: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.mlp, self.grid = copy.deepcopy(mlp), grid

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.mlp(hidden_states, self.grid)


def diffusers_twin(model: DiT) -> tuple[nn.Module, list[str]]:
    """A ``DiTTransformer2DModel`` holding ``model``'s weights and numerics, and notes on what was added."""
    from diffusers.models.normalization import RMSNorm

    cfg, notes = model.config, []
    mixffn = cfg.mlp_type == "mixffn"
    extras = {k for k in model.state_dict() if ".q_norm." in k or ".k_norm." in k or ".mlp.dwconv." in k}
    if not (cfg.use_rope or cfg.qk_norm or mixffn):
        return _same_numerics(build_diffusers(model), cfg, notes), notes
    with torch.device("meta"):  # Mix-FFN's fc1/fc2 have the plain MLP's shapes; its dwconv is added below
        plain = DiT(cfg.replace(use_rope=False, qk_norm=False, mlp_type="gelu" if mixffn else cfg.mlp_type))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in extras}, assign=True)
    twin = build_diffusers(plain)
    first = next(model.parameters())
    grid = (cfg.hw[0] // cfg.patch_size, cfg.hw[1] // cfg.patch_size)
    for i, block in enumerate(twin.transformer_blocks):
        if mixffn:
            block.ff = GridFeedForward(model.blocks[i].mlp, grid)
        attn = block.attn1
        if cfg.qk_norm:
            src = model.blocks[i].attn
            attn.norm_q = RMSNorm(cfg.head_dim, eps=src.q_norm.eps).to(first)
            attn.norm_k = RMSNorm(cfg.head_dim, eps=src.k_norm.eps).to(first)
            with torch.no_grad():
                attn.norm_q.weight.copy_(src.q_norm.weight)
                attn.norm_k.weight.copy_(src.k_norm.weight)
        if cfg.use_rope:
            attn.set_processor(RotaryAttnProcessor(cfg.head_dim, grid, cfg.rope_theta))
    _same_numerics(twin, cfg, notes)
    added = [name for name, on in (("QK-norm (diffusers RMSNorm as attn1.norm_q/norm_k)", cfg.qk_norm),
                                   ("2D RoPE (RotaryAttnProcessor)", cfg.use_rope),
                                   ("Mix-FFN (GridFeedForward as .ff)", mixffn)) if on]
    notes.append("the model uses " + " and ".join(added) + ", which DiTTransformer2DModel has no switch for; "
                 "added to the diffusers twin")
    return twin, notes


def _same_numerics(twin: nn.Module, cfg, notes: list[str]) -> nn.Module:
    """Set the twin's timestep-frequency shift and LayerNorm eps to the model's (docs/reference.md §4), so that
    both compute the function the model was trained as; diffusers' defaults are shift 1, eps 1e-6."""
    changes = numerics_changes(cfg)
    if not changes:
        return twin
    for block in twin.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = cfg.timestep_freq_shift  # Timesteps(..., shift)
        block.norm1.norm.eps = cfg.norm_eps  # pre-attention LayerNorm
    twin.norm_out.eps = cfg.norm_eps
    notes.append("diffusers' DiT defaults differ from this model's numerics (" + "; ".join(changes) + "): the twin's "
                 "Timesteps.downscale_freq_shift and LayerNorm eps are set to the model's values")
    return twin
