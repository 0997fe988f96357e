"""Depth pruning of a DiT: a measured-importance baseline and learnable k-of-n masks (TinyFusion).

TinyFusion (Fang et al. 2024, "TinyFusion: Diffusion Transformers Learned Shallow",
https://arxiv.org/abs/2412.01199, code VainF/TinyFusion) chooses which blocks to keep by how well
the shallow model can *recover* after fine-tuning, not by how little it loses at once:

* The depth is split into groups of n consecutive blocks, and each group keeps k of them ("k:n",
  e.g. 1:2). All C(n, k) keep-patterns of a group are enumerated as 0/1 rows of ``options``
  (C(n,k), n); each group owns logits over them (initialised to a constant 0.02, i.e. uniform).
* Every step samples one pattern per group *and per batch sample* with the Gumbel-softmax
  ``softmax((logits * scaling + g) / tau)``, hardened straight-through (forward one-hot, backward
  soft), so ``mask = gate @ options`` is exactly 0/1 and a block runs as
  ``x = m * block(x) + (1 - m) * x`` (§3.2, eq. 5-7).
* The weights train jointly with the logits on the diffusion loss (§3.3), through LoRA (rank 8,
  alpha 16 in the paper) or fully ("delta-w"), to simulate the fine-tuning that follows, so the
  distribution moves towards patterns that are *recoverable*. AdamW with 10x the weight learning
  rate for the logits; tau anneals linearly 4 -> 0.1. The argmax pattern of each group is kept.

Here the weight update is LoRA on every linear layer of the blocks (a low-rank delta
``W + (alpha / r) B A`` with B = 0 at the start, added as a parametrization and merged at the end),
"full" (all block parameters train) or "none" (masks only). `learn_prune` returns the adapted
full-depth model as well; the paper prunes the *original* weights and fine-tunes them
(`build_pruned`, then `ditkit.compress.distill.distill`).

The baseline `importance_prune` scores each block by what skipping it does on a small calibration
batch — the relative change of the network output ("output", always >= 0 and 0 for a block that
is the identity) or the increase of the diffusion loss ("loss") — and keeps the top k.

Data is a ``data_fn(step) -> (x0, y)``: clean samples where the DiT works (latents for a latent
model) and labels; `make_data_fn` draws it from a dataset of (image, label) pairs that the caller
gives (e.g. `ditkit.train.datasets.training_images`, the images a model was trained on).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..config import DiTConfig
from ..io.progress import RunBar
from ..models.dit import DiT

DataFn = Callable[[int], tuple[torch.Tensor, torch.Tensor | None]]


class ImageData(Protocol):
    """A dataset of (image (3, H, W) in [-1, 1], label) pairs."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]: ...


UPDATES = ("lora", "full", "none")
METRICS = ("output", "loss")


# ----------------------------------------------------------------------------- data


