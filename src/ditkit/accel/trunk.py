"""The trunk driver every acceleration policy shares: blocks, branches, token views, MAC counts.

A `Trunk` is built for one model call from the DiT's public stages (``embed`` and ``condition``
have run; ``final`` runs afterwards) and hands policies the pieces they decide over:

    trunk.x                      tokens entering block 0, for the rows in view   (N, K, D)
    trunk.block(i, x)            one whole block (adaLN-Zero), bit-identical to ``block(x, c, ctx)``
    trunk.run(x, lo, hi)         blocks lo..hi-1
    trunk.attn(i, x), mlp(i, x)  a branch's gated residual (``block.attn_branch`` / ``mlp_branch``)
    trunk.attn_pre / mlp_pre     the same before the adaLN gate (what FORA and TaylorSeer cache)
    trunk.gate(i, "attn"|"mlp")  the gate, recomputed from the current conditioning     (N, 1, D)
    trunk.modulated_input(i, x)  adaLN-modulated normed input of the attention branch (TeaCache)

A policy is then a short function of these (see `policy.py`), and quantization or sparse
attention can later swap what ``block``/``attn`` run without touching any policy.

Token views. Region-adaptive sampling pushes only a per-sample subset of tokens through the
trunk. `View` maps full-size state (N, T, ...) to the rows in view (N, K, ...) and back, so a
cache policy stores full-size features and reads or refreshes just the rows being computed; with
all tokens in view it returns the very tensors it was given, so dense runs are untouched.
Attention over the subset goes through ``Attention.forward(kv_hook=...)`` (see ``ras.py``).

Compute accounting. Every linear layer and attention matmul actually run is counted in
multiply-accumulates with the formulas of ``ditkit.models.dit.macs_per_forward`` (so a dense
call counts exactly that), per sample, for the K query tokens and S key tokens involved.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.dit import mlp_macs_per_token
from ..models.layers import modulate


class View:
    """The token rows one call computes: all of them (``idx is None``) or (N, K) indices per sample."""

    def __init__(self, idx: torch.Tensor | None = None):
        self.idx = idx  # (N, K) long, sorted per row, or None for all tokens

    @property
    def full(self) -> bool:
        return self.idx is None

    def _index(self, like: torch.Tensor) -> torch.Tensor:
        idx = self.idx.view(*self.idx.shape, *([1] * (like.ndim - 2)))  # (N, K, 1, ...)
        return idx.expand(*self.idx.shape, *like.shape[2:])  # (N, K, ...)

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """(N, T, ...) -> (N, K, ...); the same tensor when every token is in view."""
        if self.idx is None:
            return full
        return full.gather(1, self._index(full))

    def put(self, full: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
        """A new full-size tensor equal to ``full`` with the rows in view replaced by ``part``."""
        if self.idx is None:
            return part
        if full is None:
            raise RuntimeError("a token subset was computed before any full-size state existed")
        return full.scatter(1, self._index(part), part)


class MacCounter:
    """Multiply-accumulates actually executed (and what dense compute would have cost)."""

    def __init__(self):
        self.macs = 0

    def add(self, n: int) -> None:
        self.macs += int(n)


KVHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Trunk:
    """The blocks of one call, with modulations memoised and compute counted (see module doc).

    Args:
        model: a ditkit DiT (stages ``embed``, ``condition``, ``blocks``, ``final``).
        tokens: all tokens after ``embed`` (N, T, D); c: conditioning (N, D); ctx: TokenContext.
        view: which rows to compute (default all).
        kv_hooks: per block index, a ``kv_hook`` for ``Attention.forward`` (RAS); with hooks the
            attention runs on the rows in view and attends over ``num_keys`` cached keys.
        rope: rotary tables of the rows in view, (N, 1, K, hd) each, when ``view`` is a subset.
    """

    def __init__(self, model, tokens: torch.Tensor, c: torch.Tensor, ctx, counter: MacCounter,
                 view: View | None = None, kv_hooks: Callable[[int], KVHook] | None = None,
                 rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.model, self.c, self.ctx, self.counter = model, c, ctx, counter
        self.view = view or View()
        self.x = self.view.take(tokens)  # (N, K, D)
        self.blocks = model.blocks
        self.depth = len(model.blocks)
        self._kv_hooks = kv_hooks
        self._rope = rope if not self.view.full else ctx.rope
        self._grid = ctx.grid if self.view.full else None  # Mix-FFN needs the whole grid (RAS refuses it)
        cfg = model.config
        self._d, self._mlp = cfg.hidden_size, mlp_macs_per_token(cfg)
        self.num_samples, self.num_rows = self.x.shape[0], self.x.shape[1]
        self.num_keys = tokens.shape[1] if kv_hooks is not None else self.num_rows
        self._mods: dict[int, tuple[torch.Tensor, ...]] = {}
        self._ungated: dict[int, tuple[torch.Tensor, ...]] = {}

    # -- modulation --------------------------------------------------------------------
    def mod(self, i: int) -> tuple[torch.Tensor, ...]:
        """Block i's (shift, scale, gate) x (attn, mlp), each (N, D); computed once per call."""
        if i not in self._mods:
            self._mods[i] = self.blocks[i].modulation(self.c)
            self.counter.add(self.num_samples * 6 * self._d * self._d)
        return self._mods[i]

    def gate(self, i: int, branch: str) -> torch.Tensor:
        """The adaLN gate of a branch, (N, 1, D)."""
        return self.mod(i)[2 if branch == "attn" else 5].unsqueeze(1)

    def _mod_ungated(self, i: int) -> tuple[torch.Tensor, ...]:
        # the same modulation with both gates 1: the branch methods then return the pre-gate output
        # exactly (1 * y == y in IEEE arithmetic), through the block's own code path
        if i not in self._ungated:
            m = self.mod(i)
            one = torch.ones_like(m[2])
            self._ungated[i] = (m[0], m[1], one, m[3], m[4], one)
        return self._ungated[i]

    def modulated_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """modulate(norm1(x), shift_msa, scale_msa) of block i: TeaCache's timestep-aware input, (N, K, D)."""
        m = self.mod(i)
        return modulate(self.blocks[i].norm1(x), m[0], m[1])

    # -- branches ------------------------------------------------------------------------
    def _count_attn(self) -> None:
        n, k, s, d = self.num_samples, self.num_rows, self.num_keys, self._d
        self.counter.add(n * (4 * d * d * k + 2 * k * s * d))

    def _attn_kv(self, i: int, x: torch.Tensor, m: tuple[torch.Tensor, ...]) -> torch.Tensor:
        block = self.blocks[i]  # the body of DiTBlock.attn_branch, with the K/V hook passed through
        return block.attn(modulate(block.norm1(x), m[0], m[1]), rope=self._rope, kv_hook=self._kv_hooks(i))

    def attn(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Gated attention residual of block i, (N, K, D)."""
        self._count_attn()
        if self._kv_hooks is None:
            return self.blocks[i].attn_branch(x, self.mod(i), self.ctx)
        return self.gate(i, "attn") * self._attn_kv(i, x, self.mod(i))

    def attn_pre(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Attention output of block i before its gate, (N, K, D)."""
        self._count_attn()
        if self._kv_hooks is None:
            return self.blocks[i].attn_branch(x, self._mod_ungated(i), self.ctx)
        return self._attn_kv(i, x, self.mod(i))

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Gated MLP residual of block i, (N, K, D)."""
        self.counter.add(self.num_samples * self.num_rows * self._mlp)
        return self.blocks[i].mlp_branch(x, self.mod(i), self._grid)

    def mlp_pre(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """MLP output of block i before its gate, (N, K, D)."""
        self.counter.add(self.num_samples * self.num_rows * self._mlp)
        return self.blocks[i].mlp_branch(x, self._mod_ungated(i), self._grid)

    # -- blocks --------------------------------------------------------------------------
    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block i: x + attn; + mlp — the same operations as ``DiTBlock.forward``, (N, K, D)."""
        x = x + self.attn(i, x)
        return x + self.mlp(i, x)

    def run(self, x: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Blocks lo..hi-1 (hi defaults to the depth), (N, K, D)."""
        for i in range(lo, self.depth if hi is None else hi):
            x = self.block(i, x)
        return x
