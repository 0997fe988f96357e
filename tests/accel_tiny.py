"""Tiny DiTs with every residual branch open, and a sampling helper, for the ditkit.accel tests."""

import torch

from ditkit import DiT, DiTConfig, FlowMatching, GaussianDiffusion
from ditkit.diffusion.samplers import run_sampler

torch.set_num_threads(1)

# RoPE + QK-norm + flow (shapes-small style), and the reference layout (sin-cos positions, learned sigma)
ROPE = DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=3, num_heads=2, num_classes=4,
                 learn_sigma=False, use_rope=True, qk_norm=True)
ABS = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=3, num_heads=2, num_classes=4)

NULL = 4  # the null label of both configs (num_classes)


def tiny_dit(cfg: DiTConfig = ROPE, seed: int = 0) -> DiT:
    """A DiT whose adaLN-Zero layers got small random weights, so every block and the head act."""
    torch.manual_seed(seed)
    model = DiT(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        zeroed = [b.adaLN_modulation[-1] for b in model.blocks] + [model.final_layer.adaLN_modulation[-1],
                                                                   model.final_layer.linear]
        for layer in zeroed:
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=g))
            layer.bias.copy_(0.05 * torch.randn(layer.bias.shape, generator=g))
    return model


def inputs(cfg: DiTConfig = ROPE, n: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.hw
    noise = torch.randn(n, cfg.in_channels, h, w, generator=g)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return noise, labels


def run(fn, noise, labels, *, sampler: str = "euler", steps: int = 8, gaussian: bool = False):
    """Sample with any model_fn: flow (euler/heun) or Gaussian (ddim) with a respaced chain."""
    process = GaussianDiffusion() if gaussian else FlowMatching()
    return run_sampler(fn, noise, process=process, sampler=sampler, steps=steps, model_kwargs={"y": labels})