def make_data_fn(config: DiTConfig, codec=None, *, data: ImageData, batch_size: int = 16, seed: int = 0,
                 label_drop: float | None = None, device: str | torch.device | None = None) -> DataFn:
    """``data_fn(step) -> (x0, y)``: a deterministic batch of `data` for `step`.

    `data` holds the model's training images (rendered at latent size x f for a latent model, as
    `ditkit.train.datasets.training_images` gives them); they are encoded by `codec` (frozen, no grad)
    as the trainer does. Labels are replaced by the null class with probability `label_drop`
    (default: the model's ``class_dropout_prob``), so guidance keeps working after fine-tuning.
    Batches land on ``device`` (default: the codec's, else the CPU).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    drop = config.class_dropout_prob if label_drop is None else label_drop
    drop = drop if config.num_classes > 0 else 0.0
    if device is None:
        device = next(codec.parameters()).device if isinstance(codec, nn.Module) else torch.device("cpu")

    def data_fn(step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(data), (batch_size,), generator=g)
        items = [data[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items])  # (B, 3, H, W) images in [-1, 1]
        if codec is not None:
            with torch.no_grad():
                x = codec.encode(x.to(device)).float()  # (B, C, h, w) normalised latents
        x = x.to(device)
        if config.num_classes == 0:
            return x, None
        y = torch.tensor([int(it[1]) for it in items])
        if drop > 0:
            y = torch.where(torch.rand(batch_size, generator=g) < drop, torch.full_like(y, config.num_classes), y)
        return x, y.to(x.device)

    return data_fn


# ----------------------------------------------------------------------------- masked forward


def forward_with_mask(model: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                      mask: torch.Tensor | Sequence[bool] | None = None) -> torch.Tensor:
    """The DiT forward with blocks gated: ``tokens = m * block(tokens) + (1 - m) * tokens``.

    `mask`: a sequence of bools (depth,) — blocks with False are skipped, not computed — or a float
    tensor (depth,) or (N, depth), one mask per sample (TinyFusion), differentiable.
    """
    depth = len(model.blocks)
    tokens, ctx = model.embed(x)  # (N, T, D)
    c = model.condition(t, y)  # (N, D)
    if mask is not None and not torch.is_tensor(mask):
        if len(mask) != depth:
            raise ValueError(f"mask has {len(mask)} entries for {depth} blocks")
        for block, keep in zip(model.blocks, mask):
            if keep:
                tokens = block(tokens, c, ctx)  # (N, T, D)
        return model.final(tokens, c, ctx)
    if mask is not None:
        if mask.shape[-1] != depth or mask.ndim not in (1, 2):
            raise ValueError(f"mask must be (depth,) or (N, depth) with depth={depth}, got {tuple(mask.shape)}")
        mask = mask.to(tokens.dtype).expand(tokens.shape[0], depth)  # (N, depth)
    for i, block in enumerate(model.blocks):
        out = block(tokens, c, ctx)  # (N, T, D)
        if mask is None:
            tokens = out
        else:
            m = mask[:, i].view(-1, 1, 1)  # (N, 1, 1)
            tokens = m * out + (1 - m) * tokens
    return model.final(tokens, c, ctx)  # (N, C_out, H, W)


def keep_mask(depth: int, kept: Sequence[int]) -> list[bool]:
    """The bool mask (depth,) of a list of kept block indices."""
    kept = check_kept(kept, depth)
    return [i in kept for i in range(depth)]


def check_kept(kept: Sequence[int], depth: int) -> list[int]:
    """Sorted kept indices; ValueError unless they are distinct block indices, at least one."""
    out = sorted(int(i) for i in kept)
    if not out:
        raise ValueError("keep at least one block")
    if len(set(out)) != len(out) or out[0] < 0 or out[-1] >= depth:
        raise ValueError(f"kept blocks must be distinct indices in 0..{depth - 1}, got {list(kept)}")
    return out


@torch.no_grad()
def diffusion_loss(model: DiT, process, data_fn: DataFn, *, batches: int = 2, seed: int = 0,
                   mask: Sequence[bool] | None = None) -> float:
    """Mean diffusion loss over `batches` calibration batches with fixed noise and times (seed)."""
    total = 0.0
    for b in range(batches):
        x0, y = data_fn(b)
        gen = torch.Generator(device=x0.device).manual_seed(seed * 7919 + b)
        fn = _masked_fn(model, mask)
        total += float(process.training_loss(fn, x0, {"y": y}, generator=gen).mean())
    return total / batches


def _masked_fn(model: DiT, mask):
    return lambda x, t, y=None: forward_with_mask(model, x, t, y, mask)


# ----------------------------------------------------------------------------- results


@dataclass
class PruneResult:
    """Which blocks to keep and the evidence: scores (importance) or learned probabilities."""

    kept: list[int]
    depth: int
    method: str  # "importance" or "learned"
    scores: list[float] | None = None  # importance per block (higher = more important)
    metric: str | None = None
    group: int | None = None  # n of k:n (learned)
    groups: list[dict] = field(default_factory=list)  # per group: candidate patterns and probabilities
    losses: list[float] = field(default_factory=list)  # search loss, averaged per logging interval
    steps: int = 0
    seconds: float = 0.0
    update: str | None = None
    model: DiT | None = field(default=None, repr=False)  # learned: the full-depth model with the update merged

    def to_record(self) -> dict:
        """JSON-ready summary (without the model)."""
        rec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return rec | {"seconds": round(self.seconds, 2)}


# ----------------------------------------------------------------------------- importance baseline


@torch.no_grad()
def importance_prune(model: DiT, keep: int, process, data_fn: DataFn, *, metric: str = "output",
                     batches: int = 2, seed: int = 0, progress: bool | None = None) -> PruneResult:
    """Keep the `keep` blocks whose removal hurts most on calibration batches (a one-shot baseline).

    Block i scores ``mean((f_-i - f)^2) / mean(f^2)`` ("output": f the full network's output, f_-i
    with block i skipped) or ``L_-i - L`` ("loss": diffusion loss), on the same noise and times.
    ``progress``: a bar over the batches (`ditkit.io.progress.RunBar`; None: only on a terminal).
    """
    depth = len(model.blocks)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 1 <= keep <= depth:
        raise ValueError(f"--keep must lie in 1..{depth} (the model has {depth} blocks), got {keep}")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    scores = [0.0] * depth
    bar = RunBar(batches, "importance", progress, unit="batch")
    for b in range(batches):
        x0, y = data_fn(b)
        variants = [None] + [[j != i for j in range(depth)] for i in range(depth)]
        outs, losses = [], []
        for mask in variants:
            captured = []

            def fn(x, t, y=None, mask=mask, captured=captured):
                out = forward_with_mask(model, x, t, y, mask)
                captured.append(out)
                return out

            gen = torch.Generator(device=x0.device).manual_seed(seed * 7919 + b)  # same noise/times per variant
            losses.append(float(process.training_loss(fn, x0, {"y": y}, generator=gen).mean()))
            outs.append(captured[0].float())
        ref = outs[0].pow(2).mean().clamp_min(1e-12)
        for i in range(depth):
            s = (outs[i + 1] - outs[0]).pow(2).mean() / ref if metric == "output" else losses[i + 1] - losses[0]
            scores[i] += float(s) / batches
        bar.update(1)
    bar.close()
    model.train(was_training)
    order = sorted(range(depth), key=lambda i: (-scores[i], i))
    return PruneResult(kept=sorted(order[:keep]), depth=depth, method="importance", scores=scores, metric=metric,
                       steps=batches, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------- learnable masks (TinyFusion)


@dataclass(frozen=True)
class LearnPruneConfig:
    """The mask search of `learn_prune` (defaults: the TinyFusion recipe, shortened)."""

    steps: int = 200
    lr: float = 1e-4  # weight update (LoRA / full)
    gate_lr_ratio: float = 10.0  # logits learn 10x faster
    tau: tuple[float, float] = (4.0, 0.1)  # Gumbel temperature, linear from first to last step
    scaling: tuple[float, float] = (100.0, 100.0)  # logit scaling, linear likewise
    gate_init: float = 0.02
    update: str = "lora"  # "lora", "full" or "none"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    grad_clip: float = 1.0  # 0 disables
    seed: int = 0
    max_seconds: float | None = None  # stop the search early (the argmax so far is taken)
    log_every: int = 10

    def __post_init__(self):
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        if self.steps <= 0 or self.lora_rank <= 0 or self.log_every <= 0:
            raise ValueError("steps, lora_rank and log_every must be positive")
        if min(self.tau) <= 0:
            raise ValueError(f"tau must be positive, got {self.tau}")


def candidate_masks(n: int, k: int) -> torch.Tensor:
    """All C(n, k) ways to keep k of n blocks, as 0/1 rows (C(n,k), n), in lexicographic order."""
    rows = [[1.0 if j in combo else 0.0 for j in range(n)] for combo in itertools.combinations(range(n), k)]
    return torch.tensor(rows)


def check_groups(depth: int, keep_k_of_n: tuple[int, int]) -> tuple[int, int]:
    k, n = (int(v) for v in keep_k_of_n)
    if n <= 0 or depth % n:
        raise ValueError(f"group size {n} must divide the depth {depth}")
    if not 1 <= k <= n:
        raise ValueError(f"keep {k} of every {n} blocks: k must lie in 1..{n}")
    return k, n


class LoRADelta(nn.Module):
    """Parametrization ``W -> W + (alpha / r) B A`` (LoRA, Hu et al. 2022); B starts at zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.A = nn.Parameter((torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound)  # (r, in)
        self.B = nn.Parameter(torch.zeros(out_features, rank))  # (out, r)
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)  # (out, in)


