"""The Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

The forward pass is split into three public stages so that wrappers (caching, token
selection, quantization) can drive the trunk without editing the model:

    tokens, ctx = model.embed(x)            # patchify + positions   (N, T, D)
    c = model.condition(t, y)               # timestep + label       (N, D)
    for block in model.blocks:              # the trunk: tokens in, tokens out
        tokens = block(tokens, c, ctx)
    out = model.final(tokens, c, ctx)       # final adaLN layer + unpatchify (N, C_out, H, W)

`TokenContext` carries the token grid and positions (and rotary tables), so the trunk works
on any token sequence with positions: images (row, col) here, video (frame, row, col) in `VideoDiT`.
The network knows nothing of the noise process: t is whatever the process feeds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..config import DiTConfig
from .layers import (
    Attention,
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    grid_positions,
    make_mlp,
    make_norm,
    modulate,
    reference_init,
    rope_tables,
    sincos_2d,
)
from .reference import convert_reference, infer_config, read_reference


@dataclass
class TokenContext:
    """What every block needs to know about the token sequence besides the tokens."""

    grid: tuple[int, ...]  # token grid, e.g. (h, w)
    positions: torch.Tensor  # (T, n_axes) integer coordinates
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin), each (T, head_dim)
    pos_embed: torch.Tensor | None = None  # fixed sin-cos table (1, T, D), if the model adds one


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate * Attn(mod(norm(x))); x += gate * MLP(mod(norm(x)))."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = make_norm(cfg.norm_type, d, cfg.norm_eps)
        self.attn = Attention(d, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.norm_eps)
        self.norm2 = make_norm(cfg.norm_type, d, cfg.norm_eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = make_mlp(cfg.mlp_type, d, hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, bias=True))

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), each (N, D)."""
        return self.adaLN_modulation(c).chunk(6, dim=1)

    def attn_branch(self, x, mod, ctx: TokenContext) -> torch.Tensor:
        shift, scale, gate = mod[0], mod[1], mod[2]
        return gate.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift, scale), rope=ctx.rope)

    def mlp_branch(self, x, mod, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        shift, scale, gate = mod[3], mod[4], mod[5]
        h = modulate(self.norm2(x), shift, scale)
        return gate.unsqueeze(1) * self.mlp(h, grid)  # the grid: Mix-FFN convolves over it

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: TokenContext) -> torch.Tensor:
        mod = self.modulation(c)
        x = x + self.attn_branch(x, mod, ctx)  # (N, T, D)
        return x + self.mlp_branch(x, mod, ctx.grid)  # (N, T, D)


