"""Calibration: model inputs along real sampling trajectories, per-channel activation ranges, timestep routing.

Post-training quantization of diffusion models calibrates on inputs the network actually sees
while sampling, spread over the whole trajectory (Q-Diffusion, Li et al. 2023; PTQ4DiT, Wu et al.
2024; ViDiT-Q). `collect_calibration` records them by running `ditkit.sample` with a recording
`model_wrapper`, so calibration costs one short sampling run (seconds to minutes on a CPU).

A calibration set is a list of ``(x, t, y)`` model-input tuples (``y`` may be None). Every tuple
is one model call; `calibration_batches` concatenates them into a few larger batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..diffusion.sample import sample
from ..io.progress import RunBar

CALIBRATION_BATCH = 64  # samples per batch of the calibration run
CalibSet = Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def collect_calibration(model, process, labels: torch.Tensor | Sequence[int], *, steps: int = 10,
                        sampler: str = "euler", cfg_scale: float = 1.0, seed: int = 0, every: int = 1,
                        progress: bool | None = None) -> list[tuple]:
    """Record the (x, t, y) inputs of ``model`` during one sampling run of ``labels``.

    ``every`` keeps one call in that many; with ``cfg_scale != 1`` the doubled (cond + null)
    batches are recorded, so the null class is calibrated too. ``progress``: a bar over the run's
    sampler steps on stderr (`ditkit.io.progress.RunBar`; None: only on a terminal).
    """
    calls: list[tuple] = []

    def wrapper(fn):
        def recording_fn(x, t, **kwargs):
            calls.append((x.detach().clone(), t.detach().clone(), _opt_clone(kwargs.get("y"))))
            return fn(x, t, **kwargs)
        return recording_fn

    labels = torch.as_tensor(labels)
    with RunBar(-(-len(labels) // CALIBRATION_BATCH) * steps, "calibration", progress) as bar:
        sample(model, labels, process=process, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed,
               batch_size=CALIBRATION_BATCH, model_wrapper=wrapper, progress=False, callback=lambda *_: bar.update(1))
    return calls[::every]


def _opt_clone(y):
    return None if y is None else y.detach().clone()


def calibration_batches(calib: CalibSet, max_batch: int = 64) -> list[tuple]:
    """Concatenate calibration tuples into batches of at most ``max_batch`` samples."""
    out, cur, size = [], [], 0
    for item in calib:
        n = item[0].shape[0]
        if cur and size + n > max_batch:
            out.append(_cat(cur))
            cur, size = [], 0
        cur.append(item)
        size += n
    if cur:
        out.append(_cat(cur))
    return out


def subsample_rows(batches: Sequence[tuple], n: int, max_batch: int = 64) -> list[tuple]:
    """At most ``n`` calibration rows, evenly strided over all of ``batches`` (so over every timestep)."""
    total = sum(b[0].shape[0] for b in batches)
    if total <= n:
        return list(batches)
    x, t, y = _cat(list(batches))
    idx = torch.linspace(0, total - 1, n).round().long()  # (n,)
    chunks = idx.split(max_batch)
    return [(x[i], t[i], None if y is None else y[i]) for i in chunks]


def _cat(items):
    x = torch.cat([it[0] for it in items])  # (n, C, H, W)
    t = torch.cat([it[1].reshape(-1).expand(it[0].shape[0]) for it in items])  # (n,)
    y = None if items[0][2] is None else torch.cat([it[2] for it in items])  # (n,)
    return x, t, y


def run_model(model: nn.Module, batches: Iterable[tuple]) -> list[torch.Tensor]:
    """Model outputs on calibration batches (inference mode)."""
    with torch.inference_mode():
        return [model(x, t, y) if y is not None else model(x, t) for x, t, y in batches]


# ----------------------------------------------------------------------------- timestep routing


class TimestepRouter:
    """Holds the diffusion time of the current forward so timestep-grouped layers pick their group.

    `attach` registers a forward pre-hook that stores t: on the DiT's ``t_embedder`` when it has
    one (every driver of the model — ``forward``, or wrappers such as the accel runner that call
    the stages — embeds t there first), else on the model itself (2nd positional or keyword
    ``t``). Layers read ``router.t``; guidance wrappers double t with the batch, so it matches.
    """

    def __init__(self):
        self.t: torch.Tensor | None = None
        self.handle = None

    def attach(self, model: nn.Module) -> TimestepRouter:
        embedder = getattr(model, "t_embedder", None)
        if isinstance(embedder, nn.Module):
            def hook(_module, args, kwargs):
                self.t = torch.as_tensor(args[0] if args else kwargs["t"])
            self.handle = embedder.register_forward_pre_hook(hook, with_kwargs=True)
        else:
            def hook(_module, args, kwargs):
                t = kwargs.get("t", args[1] if len(args) > 1 else None)
                self.t = None if t is None else torch.as_tensor(t)
            self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        for m in model.modules():
            if getattr(m, "groups", 1) > 1 and hasattr(m, "router"):
                m.router = self
        return self


def timestep_bounds(calib: CalibSet, groups: int) -> torch.Tensor:
    """Quantile bounds splitting the calibration timesteps into ``groups`` equally filled ranges: (groups-1,)."""
    if groups < 1:
        raise ValueError(f"timestep groups must be >= 1, got {groups}")
    ts = torch.cat([item[1].reshape(-1).float() for item in calib])
    if groups == 1:
        return ts.new_zeros(0)
    q = torch.linspace(0, 1, groups + 1)[1:-1]
    bounds = torch.quantile(ts, q)
    if bool((bounds[1:] <= bounds[:-1]).any()):
        raise ValueError(f"calibration has too few distinct timesteps for {groups} groups")
    return bounds


# ----------------------------------------------------------------------------- activation ranges


def activation_absmax(model: nn.Module, names: Sequence[str], batches: Sequence[tuple],
                      t_bounds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of the inputs of the Linear layers ``names``: {name: (G, K)}.

    With ``t_bounds`` (G-1,) each calibration sample counts towards the timestep group of its t,
    giving ViDiT-Q's per-timestep-range statistics; groups without samples get the overall max.
    """
    groups = 1 if t_bounds is None else t_bounds.numel() + 1
    modules = dict(model.named_modules())
    stats = {n: torch.zeros(groups, modules[n].in_features) for n in names}
    current = {}  # group ids of the batch being run

    def make_hook(name):
        def hook(_m, args):
            x = args[0].detach().float()
            x = x.reshape(x.shape[0], -1, x.shape[-1]).abs().amax(dim=1)  # (N, K) per-sample channel max
            for g in range(groups):
                sel = current["gid"] == g
                if bool(sel.any()):
                    stats[name][g] = torch.maximum(stats[name][g], x[sel].amax(dim=0))
        return hook

    handles = [modules[n].register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        with torch.inference_mode():
            for x, t, y in batches:
                current["gid"] = (torch.zeros_like(t, dtype=torch.long) if t_bounds is None
                                  else torch.bucketize(t.float(), t_bounds, right=True))
                model(x, t, y) if y is not None else model(x, t)
    finally:
        for h in handles:
            h.remove()
    for s in stats.values():  # empty groups: fall back to the overall range
        overall = s.amax(dim=0)
        empty = s.amax(dim=1) == 0
        s[empty] = overall
    return stats
