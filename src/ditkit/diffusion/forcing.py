"""Diffusion forcing for video: per-frame noise levels in training, staggered schedules and long rollouts in sampling.

References: Diffusion Forcing (Chen et al. 2024, "Diffusion Forcing: Next-token Prediction Meets
Full-Sequence Diffusion"): every frame has its own noise level, so noise acts as a soft mask and a
model can be conditioned on clean or partly noisy history; FVDM (Liu et al. 2024, "Redefining
Temporal Modeling in Video Diffusion: The Vectorized Timestep Approach"): mix per-clip and
per-frame timesteps in training ("PTSS", probability p of independent frame times); SkyReels-V2
(2025, §diffusion forcing): a non-decreasing per-frame schedule ("timestep matrix", ``ar_step``
frames of lag between consecutive blocks) and long videos by sliding overlapping windows whose
first frames are the previous window's last frames, lightly re-noised ("addnoise_condition").

Process and time conventions are those of ``ditkit.diffusion`` (flow matching, s = 1 noise, s = 0
data; the network is fed ``process.network_time(s)``). Clips are (N, F, C, H, W) and the model is
called as ``model_fn(x, t, **model_kwargs)`` with t of shape (N, F) (``ditkit.models.video_dit``).

    forcing_loss      training with independent per-frame noise levels (clean context frames excluded)
    block_times       per-frame times made equal within each temporal patch (context inside a patch)
    step_matrix       the schedule: per-iteration step counters of every frame block
    forcing_sample    one window with that schedule, optionally after clean/lightly noised context frames
    rollout           clips of any length: overlapping windows, each conditioned on the previous one's tail
    chunked_sample    the baseline: independent windows, concatenated
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .finite import check_finite
from .flow import FlowMatching
from .noise import Generators, randn
from .samplers import flow_time_grid

ModelFn = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ForcingConfig:
    per_frame_prob: float = 1.0  # probability a clip gets independent frame times (FVDM's p; 1 = diffusion forcing)
    block_frames: int = 1  # frames that share one time (the model's temporal patch, or a multiple of it)
    context_prob: float = 0.0  # probability a clip gets a clean prefix of 1..F-1 frames (image-to-video, rollouts)
    sort_frames: bool = False  # sort each clip's times to be non-decreasing along frames (the sampling pattern)
    context_noise: float = 0.0  # context frames are re-noised to a level drawn from U(0, context_noise) per clip
    motion_weight: float = 0.0  # loss weight on what changes over the clip (`motion_weights`; 0 = plain MSE)

    def __post_init__(self):
        for name in ("per_frame_prob", "context_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise must lie in [0, 1), got {self.context_noise}")
        if not 0.0 <= self.motion_weight < float("inf"):
            raise ValueError(f"motion_weight must be a finite number >= 0, got {self.motion_weight}")
        if self.block_frames <= 0:
            raise ValueError(f"block_frames must be positive, got {self.block_frames}")


def sample_frame_times(process: FlowMatching, n: int, frames: int, cfg: ForcingConfig, device=None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Process times s (N, F): per clip, or with probability ``per_frame_prob`` independent per block.

    With ``context_prob`` a random prefix of 1..F-1 frames is set to s = 0 (clean context). The prefix
    is counted in frames, not blocks: with ``block_frames`` > 1 it may end inside a block, whose other
    frames keep the block's time — STIV's frame replacement (Lin et al. 2024), a clean first frame in
    the same temporal patch as noisy ones (`block_times` gives the model that block's time).
    """
    if frames % cfg.block_frames:
        raise ValueError(f"{frames} frames do not split into blocks of {cfg.block_frames}")
    blocks = frames // cfg.block_frames
    shared = process.sample_time(n, device=device, generator=generator)[:, None].expand(n, blocks)  # (N, B)
    own = process.sample_time(n * blocks, device=device, generator=generator).reshape(n, blocks)  # (N, B)
    if cfg.sort_frames:
        own = own.sort(dim=1).values
    pick = torch.rand(n, 1, device=device, generator=generator) < cfg.per_frame_prob  # (N, 1)
    s = torch.where(pick, own, shared)
    s = s.repeat_interleave(cfg.block_frames, dim=1)  # (N, F)
    if cfg.context_prob > 0 and frames > 1:
        has = torch.rand(n, 1, device=device, generator=generator) < cfg.context_prob  # (N, 1)
        length = torch.randint(1, frames, (n, 1), device=device, generator=generator)  # prefix frames, (N, 1)
        prefix = torch.arange(frames, device=device)[None] < length  # (N, F)
        s = torch.where(has & prefix, torch.zeros_like(s), s)
    return s


