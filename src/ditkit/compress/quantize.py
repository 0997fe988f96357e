"""`quantize_model`: replace a DiT's Linear layers by real low-bit layers, with a measured report.

    qmodel, report = quantize_model(model, "w8a8", calib=collect_calibration(model, process, labels))

Steps (ViDiT-Q, Zhao et al. 2025, with SmoothQuant, Xiao et al. 2023):

1. Pick candidate layers: every ``nn.Linear`` whose name matches none of ``keep_fp``. The default
   keeps the timestep MLP, all adaLN modulation layers and the final layer in float, as ViDiT-Q
   keeps its embedders and final layer (they act on N rows, not N·T tokens, so they cost little,
   and adaLN outputs scale every token of a block).
2. With calibration inputs: per-channel activation ranges (per timestep group if
   ``timestep_groups > 1``) -> SmoothQuant factors for schemes with quantized activations.
3. Build each quantized layer; with calibration, measure every layer's sensitivity (output error
   with only that layer quantized) and keep the ``keep_sensitive`` most sensitive ones in float.
4. Swap the layers into a deep copy; the input model is left untouched.

Without ``calib`` nothing is calibrated: per-token dynamic activation scales make W8A8 work
calibration-free, just without smoothing or measured mixed precision.

Schemes (`SCHEMES`): integer "w8a8" and "w4a8" run ``torch._int_mm``; "w8a16", "w4a16", the
float formats "fp8_e4m3", "fp8_e5m2", "fp4_e2m1" (+ "_a8") and the vector-quantized "vq2", "vq3"
store real low-bit tensors but compute by decoding to float32, and the report says so per layer.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from .calibrate import (
    CalibSet,
    TimestepRouter,
    activation_absmax,
    calibration_batches,
    subsample_rows,
    timestep_bounds,
)
from .fp import FPLinear
from .int8 import PATH_FALLBACK, PATH_INT_MM, Int8Linear, Int8WeightOnlyLinear
from .rotation import block_size_for
from .sensitivity import layer_sensitivity, most_sensitive
from .smooth import smoothing_factors
from .vq import VQLinear
from .w4 import W4A8Linear, W4A16Linear

DEFAULT_KEEP_FP = ("t_embedder", "adaLN_modulation", "final_layer")
# Always float: the timestep MLP's first layer, whose weight dtype its sinusoidal features are cast
# to (`TimestepEmbedder.forward`). Its second layer may be quantized where the default keep_fp
# (which keeps the whole t_embedder) is overridden, e.g. to reach 2-bit model sizes with VQ.
ALWAYS_FP = ("t_embedder.mlp.0",)


def _rotation(linear: nn.Linear, opts: dict) -> int:
    return block_size_for(linear.in_features, opts["rotate"]) if opts.get("rotate") else 1


def _build_w8a8(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
    return Int8Linear.from_linear(linear, smooth, t_bounds, rotate=_rotation(linear, opts))


def _build_w8a16(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
    return Int8WeightOnlyLinear.from_linear(linear)


def _build_w4a8(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
    s = None if smooth is None else smooth[0]  # (K,); one group only (checked in quantize_model)
    return W4A8Linear.from_linear(linear, opts.get("group_size") or 128, s, cache_int8=opts.get("cache_int8", False),
                                  rotate=_rotation(linear, opts))


def _build_w4a16(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
    return W4A16Linear.from_linear(linear, opts.get("group_size") or 128)


def _fp_builder(fmt: str, act_format: str | None) -> Callable:
    def build(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
        return FPLinear.from_linear(linear, fmt, opts.get("group_size") or 32, act_format)  # 32: OCP MX block
    return build


def _vq_builder(codebook_size: int, dim: int) -> Callable:
    def build(linear: nn.Linear, smooth, t_bounds, opts: dict) -> nn.Module:
        return VQLinear.from_linear(linear, codebook_size, dim, iters=opts.get("kmeans_iters", 20))
    return build


# scheme -> (builder(linear, smooth (G, K) | None, t_bounds | None, opts), quantizes activations?)
SCHEMES: dict[str, tuple[Callable, bool]] = {
    "w8a8": (_build_w8a8, True),
    "w8a16": (_build_w8a16, False),
    "w4a8": (_build_w4a8, True),
    "w4a16": (_build_w4a16, False),
    # floating-point formats (FP4DiT): memory is real, compute is simulated (decoded to float32)
    "fp8_e4m3": (_fp_builder("e4m3", None), False),
    "fp8_e5m2": (_fp_builder("e5m2", None), False),
    "fp4_e2m1": (_fp_builder("e2m1", None), False),
    "fp8_e4m3_a8": (_fp_builder("e4m3", "e4m3"), False),
    "fp4_e2m1_a8": (_fp_builder("e2m1", "e4m3"), False),
    # vector quantization (VQ4DiT): k-means codebooks over 4-dim sub-vectors; simulated compute
    "vq2": (_vq_builder(256, 4), False),  # 2 bits per weight (uint8 codes)
    "vq3": (_vq_builder(4096, 4), False),  # 3 bits per weight (12-bit codes); k-means is slow on CPU
}


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return scheme


def assign_schemes(linears: Sequence[str], scheme: str, keep_fp: Sequence[str],
                   overrides: Mapping[str, str]) -> dict[str, str]:
    """{layer name: scheme} for the layers to quantize, in model order (see `quantize_model`)."""
    for s in overrides.values():
        check_scheme(s)
    out = {}
    for n in linears:
        if is_kept(n, ALWAYS_FP):
            continue
        matches = [s for p, s in overrides.items() if is_kept(n, (p,))]
        if matches:
            out[n] = matches[-1]
        elif not is_kept(n, keep_fp):
            out[n] = scheme
    return out


def is_kept(name: str, keep_fp: Sequence[str]) -> bool:
    """A layer stays float if any pattern is a dotted component or a dotted prefix/infix of its name."""
    dotted = f".{name}."
    return any(f".{p.strip('.')}." in dotted for p in keep_fp)


def weight_bytes(model: nn.Module) -> int:
    """Resident bytes of all parameters and persistent buffers (what a checkpoint holds)."""
    tensors = list(model.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(model: nn.Module) -> int:
    """`weight_bytes` plus runtime caches (W4A8's unpacked int8 weights once filled)."""
    cache = sum(m._w8.numel() * m._w8.element_size() for m in model.modules() if getattr(m, "_w8", None) is not None)
    return weight_bytes(model) + cache


def quantize_model(model: nn.Module, scheme: str = "w8a8", calib: CalibSet | None = None, *,
                   alpha: float | None = 0.5, keep_fp: Sequence[str] = DEFAULT_KEEP_FP,
                   overrides: Mapping[str, str] | None = None, keep_sensitive: int = 0,
                   sensitivity: bool = True, timestep_groups: int = 1, group_size: int | None = None,
                   cache_int8: bool = False, rotate: int = 0, kmeans_iters: int = 20,
                   max_batch: int = 64, sensitivity_inputs: int | None = 128,
                   progress: bool | None = None) -> tuple[nn.Module, dict]:
    """A quantized deep copy of ``model`` and a report.

    Args:
        scheme: one of `SCHEMES` ("w8a8", ...).
        calib: calibration inputs [(x, t, y), ...] (see `collect_calibration`); None = no calibration.
        alpha: SmoothQuant migration strength (None: no smoothing). Needs ``calib``.
        keep_fp: name patterns of Linear layers left in float (dotted components, e.g. "final_layer").
            `ALWAYS_FP` layers stay float regardless.
        overrides: {name pattern: scheme} for layers that get another scheme than ``scheme`` (even
            if ``keep_fp`` names them), e.g. {"adaLN_modulation": "w8a16"}; the last match wins.
        keep_sensitive: also keep this many of the most sensitive layers (measured; needs ``calib``).
        sensitivity: measure per-layer sensitivity when ``calib`` is given (reported).
        timestep_groups: G > 1 calibrates one smoothing factor per timestep range (ViDiT-Q), with
            ranges split at quantiles of the calibration timesteps; costs G× weight memory.
        group_size: K-group size of 4-bit schemes (default 128 for integer W4, 32 for FP4 E2M1).
        rotate: largest block Hadamard rotation (a power of two, e.g. 256) applied to the inputs of
            w8a8 / w4a8 layers (LRQ-DiT, QuaRot); each layer uses the largest power of two <= rotate
            dividing its K. 0 = none.
        kmeans_iters: Lloyd iterations of the VQ schemes' k-means (see `calibrate_vq` to refine after).
        cache_int8: W4A8 keeps its unpacked int8 weight after the first forward (faster, int8-sized RAM).
        sensitivity_inputs: measure sensitivity on at most this many calibration inputs, evenly
            strided over the set (None: all). It costs one forward over them per candidate layer,
            so it dominates calibration time; ranges and smoothing always use every input.
        progress: a bar over the sensitivity measurement's layers on stderr (None: only on a terminal).

    Report keys: scheme, quantized, kept_fp, kernels, sensitivity, bytes, calibration_s, ...
    """
    check_scheme(scheme)
    if rotate and (rotate < 2 or rotate & (rotate - 1)):
        raise ValueError(f"rotate must be 0 or a power of two >= 2, got {rotate}")
    if (keep_sensitive > 0 or timestep_groups > 1) and calib is None:
        raise ValueError("keep_sensitive and timestep_groups need calibration inputs (calib=...)")
    start = time.perf_counter()
    qmodel = copy.deepcopy(model).eval()
    linears = [n for n, m in qmodel.named_modules() if isinstance(m, nn.Linear)]
    layer_scheme = assign_schemes(linears, scheme, keep_fp, overrides or {})
    targets = list(layer_scheme)
    smoothed = [n for n in targets if SCHEMES[layer_scheme[n]][1] and alpha is not None and calib is not None]
    if timestep_groups > 1:
        if not smoothed:
            raise ValueError(f"timestep_groups > 1 only changes smoothing, which scheme {scheme!r} with alpha={alpha} lacks")
        if any(layer_scheme[n] != "w8a8" for n in smoothed):
            raise ValueError("timestep_groups > 1 is implemented for w8a8 only")
    batches = calibration_batches(calib, max_batch) if calib is not None else []

    t_bounds = timestep_bounds(calib, timestep_groups) if timestep_groups > 1 else None
    smooth = {}
    if smoothed:
        act = activation_absmax(qmodel, smoothed, batches, t_bounds)
        smooth = {n: smoothing_factors(act[n], qmodel.get_submodule(n).weight, alpha) for n in smoothed}

    opts = {"group_size": group_size, "cache_int8": cache_int8, "rotate": rotate, "kmeans_iters": kmeans_iters}
    new = {n: SCHEMES[layer_scheme[n]][0](qmodel.get_submodule(n), smooth.get(n), t_bounds if n in smooth else None, opts)
           for n in targets}
    router = None
    if t_bounds is not None:
        router = TimestepRouter().attach(qmodel)
        for m in new.values():
            m.router = router

    sens, sens_batches = {}, []
    if calib is not None and (sensitivity or keep_sensitive):
        sens_batches = batches if sensitivity_inputs is None else subsample_rows(batches, sensitivity_inputs, max_batch)
        sens = layer_sensitivity(qmodel, new, sens_batches, progress=progress)
    keep_measured = most_sensitive(sens, keep_sensitive)
    for n in targets:
        if n not in keep_measured:
            qmodel.set_submodule(n, new[n])
    for m in qmodel.modules():
        if hasattr(m, "calls"):
            m.calls = {k: 0 for k in m.calls}
        if getattr(m, "_w8", None) is not None:
            m._w8 = None  # sensitivity runs filled W4A8 caches; start from the packed state
    qmodel.quantization = {"scheme": scheme, "overrides": dict(overrides or {}), "alpha": alpha if smooth else None,
                           "group_size": group_size, "rotate": rotate,
                           "timestep_bounds": [] if t_bounds is None else t_bounds.tolist()}

    quantized = [n for n in targets if n not in keep_measured]
    report = {
        "scheme": scheme,
        "alpha": alpha if smooth else None,
        "rotate": rotate,
        "timestep_bounds": qmodel.quantization["timestep_bounds"],
        "quantized": quantized,
        "schemes": {n: layer_scheme[n] for n in quantized},
        "kept_fp": [n for n in linears if n not in quantized],
        "kept_by_sensitivity": keep_measured,
        "kernels": {n: kernel_label(qmodel.get_submodule(n)) for n in quantized},
        "sensitivity": sens,
        "bytes": {
            "model_fp32": weight_bytes(model),
            "model_quantized": weight_bytes(qmodel),
            "quantized_layers_fp32": sum(weight_bytes(model.get_submodule(n)) for n in quantized),
            "quantized_layers": sum(weight_bytes(qmodel.get_submodule(n)) for n in quantized),
        },
        "calibration_inputs": sum(b[0].shape[0] for b in batches),
        "sensitivity_inputs": sum(b[0].shape[0] for b in sens_batches),
        "calibration_s": round(time.perf_counter() - start, 3),
    }
    return qmodel, report


def kernel_label(module: nn.Module) -> str:
    """How a quantized layer computes, as reports should state it."""
    if isinstance(module, Int8Linear | W4A8Linear):
        dev = module.w_scale.device
        return f"{PATH_INT_MM} (int8 x int8 -> int32, {dev.type})"
    if isinstance(module, W4A16Linear):
        return "dequant-fp32 (simulated compute: 4-bit weights unpacked to float32 per forward, no int4 kernel)"
    if isinstance(module, FPLinear):
        acts = f", activations rounded through fp8 {module.act_format}" if module.act_format else ""
        return f"dequant-fp32 (simulated compute: {module.fmt} weights decoded to float32{acts}; no fp8/fp4 kernel)"
    if isinstance(module, VQLinear):
        return (f"dequant-fp32 (simulated compute: {module.bits / module.dim:g}-bit vector-quantized weights "
                f"decoded by codebook lookup to float32)")
    if isinstance(module, Int8WeightOnlyLinear):
        return "dequant-fp32 (simulated compute: int8 weights cast to float32 per forward, no int8 kernel)"
    return "float"


def kernel_calls(model: nn.Module) -> dict[str, int]:
    """How many matmuls of every quantized layer ran through each path since quantization."""
    total = {PATH_INT_MM: 0, PATH_FALLBACK: 0, "dequant_fp32": 0}
    for m in model.modules():
        for k, v in getattr(m, "calls", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def scheme_names() -> list[str]:
    return list(SCHEMES)
