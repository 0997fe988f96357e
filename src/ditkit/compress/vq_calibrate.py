"""Zero-data block-wise calibration of vector-quantized DiT blocks (VQ4DiT, Deng et al. 2025, §3).

After k-means, each weight sub-vector keeps its n nearest codewords a_1..a_n with softmax ratios
r (initialised from the distances, r_i ∝ 1/dist_i) and is represented during calibration as

    ŵ = Σ_i r_i · C[a_i]

Codebook C and ratio logits are trained together, block by block, to match the float block on
Gaussian-noise inputs at timesteps spread over the trajectory (no data needed):

    L = ‖Δ_q − Δ_fp‖² / ‖Δ_fp‖² + λ_r · mean(1 − Σ_i r_i²)

where Δ = block(x) − x is the block's residual contribution (x comes from the float model, so
blocks are calibrated independently) and the second term, zero for one-hot r, pushes the ratios
toward a single codeword. Finally each sub-vector keeps its argmax-r codeword. With n = 1 this is
plain VQ (only the codebook is tuned).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..io.progress import RunBar
from .vq import VQLinear, nearest


class SoftVQLinear(nn.Module):
    """Calibration view of a `VQLinear`: n candidate codewords per sub-vector, learnable ratios and codebook."""

    def __init__(self, vq: VQLinear, weight: torch.Tensor, n_candidates: int = 2):
        super().__init__()
        self.template = vq
        n, k = vq.out_features, vq.in_features
        scale = vq.row_scale.float()  # (N,)
        sub = (weight.detach().float() / scale[:, None]).reshape(-1, vq.dim)  # (P, d), P = N*K/d
        cand, dist = nearest(sub, vq.codebook.float(), n_candidates)  # (P, n) each
        self.register_buffer("cand", cand)
        self.register_buffer("scale", scale)
        self.bias = None if vq.bias is None else vq.bias.detach().clone()
        self.codebook = nn.Parameter(vq.codebook.float().clone())  # (k, d)
        self.logits = nn.Parameter(-torch.log(dist + 1e-8))  # r_i ∝ 1 / dist_i
        self.shape = (n, k)

    def ratios(self) -> torch.Tensor:
        return self.logits.softmax(-1)  # (P, n)

    def weight(self) -> torch.Tensor:
        w = (self.ratios()[..., None] * self.codebook[self.cand]).sum(1)  # (P, d): Σ r_i C[a_i]
        return w.reshape(self.shape) * self.scale[:, None]  # (N, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    def ratio_loss(self) -> torch.Tensor:
        return (1 - self.ratios().pow(2).sum(-1)).mean()

    def harden(self) -> VQLinear:
        """The `VQLinear` keeping each sub-vector's argmax-ratio codeword and the tuned codebook."""
        vq = self.template
        out = VQLinear(vq.in_features, vq.out_features, vq.bias is not None, vq.codebook_size, vq.dim)
        best = self.cand.gather(1, self.logits.argmax(-1, keepdim=True))[:, 0]  # (P,)
        with torch.no_grad():
            out.codebook.copy_(self.codebook.half())
            out.set_codes(best.reshape(vq.out_features, -1))
            out.row_scale.copy_(vq.row_scale)
            if vq.bias is not None:
                out.bias.copy_(vq.bias)
        return out.to(vq.codebook.device)


def _noise_inputs(model, samples: int, t_range: tuple[float, float], seed: int):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, cfg.in_channels, *cfg.hw, generator=g)
    t = torch.linspace(t_range[0], t_range[1], samples)  # timesteps spread over the whole trajectory
    y = torch.randint(0, cfg.num_classes, (samples,), generator=g) if cfg.num_classes else None
    return x, t, y


def calibrate_vq(fp_model: nn.Module, q_model: nn.Module, *, samples: int = 8, steps: int = 50,
                 lr_codebook: float = 1e-3, lr_ratio: float = 5e-2, n_candidates: int = 2, lambda_ratio: float = 0.1,
                 t_range: tuple[float, float] = (0.0, 1000.0), seed: int = 0, progress: bool | None = None) -> dict:
    """Tune the `VQLinear` layers of ``q_model``'s blocks in place against ``fp_model``, block by block.

    ``t_range`` is in network time (1000-step convention for both processes in ditkit).
    Returns {"blocks": [{"block", "loss_before", "loss_after"}], ...}: relative residual-branch MSE
    of each hardened block on the calibration inputs. ``progress``: a bar over the blocks on stderr
    (`ditkit.io.progress.RunBar`; None: only on a terminal).
    """
    if n_candidates < 1 or steps < 0 or samples < 1:
        raise ValueError("calibrate_vq needs n_candidates >= 1, steps >= 0, samples >= 1")
    fp_model.eval()
    q_model.eval()
    x, t, y = _noise_inputs(fp_model, samples, t_range, seed)
    with torch.no_grad():
        tokens, ctx = fp_model.embed(x)  # (S, T, D)
        c = fp_model.condition(t, y)  # (S, D)
    report = []
    bar = RunBar(len(q_model.blocks), "vq calibration", progress, unit="block")
    for i, (fp_block, q_block) in enumerate(zip(fp_model.blocks, q_model.blocks)):
        with torch.no_grad():
            target = fp_block(tokens, c, ctx) - tokens  # (S, T, D) residual contribution
        names = [n for n, m in q_block.named_modules() if isinstance(m, VQLinear)]
        if names:
            before = _block_loss(q_block, tokens, c, ctx, target)
            soft = {n: SoftVQLinear(q_block.get_submodule(n), fp_block.get_submodule(n).weight, n_candidates)
                    for n in names}
            for n, m in soft.items():
                q_block.set_submodule(n, m)
            opt = torch.optim.Adam([{"params": [m.codebook for m in soft.values()], "lr": lr_codebook},
                                    {"params": [m.logits for m in soft.values()], "lr": lr_ratio}])
            with torch.enable_grad():
                for _ in range(steps):
                    opt.zero_grad(set_to_none=True)
                    out = q_block(tokens, c, ctx) - tokens
                    loss = (out - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
                    loss = loss + lambda_ratio * sum(m.ratio_loss() for m in soft.values()) / len(soft)
                    loss.backward()
                    opt.step()
            for n, m in soft.items():
                q_block.set_submodule(n, m.harden())
            report.append({"block": i, "loss_before": before, "loss_after": _block_loss(q_block, tokens, c, ctx, target)})
        with torch.no_grad():
            tokens = target + tokens  # float block output feeds the next block
        bar.update(1)
    bar.close()
    return {"blocks": report, "samples": samples, "steps": steps, "n_candidates": n_candidates}


def _block_loss(block, tokens, c, ctx, target) -> float:
    with torch.no_grad():
        out = block(tokens, c, ctx) - tokens
        return float((out - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12))