def _attach_update(model: DiT, cfg: LearnPruneConfig, gen: torch.Generator) -> list[nn.Parameter]:
    """Make the weight update trainable; returns its parameters."""
    if cfg.update == "none":
        return []
    if cfg.update == "full":
        params = list(model.blocks.parameters())
        for p in params:
            p.requires_grad_(True)
        return params
    params = []
    for module in model.blocks.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            delta = LoRADelta(w.shape[0], w.shape[1], cfg.lora_rank, cfg.lora_alpha, gen).to(w.device)
            parametrize.register_parametrization(module, "weight", delta)
            params += [delta.A, delta.B]
    return params


def _merge_update(model: DiT) -> None:
    for module in model.blocks.modules():
        if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    model.requires_grad_(False)


def sample_gates(logits: torch.Tensor, n: int, tau: float, scaling: float, generator: torch.Generator) -> torch.Tensor:
    """Straight-through Gumbel-softmax: one-hot gates (n, G, C) forward, soft gradients backward."""
    u = torch.rand((n, *logits.shape), generator=generator).clamp(1e-10, 1 - 1e-10).to(logits.device)  # (n, G, C)
    soft = ((logits * scaling - torch.log(-torch.log(u))) / tau).softmax(-1)  # (n, G, C)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)  # (n, G, C)
    return hard + soft - soft.detach()


