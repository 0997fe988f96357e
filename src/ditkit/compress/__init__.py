"""Compression with real low-bit kernels: W8A8 integer (int8 matmul), packed 4-bit weights, files.

Schemes: "w8a8" (int8 x int8 matmul), "w4a8" (packed 4-bit weights, int8 matmul), "w4a16" and
"w8a16" (weight-only; dequantized float compute, labelled simulated), and the float formats
"fp8_e4m3", "fp8_e5m2", "fp4_e2m1" (+ "_a8": FP8 activations) — packed storage, simulated compute —
and vector quantization "vq2" / "vq3" (k-means codebooks; refine with `calibrate_vq`).

    from ditkit.compress import collect_calibration, quantize_model
    calib = collect_calibration(model, process, labels=range(10), steps=10)
    qmodel, report = quantize_model(model, "w8a8", calib=calib)   # model itself is untouched
    save_quantized("out/shapes-w8a8", qmodel, process)            # packed safetensors + config.json
    pipe = ditkit.load_pipeline("out/shapes-w8a8")                # no re-calibration

Every quantized layer states how it computes (``report["kernels"]``): a real integer kernel, or a
dequantize-then-float-matmul labelled as such.

Depth pruning (TinyFusion learned k-of-n masks, an importance baseline, distillation): see
`ditkit.compress.prune`, `ditkit.compress.distill` and ``ditkit prune``.
"""

from .calibrate import TimestepRouter, collect_calibration
from .distill import distill
from .files import save_quantized
from .fp import FPLinear
from .int8 import Int8Linear, Int8WeightOnlyLinear
from .prune import build_pruned, importance_prune, learn_prune
from .quantize import DEFAULT_KEEP_FP, SCHEMES, kernel_calls, quantize_model, weight_bytes
from .vq import VQLinear
from .vq_calibrate import calibrate_vq
from .w4 import W4A8Linear, W4A16Linear

__all__ = [
    "DEFAULT_KEEP_FP", "FPLinear", "Int8Linear", "Int8WeightOnlyLinear", "SCHEMES", "TimestepRouter", "VQLinear",
    "W4A8Linear", "W4A16Linear", "build_pruned", "calibrate_vq", "collect_calibration", "distill", "importance_prune",
    "kernel_calls", "learn_prune", "quantize_model", "save_quantized", "weight_bytes",
]
