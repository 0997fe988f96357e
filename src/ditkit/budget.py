"""Budgets: what a model or a request will cost, estimated from its config before anything is allocated.

Memory (bytes) is the sum of

* weights: parameters x 4 (the loaders hold float32), plus the stored file's size while it is read;
* activations of one forward: ``batch x tokens x hidden x (2 mlp_ratio + 8) x 4`` (the widest live
  tensors of a block: qkv, MLP hidden, residual; inference frees each block's before the next), times
  ``depth x 1.5`` in training, which keeps every block's for the backward pass (and gradients + Adam moments:
  3 more copies of the weights);
* attention scores ``batch x heads x tokens^2 x 4`` (the math path materialises them; a fused kernel would not,
  so the estimate is an upper bound);
* the request's tensors: noise and samples, ``n x channels x height x width x 4`` each, and decoded images.

* the sampler's schedule: ``steps x 24`` bytes (time grids in float64).

Work is ``samples x steps x (2 with guidance) x MACs per forward``, with MACs per forward
``tokens x block parameters + 2 x depth x tokens^2 x hidden`` (the matrix products and attention), plus a
fixed cost per model call (`SECONDS_PER_CALL`: kernel launches and Python, which dominate small models).

`check` refuses (`BudgetError`, one line) an estimate whose memory exceeds what the machine has available
(``MemAvailable`` of /proc/meminfo; ``os.sysconf`` elsewhere) or whose work exceeds a day at an optimistic rate
(`PEAK_MACS_PER_SECOND`: 10^11 MAC/s per CPU core torch computes on (two 512-bit FMA units at 3 GHz, the peak of
the fastest cores, which PyTorch does not reach on a DiT), 10^15 on a GPU, above what it reaches, and 0.2 ms /
0.05 ms per model call, below what either takes, so only requests that could never finish are refused). Overrides, for the
brave: ``DITKIT_MAX_MEMORY_GB`` (a memory limit in GiB used instead of the available memory) and
``DITKIT_MAX_HOURS`` (the work limit, in hours at that rate); ``inf`` disables either check.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .config import DiTConfig

PEAK_MACS_PER_SECOND = {"cpu": 1e11, "cuda": 1e15}  # per CPU core, per GPU; optimistic: only what never finishes
SECONDS_PER_CALL = {"cpu": 2e-4, "cuda": 5e-5}  # the least a model call takes (a forward of a tiny DiT)
DEFAULT_MAX_HOURS = 24.0
MEMORY_ENV = "DITKIT_MAX_MEMORY_GB"
HOURS_ENV = "DITKIT_MAX_HOURS"
GIB = 1024 ** 3


class BudgetError(ValueError):
    """A model or request needs more memory or time than the machine offers (one line)."""


@dataclass(frozen=True)
class Estimate:
    """What something will cost: ``memory`` bytes at its peak, ``macs`` multiply-accumulates in all."""

    what: str  # e.g. "loading assets/x" or "sampling 16 images x 50 steps"
    memory: float
    macs: float = 0.0
    calls: float = 0.0  # model calls (forwards of a batch)

    def hours(self, device: str = "cpu") -> float:
        """The work in hours at the optimistic rate of ``device`` ("cpu", "cuda", "cuda:1", ...)."""
        return (self.macs / peak_rate(device) + self.calls * SECONDS_PER_CALL[_kind(device)]) / 3600


def _kind(device) -> str:
    return "cpu" if str(device).split(":")[0] == "cpu" else "cuda"


def cpu_cores() -> int:
    """The CPU cores a forward computes on: torch's thread count (``--threads``), at most the cores this process
    may run on."""
    import sys

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    torch = sys.modules.get("torch")  # set by --threads; never imported here just to ask
    if torch is not None:
        cores = min(cores, max(1, torch.get_num_threads()))
    return max(1, cores)


def peak_rate(device: str = "cpu") -> float:
    """Multiply-accumulates per second that ``device`` could never exceed: per core times `cpu_cores` on a CPU."""
    kind = _kind(device)
    return PEAK_MACS_PER_SECOND[kind] * (cpu_cores() if kind == "cpu" else 1)


# ----------------------------------------------------------------------------- model sizes


def _trunk(config) -> DiTConfig:
    return getattr(config, "dit", config)  # a VideoDiTConfig's per-frame trunk, or the DiT config itself


def block_params(config) -> float:
    """Parameters of one transformer block: attention 4 D^2, MLP 2 r D^2, adaLN 6 D^2; PixArt-α's cross-attention
    block has cross-attention (4 D^2) and shares one adaLN; SD3's MMDiT block has a second (text) stream
    (twice the block)."""
    cfg = _trunk(config)
    d = float(cfg.hidden_size)
    arch = getattr(cfg, "arch", None)
    if arch == "cross":
        return (4 + 2 * cfg.mlp_ratio + 4) * d * d
    per = (4 + 2 * cfg.mlp_ratio + 6) * d * d
    if arch == "mmdit":
        return 2 * per
    if getattr(config, "text_dim", 0):  # a video DiT cross-attending to caption tokens
        per += 4 * d * d
    return per


def model_params(config) -> float:
    """Parameters of a DiT, text DiT or video DiT config (estimated from its sizes, exact to a few percent)."""
    cfg = _trunk(config)
    d = float(cfg.hidden_size)
    p2 = cfg.patch_size ** 2
    embed = p2 * cfg.in_channels * d + cfg.frequency_embedding_size * d + d * d + (cfg.num_classes + 1) * d
    final = 2 * d * d + d * p2 * cfg.out_channels
    text = (getattr(cfg, "text_dim", None) or getattr(config, "text_dim", 0) or 0) * d
    return cfg.depth * block_params(config) + embed + final + text


def tokens(config, frames: int | None = None) -> int:
    """Tokens of one sample: patches per frame, times latent frames for a video (``frames`` input frames)."""
    cfg = _trunk(config)
    h, w = cfg.hw
    spatial = max(1, h // cfg.patch_size) * max(1, w // cfg.patch_size)
    if frames is None:
        frames = getattr(config, "num_frames", None)
    if frames is None:
        return spatial
    return spatial * max(1, math.ceil(frames / getattr(config, "temporal_patch", 1)))


def forward_macs(config, frames: int | None = None) -> float:
    """Multiply-accumulates of one forward of one sample (matrix products of the blocks, and attention)."""
    cfg = _trunk(config)
    t = float(tokens(config, frames))
    return t * cfg.depth * block_params(config) + 2 * cfg.depth * t * t * cfg.hidden_size


def activation_bytes(config, batch: int, frames: int | None = None, training: bool = False) -> float:
    """Peak activation memory of one forward (and backward, ``training``) of ``batch`` samples."""
    cfg = _trunk(config)
    t = float(tokens(config, frames))
    live = batch * t * cfg.hidden_size * (2 * cfg.mlp_ratio + 8) * 4
    scores = batch * cfg.num_heads * t * t * 4
    if training:
        return (live + scores) * cfg.depth * 1.5
    return live + scores


# ----------------------------------------------------------------------------- estimates


def estimate_load(config, what: str, file_bytes: int = 0) -> Estimate:
    """Loading a model folder: float32 weights, plus the stored file while it is read."""
    return Estimate(what, model_params(config) * 4 + file_bytes)


def estimate_sampling(config, n: int, steps: int, batch_size: int, *, guided: bool = True, frames: int | None = None,
                      decoded_pixels: int = 0, what: str = "") -> Estimate:
    """Sampling ``n`` samples of ``steps`` steps in batches of ``batch_size`` from a loaded model (its weights are
    already counted): activations of one batch (doubled with guidance), noise and samples of all ``n``, and the
    decoded images (``decoded_pixels`` values per sample)."""
    cfg = _trunk(config)
    rows = min(n, batch_size) * (2 if guided else 1)
    h, w = cfg.hw
    f = 1 if frames is None else frames
    per_sample = cfg.in_channels * h * w * f * 4 * 3 + decoded_pixels * 4 * 2
    memory = activation_bytes(config, rows, frames) + n * per_sample + 24.0 * steps
    macs = float(n) * steps * (2 if guided else 1) * forward_macs(config, frames)
    calls = float(steps) * -(-n // max(1, batch_size))
    return Estimate(what or f"sampling {n} x {steps} steps", memory, macs, calls)


def estimate_training(config, batch_size: int, steps: int, what: str = "") -> Estimate:
    """Training ``steps`` steps of ``batch_size`` samples: weights, EMA, gradients, Adam moments (5 copies) and the
    activations kept for the backward pass; work: forward + backward (3 forwards) per sample and step."""
    memory = model_params(config) * 4 * 5 + activation_bytes(config, batch_size, training=True)
    macs = 3.0 * batch_size * steps * forward_macs(config)
    return Estimate(what or f"training {steps} steps of batch {batch_size}", memory, macs, 3.0 * steps)


# ----------------------------------------------------------------------------- the machine


def available_memory() -> float:
    """Bytes of memory available to a new allocation: ``MemAvailable`` (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BudgetError(f"{name} must be a number (or inf), got {raw!r}") from None
    if math.isnan(value) or value <= 0:
        raise BudgetError(f"{name} must be a positive number (or inf), got {raw!r}")
    return value


def memory_limit() -> float:
    """The memory an estimate may use: ``DITKIT_MAX_MEMORY_GB`` GiB if set, else the available memory."""
    gb = _env_number(MEMORY_ENV)
    return gb * GIB if gb is not None else available_memory()


def hours_limit() -> float:
    hours = _env_number(HOURS_ENV)
    return DEFAULT_MAX_HOURS if hours is None else hours


def check(estimate: Estimate, device: str = "cpu") -> Estimate:
    """``estimate`` if it fits the machine (its work at ``device``'s rate), else a `BudgetError` line saying what,
    how much, and the override."""
    limit = memory_limit()
    if estimate.memory > limit:
        have = f"the limit {MEMORY_ENV}={limit / GIB:g}" if os.environ.get(MEMORY_ENV) else f"the {_gib(limit)} available"
        raise BudgetError(f"{estimate.what} needs about {_gib(estimate.memory)} of memory, more than {have}; "
                          f"set {MEMORY_ENV} (GiB) to raise the limit")
    hours = hours_limit()
    if estimate.hours(device) > hours:
        kind = _kind(device)
        where = f"{cpu_cores()} CPU cores" if kind == "cpu" else kind
        raise BudgetError(f"{estimate.what} would take over {hours:g} h even at {peak_rate(device):.0e} "
                          f"multiply-accumulates per second on {where} ({estimate.macs:.3g} in all); set {HOURS_ENV} "
                          f"to raise the limit")
    return estimate


def _gib(n: float) -> str:
    return f"{n / GIB:.3g} GiB" if n < 1e6 * GIB else f"{n:.3g} bytes"
