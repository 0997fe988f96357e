"""A file of full-compute samples that benchmarks in other processes can reuse.

A 2,000-sample benchmark spends most of its time on the untimed quality pass of full compute
(about 38 min for the bundled model on one CPU thread). `Bench` (with ``timing_samples``) needs
those images only as the reference of PSNR, agreement and the accuracy drop, so two benchmark
processes running side by side (``ditkit bench compress`` on different variants) can share one
pass: the first writes the file, the others load it. The timings are never reused: every process
times full compute itself, on its own timing subset, so its speed ratios stay same-run figures.

The file is safetensors: ``images`` (N, C, H, W) float32 and ``labels`` (N,), with a fingerprint
in the metadata (a SHA-256 over the model's weights and config, the sampling setting, the labels
and the decoder's weights). A file whose fingerprint differs is an error, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

# setting fields that change the samples (repeats and timing_samples only change the timing)
SAMPLE_FIELDS = ("sampler", "steps", "cfg_scale", "shift", "num_samples", "seed", "batch_size")


def _hash_tensors(h, module) -> None:
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())


def fingerprint(model, setting, labels: torch.Tensor, decoder=None) -> str:
    """SHA-256 of everything that determines the full-compute samples of a benchmark."""
    h = hashlib.sha256()
    _hash_tensors(h, model)
    config = getattr(model, "config", None)
    h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config), sort_keys=True).encode())
    h.update(json.dumps({k: getattr(setting, k) for k in SAMPLE_FIELDS}, sort_keys=True).encode())
    h.update(labels.to(torch.int64).numpy().tobytes())
    if isinstance(decoder, torch.nn.Module):
        _hash_tensors(h, decoder)
    return h.hexdigest()


def load_full(path: str | Path, expected: str) -> torch.Tensor | None:
    """The stored images if ``path`` exists and holds samples of fingerprint ``expected``; None if absent."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            found = (f.metadata() or {}).get("fingerprint")
            images = f.get_tensor("images")
    except Exception as e:  # not a safetensors file of ours
        raise ValueError(f"{path}: not a full-compute sample file ({type(e).__name__})") from None
    if found != expected:
        raise ValueError(f"{path} holds full-compute samples of another model or setting "
                         "(fingerprint differs); delete it or give another path")
    return images


def save_full(path: str | Path, images: torch.Tensor, labels: torch.Tensor, fp: str) -> None:
    """Write the samples atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    from ..io.checkpoint import atomic_write

    with atomic_write(path) as tmp:
        save_file({"images": images.detach().float().contiguous(), "labels": labels.to(torch.int64).contiguous()},
                  str(tmp), metadata={"fingerprint": fp})
