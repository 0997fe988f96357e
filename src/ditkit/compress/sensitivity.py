"""Measured per-layer sensitivity for mixed precision.

ViDiT-Q (Zhao et al. 2025, §3.3 "metric-decoupled mixed precision") quantizes one layer at a
time and measures what that does to the generation metric the layer affects, then keeps the
most sensitive layers in higher precision. Here the metric is the one every DiT output shares:
the relative L2 error of the final network output on the calibration batches when *only* that
layer is quantized,

    sens(ℓ) = ‖f_ℓ(x) − f(x)‖ / ‖f(x)‖   over all calibration inputs (x, t, y),

which costs one forward over the calibration set per candidate layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..io.progress import RunBar
from .calibrate import run_model


def relative_error(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> float:
    """‖outs − refs‖ / ‖refs‖ over a list of tensors taken together."""
    num = sum(float((o.float() - r.float()).pow(2).sum()) for o, r in zip(outs, refs))
    den = sum(float(r.float().pow(2).sum()) for r in refs)
    return (num / max(den, 1e-30)) ** 0.5


def layer_sensitivity(model: nn.Module, replacements: Mapping[str, nn.Module], batches: Sequence[tuple],
                      reference: Sequence[torch.Tensor] | None = None, progress: bool | None = None) -> dict[str, float]:
    """{name: sens} for each ``replacements[name]`` swapped into ``model`` alone (restored afterwards).

    ``progress``: a bar over the layers on stderr (`ditkit.io.progress.RunBar`; None: only on a terminal)."""
    refs = run_model(model, batches) if reference is None else reference
    out = {}
    with RunBar(len(replacements), "sensitivity", progress, unit="layer") as bar:
        for name, new in replacements.items():
            old = model.get_submodule(name)
            model.set_submodule(name, new)
            try:
                out[name] = relative_error(run_model(model, batches), refs)
            finally:
                model.set_submodule(name, old)
            bar.update(1)
    return out


def most_sensitive(sens: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` names with the largest sensitivity, most sensitive first."""
    return sorted(sens, key=lambda n: -sens[n])[: max(k, 0)]
