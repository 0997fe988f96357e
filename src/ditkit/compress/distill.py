"""Recovery fine-tuning of a pruned DiT by distillation from the full model (TinyFusion §3.4).

After depth pruning (`ditkit.compress.prune`) the shallow student is trained to match the teacher
on the same noised inputs (the process's own noising: flow matching or Gaussian), with

    L = w_out * mean((f_s - f_t)^2)                         output KD
      + w_fm  * L_diffusion(student)                        the ordinary training loss (optional)
      + w_hid * sum_j masked_mse(h_s[j], h_t[map[j]])       hidden-state KD (optional)
      + w_cfg * mean((g_s - g_t)^2) / w^2                    guided-output KD (optional)

The guided term matches what the sampler actually uses under classifier-free guidance, g = u + w(c - u)
with c and u the outputs for the label and for the null class on the same noised input (Meng et al.
2023, "On Distillation of Guided Diffusion Models", distil the guided teacher output). Plain KD
sees the null class only at the label-drop rate, yet at w = 4 the guided output carries 3x the
null-class error and 4x the conditional one; dividing by w^2 keeps the term on the KD's scale.
Each step then runs student and teacher on the cond and null rows together (twice the rows).

TinyFusion's "Masked KD" (Fang et al. 2024, §3.4) drops hidden-state elements with massive
activations from the hidden-state term: elements of the teacher's state with |h - mu| >= k * sigma
(mu, sigma over the sample's state, k = 2) do not count. Student block j is matched to teacher
block ``layer_map[j]`` (default: the teacher block it was copied from, `build_pruned`'s kept list).

The loop is bounded by steps and/or wall-clock seconds (``max_seconds``), so a CPU budget such as
"20 minutes of fine-tuning" is a parameter, and the time actually spent is returned. The learning
rate warms up linearly, then stays constant (``schedule="constant"``) or follows a cosine to zero
(``"cosine"``) over the budget; with a wall-clock budget the cosine's progress is the larger of
the step fraction and the time fraction, so the rate reaches zero as the time runs out.

With ``ema_decay > 0`` an exponential moving average of the student's weights is kept (decay
``min(ema_decay, (1 + step) / (10 + step))``, the DiT trainer's warm-up) and copied into the student
at the end, as DiT training samples from its EMA weights. The last weights of a short, constant-rate
fine-tune swing from run to run; on two 20-minute CPU runs of the bundled model pruned 8 -> 4, the
EMA (0.999) lowered FD in both (1.88 -> 1.55, 2.19 -> 1.41) and moved class accuracy by -0.5 and
+3.3 points (docs/results/compress/prune-d4-ema-cpu.json).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..io.progress import RunBar
from ..models.dit import DiT
from ..models.ema import ema_update
from .prune import DataFn

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class DistillConfig:
    steps: int | None = None  # at most this many steps (None: until max_seconds)
    max_seconds: float | None = None  # wall-clock budget of the loop
    lr: float = 2e-4
    warmup_steps: int = 10
    schedule: str = "cosine"  # "cosine" (to zero over the budget) or "constant"
    kd_weight: float = 1.0  # output matching
    fm_weight: float = 0.0  # the diffusion (flow-matching) loss on the data
    hidden_weight: float = 0.0  # masked hidden-state KD
    guided_weight: float = 0.0  # guided-output KD (class-conditional models)
    guidance_scale: float = 4.0  # w of the guided-output term (the scale the model samples with)
    outlier_sigma: float = 2.0  # Masked KD: ignore teacher elements beyond this many std
    grad_clip: float = 1.0  # 0 disables
    ema_decay: float = 0.0  # > 0: the student ends with the EMA of its weights (0: the last weights)
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        if (self.steps is not None and self.steps <= 0) or (self.max_seconds is not None and self.max_seconds <= 0):
            raise ValueError("distill steps and max_seconds must be positive")
        if min(self.kd_weight, self.fm_weight, self.hidden_weight, self.guided_weight) < 0 or self.log_every <= 0:
            raise ValueError("loss weights must be >= 0 and log_every positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def lr_at(self, step: int, seconds: float) -> float:
        """The learning rate of optimizer step ``step`` (0-based) taken ``seconds`` into the loop."""
        warm = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        if self.schedule == "constant":
            return self.lr * warm
        progress = max(step / self.steps if self.steps else 0.0,
                       seconds / self.max_seconds if self.max_seconds else 0.0)
        return self.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def trunk_forward(model: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                  keep_hidden: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The DiT forward, also returning each block's output tokens (N, T, D) when `keep_hidden`."""
    tokens, ctx = model.embed(x)  # (N, T, D)
    c = model.condition(t, y)  # (N, D)
    hidden = []
    for block in model.blocks:
        tokens = block(tokens, c, ctx)  # (N, T, D)
        if keep_hidden:
            hidden.append(tokens)
    return model.final(tokens, c, ctx), hidden  # (N, C_out, H, W)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, sigma: float) -> torch.Tensor:
    """MSE over the elements of `teacher` (N, T, D) within `sigma` std of its per-sample mean."""
    flat_t = teacher.float().flatten(1)  # (N, T*D)
    mu, sd = flat_t.mean(1, keepdim=True), flat_t.std(1, keepdim=True)
    keep = ((flat_t - mu).abs() < sigma * sd).float()  # (N, T*D)
    err = (student.float().flatten(1) - flat_t).pow(2)  # (N, T*D)
    return (err * keep).sum() / keep.sum().clamp_min(1.0)