def block_times(s: torch.Tensor, block_frames: int) -> torch.Tensor:
    """Per-frame times (N, F) made equal within each block of ``block_frames`` frames (the model's temporal
    patch) by taking the block's largest: a block holding both context frames (clean, or lightly noised)
    and generated ones is fed at the generated frames' time, its context frames clean in the input (STIV's
    frame replacement). Identity when ``block_frames`` is 1 or every block is uniform."""
    if block_frames == 1:
        return s
    n, frames = s.shape
    if frames % block_frames:
        raise ValueError(f"{frames} frames do not split into blocks of {block_frames}")
    blocks = s.reshape(n, frames // block_frames, block_frames).amax(2)  # (N, B)
    return blocks.repeat_interleave(block_frames, dim=1)  # (N, F)


def motion_weights(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-position loss weights (N, F, 1, H, W), mean 1 per clip, larger where the clean clip changes.

    m = |x0[f] - mean over frames of x0| (channel mean) is zero on a still background and large where a
    moving shape is, or was, in frame f; the weight is 1 + ``strength`` m / mean(m), renormalised to mean 1
    per clip, so the loss keeps its scale and a clip with no change keeps the plain MSE. The direction of
    travel is a small part of the plain loss (a small shape's displacement; README, video stage 4), so this
    raises it; a heuristic of ditkit's, in the spirit of foreground-weighted reconstruction losses.
    """
    dev = (x0 - x0.mean(1, keepdim=True)).abs().mean(2, keepdim=True).float()  # (N, F, 1, H, W)
    w = 1 + strength * dev / dev.mean(dim=(1, 3, 4), keepdim=True).clamp_min(1e-6)
    return w / w.mean(dim=(1, 3, 4), keepdim=True)


def forcing_loss(process: FlowMatching, model_fn: ModelFn, x0: torch.Tensor, cfg: ForcingConfig | None = None,
                 model_kwargs: dict | None = None, noise: torch.Tensor | None = None, s: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, context_level: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip velocity MSE with per-frame noise levels, shape (N,).

    x_s[f] = (1 - s_f) x0[f] + s_f eps[f]; target eps - x0. Frames with s = 0 are context: they are
    seen by the model but left out of the loss (their velocity is not predictable from x0 alone).
    ``context_level`` (N,) re-noises each clip's context frames to that process time (drawn from
    U(0, ``cfg.context_noise``) when not given): the training side of SkyReels-V2's
    addnoise_condition, so a rollout's context — the model's own, imperfect frames — can be fed
    lightly noised, as it was in training, and small errors in it are not copied forward.
    ``cfg.motion_weight`` > 0 weights each position by `motion_weights`.
    """
    cfg = cfg or ForcingConfig()
    if x0.ndim != 5:
        raise ValueError(f"clips must be (N, F, C, H, W), got {tuple(x0.shape)}")
    n, frames = x0.shape[:2]
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    if s is None:
        s = sample_frame_times(process, n, frames, cfg, device=x0.device, generator=generator)  # (N, F)
    context = s == 0  # (N, F) clean context frames, left out of the loss
    if context_level is None and cfg.context_noise > 0:
        where = generator.device if generator is not None else x0.device
        context_level = torch.rand(n, generator=generator, device=where) * cfg.context_noise
    if context_level is not None:
        s = torch.where(context, context_level.to(s).view(n, 1), s)  # (N, F)
    sv = s.view(n, frames, 1, 1, 1).to(x0.dtype)  # (N, F, 1, 1, 1)
    x_s = (1 - sv) * x0 + sv * noise
    out = model_fn(x_s, process.network_time(block_times(s, cfg.block_frames)), **(model_kwargs or {}))
    v = out[:, :, : x0.shape[2]]  # velocity channels (a learned-sigma half is ignored)
    sq = (v.float() - (noise - x0).float()).pow(2)  # (N, F, C, H, W)
    if cfg.motion_weight > 0:
        sq = sq * motion_weights(x0, cfg.motion_weight)
    err = sq.flatten(2).mean(2)  # (N, F)
    weight = (~context).float()  # (N, F)
    return (err * weight).sum(1) / weight.sum(1).clamp_min(1.0)


# ----------------------------------------------------------------------------- schedule


def step_matrix(num_blocks: int, steps: int, ar_step: int = 0, context_blocks: int = 0) -> torch.Tensor:
    """Per-iteration step counters (I + 1, B) of every frame block, row 0 the start (SkyReels-V2).

    Counter k means process time ``grid[k]`` (0 = pure noise, ``steps`` = clean). Context blocks
    start (and stay) at ``steps``. Each iteration the first generated block advances by one; any
    later block advances by one if its predecessor is finished, else it trails the predecessor's
    new counter by ``ar_step`` (never below 0). So every row is non-increasing along the blocks
    (noise non-decreasing along frames), counters grow by at most one per iteration and every
    block reaches ``steps`` exactly once. ``ar_step = 0`` moves all blocks together: the plain
    synchronous sampler, ``steps`` iterations; otherwise ``steps + ar_step * (B - context - 1)``.
    """
    if num_blocks <= 0 or steps <= 0 or ar_step < 0 or not 0 <= context_blocks < num_blocks:
        raise ValueError(f"need num_blocks > context_blocks >= 0, steps > 0, ar_step >= 0; "
                         f"got {num_blocks}, {context_blocks}, {steps}, {ar_step}")
    row = [steps] * context_blocks + [0] * (num_blocks - context_blocks)
    rows = [list(row)]
    while min(row) < steps:
        new = list(row)
        for b in range(context_blocks, num_blocks):
            if b == context_blocks or row[b - 1] == steps:
                new[b] = min(row[b] + 1, steps)
            else:
                new[b] = max(new[b - 1] - ar_step, 0)
        row = new
        rows.append(list(row))
    return torch.tensor(rows, dtype=torch.long)


# ----------------------------------------------------------------------------- sampling


def _randn(shape, generator: Generators, device=None, dtype=torch.float32) -> torch.Tensor:
    """Noise drawn on the generator's device (the CPU by default) and moved to ``device``: a seed gives
    the same clips on every device. One generator per clip draws each clip's rows (`ditkit.diffusion.noise`)."""
    return randn(shape, generator, device, dtype)


def _check_clip(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float clip tensor (N, F, C, H, W)")


@torch.no_grad()
def forcing_sample(model_fn: ModelFn, noise: torch.Tensor, process: FlowMatching, *, steps: int, shift: float = 1.0,
                   ar_step: int = 0, block_frames: int = 1, context: torch.Tensor | None = None,
                   context_noise: float = 0.0, model_kwargs: dict | None = None,
                   generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """Generate one window (N, F, C, H, W) from ``noise`` with the `step_matrix` schedule (Euler steps).

    ``context`` (N, Fc, C, H, W) are known frames placed before the window (the first frame for
    image-to-video, the previous window's tail in a rollout); they are fed at process time
    ``context_noise`` after mixing in that much fresh noise (SkyReels' addnoise_condition; 0 = clean)
    and are not returned. Fc + F must be a multiple of ``block_frames``; a block shared by context and
    window frames is timed by its window frames (`block_times`), its context frames held fixed.
    Each iteration calls the model once on the whole sequence with per-frame network times and
    moves every block whose counter changed by one Euler step
    x += (s_new - s_old) v. ``callback(iteration, t (N, F), x)`` after every iteration.
    """
    _check_clip("noise", noise)
    if not 0.0 <= context_noise < 1.0:
        raise ValueError(f"context_noise must lie in [0, 1), got {context_noise}")
    n, frames = noise.shape[:2]
    fc = 0
    x = noise
    if context is not None:
        _check_clip("context", context)
        if context.shape[0] != n or context.shape[2:] != noise.shape[2:]:
            raise ValueError(f"context {tuple(context.shape)} does not match the window {tuple(noise.shape)}")
        fc = context.shape[1]
        eps = _randn(context.shape, generator, context.device, context.dtype)
        x = torch.cat([(1 - context_noise) * context + context_noise * eps, noise], dim=1)  # (N, Fc+F, C, H, W)
    if (fc + frames) % block_frames:
        raise ValueError(f"context ({fc}) plus window ({frames}) frames must be a multiple of block_frames "
                         f"({block_frames})")
    matrix = step_matrix((fc + frames) // block_frames, steps, ar_step, fc // block_frames)  # (I+1, B)
    grid = flow_time_grid(steps, shift)  # (steps+1,) float64, s from 1 to 0
    kwargs = model_kwargs or {}
    for i in range(matrix.shape[0] - 1):
        s_old = grid[matrix[i]].repeat_interleave(block_frames)  # (Fc+F,)
        s_new = grid[matrix[i + 1]].repeat_interleave(block_frames)
        s_old[:fc] = context_noise
        s_new[:fc] = context_noise
        t = process.network_time(block_times(s_old.float()[None], block_frames).to(x.device)).expand(n, -1)  # (N, Fc+F)
        v = model_fn(x, t, **kwargs)[:, :, : x.shape[2]]  # velocity channels, (N, Fc+F, C, H, W)
        x = x + (s_new - s_old).to(x.device, x.dtype).view(1, -1, 1, 1, 1) * v
        check_finite(x, f"video sampling step {i + 1} of {matrix.shape[0] - 1}")  # never a clip of NaNs
        if callback is not None:
            callback(i, t, x)
    return x[:, fc:]


def _windows(total: int, window: int, overlap: int, block_frames: int) -> int:
    if window <= 0 or total <= 0 or not 0 < overlap < window:
        raise ValueError(f"need total > 0 and 0 < overlap < window; got total={total}, window={window}, overlap={overlap}")
    if window % block_frames or overlap % block_frames:
        raise ValueError(f"window ({window}) and overlap ({overlap}) must be multiples of block_frames ({block_frames})")
    return 1 + max(0, -(-(total - window) // (window - overlap)))  # ceil


@torch.no_grad()
def rollout(model_fn: ModelFn, process: FlowMatching, shape: tuple[int, int, int, int], *, total_frames: int,
            window: int, overlap: int, steps: int, shift: float = 1.0, ar_step: int = 0, block_frames: int = 1,
            context_noise: float = 0.0, first_context: torch.Tensor | None = None, model_kwargs: dict | None = None,
            generator: Generators = None, device=None, dtype=torch.float32,
            context_fn: Callable[[torch.Tensor], ModelFn] | None = None) -> torch.Tensor:
    """A clip of ``total_frames`` (N, total, C, H, W) by autoregressive windows of ``window`` frames.

    shape = (N, C, H, W). The first window is generated from noise (after ``first_context`` frames,
    e.g. a given first frame, if any); every later window is ``overlap`` context frames (the last
    frames made so far) followed by ``window - overlap`` new ones, so the model always sees the
    window length it was trained on and earlier frames steer later ones. Windows needed:
    ``1 + ceil((total - window) / (window - overlap))``.
    ``context_fn(noise)``: the model function of a later window, given noise shaped like its context
    (N, overlap, C, H, W) — e.g. history guidance, whose unconditional pass drops the context.
    """
    n_windows = _windows(total_frames, window, overlap, block_frames)
    n, c, h, w = shape
    common = dict(steps=steps, shift=shift, ar_step=ar_step, block_frames=block_frames, model_kwargs=model_kwargs,
                  generator=generator)

    def randn(frames: int) -> torch.Tensor:
        return _randn((n, frames, c, h, w), generator, device, dtype)

    first_frames = window - (0 if first_context is None else first_context.shape[1])
    if first_frames <= 0:
        raise ValueError(f"first_context ({first_context.shape[1]} frames) leaves no room in a window of {window}")
    clip = forcing_sample(model_fn, randn(first_frames), process, context=first_context, context_noise=0.0, **common)
    if first_context is not None:
        clip = torch.cat([first_context.to(clip.dtype), clip], dim=1)  # the given frames are part of the video
    for _ in range(n_windows - 1):
        fn = model_fn if context_fn is None else context_fn(randn(overlap))
        new = forcing_sample(fn, randn(window - overlap), process, context=clip[:, -overlap:],
                             context_noise=context_noise, **common)
        clip = torch.cat([clip, new], dim=1)  # (N, F_so_far, C, H, W)
    return clip[:, :total_frames]


@torch.no_grad()
def chunked_sample(model_fn: ModelFn, process: FlowMatching, shape: tuple[int, int, int, int], *, total_frames: int,
                   window: int, steps: int, shift: float = 1.0, ar_step: int = 0, block_frames: int = 1,
                   model_kwargs: dict | None = None, generator: Generators = None, device=None,
                   dtype=torch.float32) -> torch.Tensor:
    """The baseline: ``ceil(total / window)`` independent windows from noise, concatenated (no shared context)."""
    if window <= 0 or total_frames <= 0:
        raise ValueError(f"window and total_frames must be positive, got {window}, {total_frames}")
    n, c, h, w = shape
    chunks = []
    for _ in range(-(-total_frames // window)):
        noise = _randn((n, window, c, h, w), generator, device, dtype)
        chunks.append(forcing_sample(model_fn, noise, process, steps=steps, shift=shift, ar_step=ar_step,
                                     block_frames=block_frames, model_kwargs=model_kwargs, generator=generator))
    return torch.cat(chunks, dim=1)[:, :total_frames]
