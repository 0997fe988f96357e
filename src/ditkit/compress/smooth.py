"""Channel balancing (SmoothQuant; ViDiT-Q's timestep-aware variant).

SmoothQuant (Xiao et al. 2023, eq. 4) migrates activation outliers into the weights with a
per-input-channel factor

    s_j = max|X_j|^α / max|W_:,j|^(1−α),      X' = X diag(s)^-1,  W' = W diag(s),

which leaves X Wᵀ unchanged and balances the two quantization difficulties (α = 0.5 is the
paper's default; ViDiT-Q uses α per timestep range, e.g. 0.11 in its W4A8 OpenSora config).
`Int8Linear` applies 1/s to its input before the per-token quantization (a cheap per-channel
multiply) and stores W diag(s) quantized. With G timestep groups there is one s per group.
"""

from __future__ import annotations

import torch


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5,
                      eps: float = 1e-5) -> torch.Tensor:
    """s = a^α / w^(1−α) per input channel, a = act_absmax (G, K) or (K,), w = max_i |W_ij| of weight (N, K).

    Channels that never saw activation (a = 0, e.g. dead inputs) get s = 1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must lie in [0, 1], got {alpha}")
    w_max = weight.detach().float().abs().amax(dim=0).clamp_min(eps)  # (K,)
    a = act_absmax.float()
    s = a.clamp_min(eps).pow(alpha) / w_max.pow(1.0 - alpha)  # (G, K) or (K,)
    return torch.where(a > 0, s, torch.ones_like(s))