def learn_prune(model: DiT, process, data_fn: DataFn, keep_k_of_n: tuple[int, int] = (1, 2),
                config: LearnPruneConfig | None = None, progress: bool | None = None, **overrides) -> PruneResult:
    """TinyFusion mask search: keep k of every n consecutive blocks, chosen for recoverability.

    ``progress``: a bar over the search steps (`ditkit.io.progress.RunBar`; None: only on a terminal).

    `model` is left untouched (a copy is trained). Deterministic for a given seed and `data_fn`.
    Returns the argmax pattern per group; ``result.model`` holds the full-depth copy with the
    weight update merged (the paper prunes the original weights instead).
    """
    cfg = dataclasses.replace(config or LearnPruneConfig(), **overrides)
    depth = len(model.blocks)
    k, n = check_groups(depth, keep_k_of_n)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    work = copy.deepcopy(model).float().eval().requires_grad_(False)  # eval: labels are dropped by data_fn
    device = next(work.parameters()).device
    params = _attach_update(work, cfg, gen)
    options = candidate_masks(n, k).to(device)  # (C, n)
    groups = depth // n
    logits = nn.Parameter(torch.full((groups, options.shape[0]), cfg.gate_init, device=device))  # (G, C)
    param_groups = [{"params": [logits], "lr": cfg.lr * cfg.gate_lr_ratio}]
    if params:
        param_groups.append({"params": params, "lr": cfg.lr})
    opt = torch.optim.AdamW(param_groups, weight_decay=0.0)
    losses, window, step = [], [], 0
    bar = RunBar(cfg.steps, "mask search", progress)
    for step in range(cfg.steps):
        frac = step / max(cfg.steps - 1, 1)
        tau = cfg.tau[0] + (cfg.tau[1] - cfg.tau[0]) * frac
        scaling = cfg.scaling[0] + (cfg.scaling[1] - cfg.scaling[0]) * frac
        x0, y = data_fn(step)
        gates = sample_gates(logits, x0.shape[0], tau, scaling, gen)  # (N, G, C)
        mask = (gates @ options).reshape(x0.shape[0], depth)  # (N, G, n) -> (N, depth)
        loss_gen = torch.Generator(device=x0.device).manual_seed(cfg.seed * 1_000_003 + step)
        loss = process.training_loss(_masked_fn(work, mask), x0, {"y": y}, generator=loss_gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([logits, *params], cfg.grad_clip)
        opt.step()
        window.append(float(loss.detach()))
        if len(window) == cfg.log_every:
            losses.append(sum(window) / len(window))
            window = []
        bar.update(1)
        if cfg.max_seconds is not None and time.perf_counter() - start >= cfg.max_seconds:
            break
    bar.finish()
    bar.close()
    if window:
        losses.append(sum(window) / len(window))
    _merge_update(work)
    with torch.no_grad():
        probs = (logits * scaling).softmax(-1).cpu()  # (G, C)
        choice = logits.argmax(-1).cpu()  # (G,)
    kept, record = [], []
    patterns = [[j for j in range(n) if row[j] > 0] for row in options.cpu().tolist()]
    for g in range(groups):
        kept += [g * n + j for j in patterns[int(choice[g])]]
        record.append({"blocks": list(range(g * n, (g + 1) * n)), "patterns": [[g * n + j for j in p] for p in patterns],
                       "probs": [round(float(p), 6) for p in probs[g]], "kept": [g * n + j for j in patterns[int(choice[g])]]})
    return PruneResult(kept=kept, depth=depth, method="learned", group=n, groups=record, losses=losses, steps=step + 1,
                       seconds=time.perf_counter() - start, update=cfg.update, model=work)


# ----------------------------------------------------------------------------- the smaller model


def build_pruned(model: DiT, kept_indices: Sequence[int]) -> DiT:
    """A new DiT with ``depth = len(kept)`` holding the kept blocks' weights (in order) and all others.

    Its outputs equal `model`'s with the other blocks skipped; its config.json (depth) makes it a
    normal model folder for `save_pipeline` / `load_pipeline`.
    """
    if not isinstance(model, DiT):
        raise ValueError(f"build_pruned needs a float ditkit DiT, got {type(model).__name__}")
    depth = len(model.blocks)
    kept = check_kept(kept_indices, depth)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("merge the weight update first (parametrized layers)")
    new_index = {old: new for new, old in enumerate(kept)}
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            if int(i) not in new_index:
                continue
            name = f"blocks.{new_index[int(i)]}.{rest}"
        state[name] = value.detach().clone()
    first = next(model.parameters())
    pruned = DiT(model.config.replace(depth=len(kept)))
    pruned.load_state_dict(state)
    if model.y_embedder is not None:
        pruned.y_embedder.dropout_prob = model.y_embedder.dropout_prob
    return pruned.to(device=first.device, dtype=first.dtype).eval()
