"""Compression with real low-bit kernels: W8A8 integer (int8 matmul), packed 4-bit weights, files.

    from ditkit.compress import collect_calibration, quantize_model
    calib = collect_calibration(model, process, labels=range(10), steps=10)
    qmodel, report = quantize_model(model, "w8a8", calib=calib)   # model itself is untouched

Every quantized layer states how it computes (``report["kernels"]``): a real integer kernel, or a
dequantize-then-float-matmul labelled as such.
"""

from .calibrate import TimestepRouter, collect_calibration
from .int8 import Int8Linear
from .quantize import DEFAULT_KEEP_FP, SCHEMES, kernel_calls, quantize_model, weight_bytes
from .w4 import W4A8Linear, W4A16Linear

__all__ = [
    "DEFAULT_KEEP_FP", "Int8Linear", "SCHEMES", "TimestepRouter", "collect_calibration", "kernel_calls",
    "quantize_model", "W4A8Linear", "W4A16Linear", "weight_bytes",
]
