"""On-policy distillation states: the student's own guided sampling trajectories (``--kd-rollout``).

Plain distillation noises training images, ``x_s = (1 - s) x0 + s eps``, and matches the student to
the teacher there. At sampling time the student never sees those states: it walks its own Euler
path under classifier-free guidance, and its errors move it off the data-noising distribution,
most of all in the last third of the path where a pruned student loses its accuracy
(``ditkit.eval.time_swap``: the full model swapped in below s = 0.35 recovers it). Matching the
teacher on the states the student itself visits is the imitation-learning fix for that compounding
error (DAgger: Ross, Gordon and Bagnell 2011, "A Reduction of Imitation Learning and Structured
Prediction to No-Regret Online Learning"): the teacher says, at the student's own states, where the
path should go.

`RolloutPool` samples ``trajectories`` paths at a time from the current student (Euler on the
sampler's own grid, guided at the model's cfg scale, no gradients), keeps every state
``(x_s, t, label)`` of them, shuffles them and hands them out ``n`` at a time; when it runs dry it
samples fresh paths from the (by then updated) student. Each state is used once. Labels of the
handed-out rows are replaced by the null class at the model's label-drop rate, as the data rows are.
"""

from __future__ import annotations

import torch

from ..diffusion.samplers import flow_time_grid


class RolloutPool:
    """States of the student's guided Euler paths, handed out ``n`` at a time (see the module doc)."""

    def __init__(self, process, *, num_classes: int, shape: tuple[int, ...], steps: int = 50, shift: float = 1.0,
                 cfg_scale: float = 4.0, trajectories: int = 8, label_drop: float = 0.1, max_s: float = 1.0,
                 seed: int = 0, device: str | torch.device = "cpu"):
        if not hasattr(process, "network_time") or not hasattr(process, "velocity"):
            raise ValueError("rollout distillation needs a flow-matching process")
        if num_classes <= 0:
            raise ValueError("rollout distillation needs a class-conditional model")
        if steps <= 0 or trajectories <= 0 or not 0.0 < max_s <= 1.0 or not 0.0 <= label_drop < 1.0:
            raise ValueError("rollout steps and trajectories must be positive, max_s in (0, 1], label_drop in [0, 1)")
        self.process, self.num_classes, self.shape = process, num_classes, tuple(shape)
        self.steps, self.shift, self.cfg_scale = steps, shift, cfg_scale
        self.trajectories, self.label_drop, self.max_s = trajectories, label_drop, max_s
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed * 7_919 + 17)
        grid = flow_time_grid(steps, shift)[:-1]  # (steps,) the s each Euler step reads
        self.picked = [i for i, s in enumerate(grid.tolist()) if s <= max_s]
        if not self.picked:
            raise ValueError(f"no sampler step has s <= {max_s}")
        self._x = self._t = self._y = None
        self._next = 0
        self.refills = 0

    def __len__(self) -> int:
        return 0 if self._x is None else self._x.shape[0] - self._next

    @torch.no_grad()
    def _refill(self, model) -> None:
        was = model.training
        model.eval()
        g, null, w = self.trajectories, self.num_classes, self.cfg_scale
        x = torch.randn((g, *self.shape), generator=self.gen).to(self.device)  # (G, C, H, W) noise
        y = torch.randint(self.num_classes, (g,), generator=self.gen).to(self.device)  # (G,)
        y2 = torch.cat([y, torch.full_like(y, null)])  # (2G,) label rows, then null rows
        grid = flow_time_grid(self.steps, self.shift).tolist()
        xs, ts = [], []
        for i in range(self.steps):
            t_net = self.process.network_time(torch.full((g,), grid[i], device=self.device))  # (G,)
            if i in self.picked:
                xs.append(x.clone())
                ts.append(t_net)
            out = model(torch.cat([x, x]), torch.cat([t_net, t_net]), y2)  # (2G, C_out, H, W)
            v = self.process.velocity(out, x.shape[1])  # (2G, C, H, W)
            v = v[g:] + w * (v[:g] - v[g:])  # (G, C, H, W) guided velocity
            x = x + (grid[i + 1] - grid[i]) * v
        model.train(was)
        k = len(self.picked)
        order = torch.randperm(g * k, generator=self.gen).to(self.device)
        self._x = torch.stack(xs).flatten(0, 1)[order]  # (K*G, C, H, W) states, shuffled
        self._t = torch.stack(ts).flatten(0, 1)[order]  # (K*G,)
        self._y = y.repeat(k)[order]  # (K*G,) each state's trajectory label
        self._next = 0
        self.refills += 1

    def draw(self, model, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` unused states ``(x (n, C, H, W), network t (n,), labels (n,))``, sampling new paths if needed."""
        if n <= 0:
            raise ValueError(f"draw needs n > 0, got {n}")
        if len(self) < n:
            self._refill(model)
            while len(self) < n:  # a pool smaller than one draw: grow it
                x, t, y = self._x, self._t, self._y
                self._refill(model)
                self._x, self._t, self._y = torch.cat([x, self._x]), torch.cat([t, self._t]), torch.cat([y, self._y])
        sl = slice(self._next, self._next + n)
        self._next += n
        x, t, y = self._x[sl], self._t[sl], self._y[sl]
        if self.label_drop > 0:
            drop = torch.rand(n, generator=self.gen).to(self.device) < self.label_drop
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return x, t, y