class FinalLayer(nn.Module):
    """norm -> adaLN modulate (shift, scale) -> Linear(D, p*p*C_out)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.norm_final = make_norm(cfg.norm_type, d, cfg.norm_eps)
        self.linear = nn.Linear(d, p * p * cfg.out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


class DiT(nn.Module):
    """Class-conditional DiT. forward(x (N, C, H, W), t (N,), y (N,) long) -> (N, C_out, H, W)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size, cfg.timestep_freq_shift)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        self._ctx_cache: dict[tuple, TokenContext] = {}
        self.initialize_weights()

    # ------------------------------------------------------------------ init (reference DiT)
    def initialize_weights(self) -> None:
        reference_init(self)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts closed
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ------------------------------------------------------------------ stages
    def token_context(self, grid: tuple[int, ...], device) -> TokenContext:
        key = (grid, str(device))
        ctx = self._ctx_cache.get(key)
        if ctx is None:
            with torch.inference_mode(False):  # cached tables made under inference_mode could not enter autograd later
                ctx = self._ctx_cache[key] = self._build_token_context(grid, device)
        return ctx

    def _build_token_context(self, grid: tuple[int, ...], device) -> TokenContext:
        pos = grid_positions(*grid, device=device)  # (T, 2)
        rope = None
        if self.config.use_rope:
            cos, sin = rope_tables(self.config.head_dim, pos.cpu(), self.config.rope_theta)
            rope = (cos.to(device), sin.to(device))
        pe = None
        if self.config.use_abs_pos:  # float64 table built on the CPU, cast to float32 (reference)
            pe = sincos_2d(self.config.hidden_size, pos.cpu()).to(device).unsqueeze(0)  # (1, T, D)
        return TokenContext(grid, pos, rope, pe)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenContext]:
        p = self.config.patch_size
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % p or x.shape[3] % p:
            raise ValueError(
                f"expected input (N, {self.config.in_channels}, H, W) with H, W divisible by {p}, "
                f"got {tuple(x.shape)}"
            )
        ctx = self.token_context((x.shape[2] // p, x.shape[3] // p), x.device)
        tokens = self.x_embedder(x)  # (N, T, D)
        if ctx.pos_embed is not None:
            tokens = tokens + ctx.pos_embed.to(tokens.dtype)
        return tokens, ctx

    def condition(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = self.t_embedder(t)  # (N, D)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass labels y")
            c = c + self.y_embedder(y, self.training)  # (N, D)
        return c

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        p, c_out = self.config.patch_size, self.config.out_channels
        h, w = grid
        x = x.reshape(x.shape[0], h, w, p, p, c_out)  # (N, h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p, w, p)
        return x.reshape(x.shape[0], c_out, h * p, w * p)  # (N, C, H, W)

    def final(self, tokens: torch.Tensor, c: torch.Tensor, ctx: TokenContext) -> torch.Tensor:
        return self.unpatchify(self.final_layer(tokens, c), ctx.grid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tokens, ctx = self.embed(x)  # (N, T, D)
        c = self.condition(t, y)  # (N, D)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)  # (N, T, D)
        return self.final(tokens, c, ctx)  # (N, C_out, H, W)

    # ------------------------------------------------------------------ bookkeeping
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _apply(self, fn, *args, **kwargs):
        self._ctx_cache.clear()  # device/dtype moves invalidate cached position tables
        return super()._apply(fn, *args, **kwargs)

    @classmethod
    def from_reference(cls, source, **config_overrides) -> DiT:
        """A DiT (eval mode) from a reference facebookresearch/DiT checkpoint: a path (.pt, .safetensors)
        or a loaded dict; config inferred from shapes, `config_overrides` win. See `models/reference.py`."""
        sd, args = read_reference(source)
        config = infer_config(sd, args, **config_overrides)
        with torch.device("meta"):  # no allocation or init: every parameter is assigned from the file
            model = DiT(config)
        owned = isinstance(source, (str, os.PathLike))  # tensors read from a file are ours; a caller's dict is copied
        model.load_state_dict(convert_reference(sd, model.state_dict(), config, copy=not owned), strict=True,
                              assign=True)
        return model.eval()


def mlp_macs_per_token(cfg) -> int:
    """MACs of one MLP on one token (GELU MLP, SwiGLU or Mix-FFN), as in ``macs_per_forward``."""
    d, hidden = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
    if cfg.mlp_type == "swiglu":
        return 3 * int(2 * hidden / 3) * d
    return 2 * hidden * d + (9 * hidden if cfg.mlp_type == "mixffn" else 0)


def macs_per_forward(cfg: DiTConfig, batch: int = 1) -> int:
    """Multiply-accumulates of one forward (linear layers + attention matmuls + patch/final).

    Blocks: depth * (T * (4 D^2 attn-linears + 2 * hidden * D MLP) + 2 T^2 D attention), which
    for DiT-XL/2 at 256px gives the paper's 118.6 "Gflops" (which are MACs).
    """
    d, t, p = cfg.hidden_size, cfg.num_tokens, cfg.patch_size
    mlp = mlp_macs_per_token(cfg)
    block = t * (4 * d * d + mlp) + 2 * t * t * d + 6 * d * d
    head = t * (cfg.in_channels * p * p * d + d * p * p * cfg.out_channels) + 2 * d * d
    embed = cfg.frequency_embedding_size * d + d * d
    return batch * (cfg.depth * block + head + embed)