def distill(student: DiT, teacher: DiT, process, data_fn: DataFn, config: DistillConfig | None = None,
            layer_map: Sequence[int] | None = None, averages: dict[float, DiT] | None = None,
            progress: bool | None = None, **overrides) -> dict:
    """Fine-tune `student` in place towards `teacher` (frozen). Returns steps, seconds and losses.

    ``progress``: a bar on stderr over the whole budget (`ditkit.io.progress.RunBar`): its seconds when the
    loop is bounded by time, else its steps (None: only on a terminal).

    `layer_map[j]`: the teacher block whose output student block j is matched to (hidden KD only).
    `averages`: optional {decay: copy of the student} kept as further EMAs alongside (for comparing
    decays on one run); they are updated in place and the student is not touched by them.
    """
    cfg = dataclasses.replace(config or DistillConfig(), **overrides)
    if cfg.steps is None and cfg.max_seconds is None:
        raise ValueError("distill needs a budget: steps or max_seconds")
    if cfg.hidden_weight > 0:
        if layer_map is None or len(layer_map) != len(student.blocks):
            raise ValueError(f"hidden-state KD needs a layer_map with one teacher block per student block "
                             f"({len(student.blocks)})")
        if max(layer_map) >= len(teacher.blocks) or min(layer_map) < 0:
            raise ValueError(f"layer_map entries must lie in 0..{len(teacher.blocks) - 1}")
    hidden = cfg.hidden_weight > 0
    guided = cfg.guided_weight > 0
    null = student.config.num_classes
    if guided and (null <= 0 or teacher.config.num_classes != null):
        raise ValueError("guided-output KD needs class-conditional student and teacher with the same classes")
    teacher_was, student_was = teacher.training, student.training
    teacher.eval().requires_grad_(False)
    student.eval().requires_grad_(True)  # eval: no random label drop inside the model; data_fn drops labels
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    emas = dict(averages or {})
    if cfg.ema_decay > 0:
        if cfg.ema_decay not in emas:
            emas[cfg.ema_decay] = copy.deepcopy(student).requires_grad_(False)
    history, window, step = [], [], 0
    timed = cfg.max_seconds is not None
    bar = RunBar(math.ceil(cfg.max_seconds) if timed else cfg.steps, "fine-tune", progress, unit="s" if timed else "step")
    start = time.perf_counter()
    while cfg.steps is None or step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step, time.perf_counter() - start)
        x0, y = data_fn(step)
        terms = {}

        def student_fn(x, t, y=None, terms=terms):
            n = x.shape[0]
            if guided:  # the same inputs with the null class after them: (2N, ...)
                x, t, y = torch.cat([x, x]), torch.cat([t.expand(n), t.expand(n)]), torch.cat([y, torch.full_like(y, null)])
            out, h_s = trunk_forward(student, x, t, y, keep_hidden=hidden)
            with torch.no_grad():
                ref, h_t = trunk_forward(teacher, x, t, y, keep_hidden=hidden)
            terms["kd"] = (out.float() - ref.float()).pow(2).mean()
            if guided:
                w = cfg.guidance_scale
                g_s = out[n:] + w * (out[:n] - out[n:])  # (N, C, H, W) guided outputs
                g_t = ref[n:] + w * (ref[:n] - ref[n:])
                terms["guided"] = (g_s.float() - g_t.float()).pow(2).mean() / w**2
            if hidden:
                terms["hidden"] = sum(masked_mse(h_s[j], h_t[i], cfg.outlier_sigma)
                                      for j, i in enumerate(layer_map)) / len(layer_map)
            return out[:n]

        gen = torch.Generator(device=x0.device).manual_seed(cfg.seed * 1_000_003 + step)
        fm = process.training_loss(student_fn, x0, {"y": y}, generator=gen).mean()
        loss = cfg.kd_weight * terms["kd"] + cfg.fm_weight * fm
        if hidden:
            loss = loss + cfg.hidden_weight * terms["hidden"]
        if guided:
            loss = loss + cfg.guided_weight * terms["guided"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        for decay, ema in emas.items():
            ema_update(ema, student, min(decay, (1 + step) / (10 + step)))
        step += 1
        window.append((float(loss.detach()), float(terms["kd"].detach()), float(fm.detach())))
        if len(window) == cfg.log_every:
            history.append(_mean_row(step, window))
            window = []
        elapsed = time.perf_counter() - start
        bar.note = f", loss {window[-1][0] if window else history[-1]['loss']:.4f}"
        bar.update(min(bar.total, int(elapsed)) - bar.n if timed else 1)
        if timed and elapsed >= cfg.max_seconds:
            break
    bar.finish()
    bar.close()
    if window:
        history.append(_mean_row(step, window))
    if cfg.ema_decay > 0:
        with torch.no_grad():
            for p, e in zip(student.parameters(), emas[cfg.ema_decay].parameters()):
                p.copy_(e)
    student.requires_grad_(False).train(student_was)
    teacher.train(teacher_was)
    return {"steps": step, "seconds": round(time.perf_counter() - start, 2), "lr": cfg.lr, "schedule": cfg.schedule,
            "ema_decay": cfg.ema_decay,
            "weights": {"output_kd": cfg.kd_weight, "diffusion": cfg.fm_weight, "hidden_kd": cfg.hidden_weight,
                        "guided_kd": cfg.guided_weight, "guidance_scale": cfg.guidance_scale},
            "history": history}


def _mean_row(step: int, window: list[tuple[float, float, float]]) -> dict:
    n = len(window)
    return {"step": step, "loss": sum(w[0] for w in window) / n, "output_kd": sum(w[1] for w in window) / n,
            "diffusion": sum(w[2] for w in window) / n}
