"""``ditkit bench compress``: compressed model folders against their float model, on identical seeds.

    ditkit quantize --scheme w8a8 --out out/w8a8                 # make the variants first
    ditkit prune --keep 4 --finetune-minutes 20 --out out/d4
    ditkit bench compress --variants out/w8a8,out/d4 --cache "TaylorSeer N=3 m=1" --num-samples 2000

Every variant is a model folder written by ``ditkit quantize`` or ``ditkit prune`` (any ditkit
folder whose model takes the same inputs and classes). The float model is sampled first; then each
variant with the same labels and initial noise (`ditkit.accel.bench.Bench`, so the quality columns
are computed exactly as for acceleration). Per row:

* bytes of ``model.safetensors`` on disk and the weights' bytes in memory (``weight_bytes``), and
  the resident bytes after sampling (W4A8 may keep an unpacked int8 copy when asked to);
* the sampling wall time as a speed ratio to the float model (the same steps, so this is the
  per-step ratio), measured in this process, the float model timed before and after;
* the network forward alone as a speed ratio (``forward_speedup``): one guided step's batch
  (2 x ``batch_size`` inputs) through the float model and the variant, interleaved, median of
  ``FORWARD_REPEATS`` each — what a depth-pruned model saves, without the sampler and decoder;
* PSNR/SSIM against the float model's samples, class accuracy, per-sample class agreement, FD;
* the compute path of the quantized layers (int8 matmul, dequantize-then-float, ...), so a
  simulated format is never reported as a kernel gain.

``cache`` adds, for the float model and every variant, a row with that acceleration method on top
(e.g. W8A8 + TaylorSeer), which is the measured form of the compression x caching contract.

``full_store`` (``--full-samples FILE``, with ``--timing-samples``) lets benchmarks of different
variants run side by side in separate processes on one untimed full-compute pass: the first
writes the float model's samples there, the others load them (`ditkit.accel.full_store`); every
process still times the float model itself.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..accel.bench import COLUMNS as ACCEL_COLUMNS
from ..accel.bench import SCALE as ACCEL_SCALE
from ..accel.bench import Bench, BenchResult, BenchSetting, Method, bench_steps, markdown_table
from ..io.progress import RunBar
from .files import quantized_layers
from .quantize import kernel_calls, kernel_label, resident_bytes, weight_bytes

Pipeline = Any  # a ditkit.pipelines.Pipeline (compress reads folders through ditkit.pipelines.folder only)


@dataclass
class Variant:
    """A model to compare with the float one: its label, its pipeline and the folder it came from."""

    label: str
    pipe: Pipeline
    folder: Path | None = None


def disk_bytes(folder: Path | None) -> int | None:
    """Bytes of the folder's ``model.safetensors`` (the DiT weights; the autoencoder is left out)."""
    if folder is None:
        return None
    path = folder if folder.suffix == ".safetensors" else folder / "model.safetensors"
    return path.stat().st_size if path.is_file() else None


def describe_compression(info: dict) -> str:
    """One line saying what was done to a model folder (from its config.json)."""
    if info.get("kind") == "ditkit-dit-quantized":
        q = info.get("quantization", {})
        kinds = sorted({spec.get("type", "?") for spec in q.get("layers", {}).values()})
        return f"quantized {q.get('scheme', '?')} (layers: {', '.join(kinds)})"
    if "pruning" in info:
        p = info["pruning"]
        return f"pruned {p.get('method', '?')}: {len(p.get('kept', []))} of {p.get('depth', '?')} blocks"
    return f"float ({info.get('weights_dtype', 'float32')})"


def compute_paths(model: torch.nn.Module) -> list[str]:
    """How the model's quantized layers compute (`kernel_label`, distinct), or ['float']."""
    return sorted({kernel_label(m) for m in quantized_layers(model).values()}) or ["float"]


def _size_columns(pipe: Pipeline, folder: Path | None, float_bytes: int) -> dict:
    paths = compute_paths(pipe.model)
    nbytes = weight_bytes(pipe.model)
    return {"disk_bytes": disk_bytes(folder), "weight_bytes": nbytes, "size_ratio": float_bytes / nbytes,
            "compression": describe_compression(pipe.info),
            "compute_paths": paths, "compute": " + ".join(sorted({p.split(" (")[0] for p in paths}))}


FORWARD_REPEATS = 7


@torch.inference_mode()
def forward_speedup(reference: torch.nn.Module, variant: torch.nn.Module, batch: int, repeats: int = FORWARD_REPEATS,
                    seed: int = 0) -> float:
    """Median forward time of ``reference`` over ``variant`` on the same (x, t, y), interleaved run by run."""
    cfg = reference.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, cfg.in_channels, *cfg.hw), generator=g)  # (B, C, H, W)
    t = torch.rand(batch, generator=g) * 1000  # network time
    kwargs = {"y": torch.randint(cfg.num_classes, (batch,), generator=g)} if cfg.num_classes else {}
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (reference.eval(), variant.eval())
    for m in models:  # warm-up
        m(x, t, **kwargs)
    for _ in range(repeats):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m(x, t, **kwargs)
            times[i].append(time.perf_counter() - t0)
    return statistics.median(times[0]) / statistics.median(times[1])


def check_variant(reference: Pipeline, variant: Variant) -> None:
    """ValueError unless the variant samples the same thing as the reference (inputs, classes, images)."""
    a, b = reference.config, variant.pipe.config
    if (a.in_channels, a.hw, a.num_classes) != (b.in_channels, b.hw, b.num_classes):
        raise ValueError(f"{variant.label}: its model takes {b.in_channels}x{b.hw} inputs with {b.num_classes} "
                         f"classes, the float model {a.in_channels}x{a.hw} with {a.num_classes}")
    if reference.image_shape != variant.pipe.image_shape:
        raise ValueError(f"{variant.label}: its images are {variant.pipe.image_shape}, the float model's "
                         f"{reference.image_shape}")


def run_compress_bench(reference: Pipeline, variants: list[Variant], *, setting: BenchSetting | None = None,
                       reference_folder: Path | None = None, cache: Method | None = None, classifier=None,
                       reference_images: torch.Tensor | None = None, progress=None,
                       full_store: str | Path | None = None, bar: bool | None = None) -> BenchResult:
    """The float model, then every variant (and with ``cache``, each also accelerated) on identical seeds.

    ``bar``: a progress bar on stderr over every sampler step of the run (`bench_steps`; None: only on a terminal)."""
    setting = setting or BenchSetting()
    for v in variants:
        check_variant(reference, v)
    measurements = len(variants) + (len(variants) + 1 if cache is not None else 0)
    with RunBar(bench_steps(setting, setting.num_samples, measurements), "bench", bar) as run_bar:
        return _run(reference, variants, setting, reference_folder, cache, classifier, reference_images,
                    run_bar.above(progress or (lambda _line: None)), full_store, run_bar)


def _run(reference, variants, setting, reference_folder, cache, classifier, reference_images, say, full_store,
         bar) -> BenchResult:
    bench = Bench(reference.model, process=reference.process, setting=setting, classifier=classifier,
                  reference_images=reference_images, decode=reference.decode, full_store=full_store, bar=bar)
    float_bytes = weight_bytes(reference.model)
    base_sizes = _size_columns(reference, reference_folder, float_bytes)
    bench.base_row.update(base_sizes, method="float32", family="float32", resident_bytes=resident_bytes(reference.model))
    runs = [("float32", reference, base_sizes)] if cache is not None else []
    for v in variants:
        sizes = _size_columns(v.pipe, v.folder, float_bytes)
        row = bench.measure(Method(v.label, group="compressed"), model=v.pipe.model, extra=sizes)
        row["resident_bytes"] = resident_bytes(v.pipe.model)  # after sampling: runtime caches included
        row["kernel_calls"] = kernel_calls(v.pipe.model)  # int8 matmuls that really ran the kernel vs fell back
        row["forward_speedup"] = forward_speedup(reference.model, v.pipe.model, 2 * setting.batch_size)
        # seconds, not a speedup: the table divides by the full model timed again at the end (accel.bench)
        say(f"{v.label}: {row['seconds']:.2f} s ({row['forward_speedup']:.2f}x forward), "
            f"{row['size_ratio']:.2f}x smaller, PSNR {row['psnr']:.1f} dB"
            + (f", accuracy {100 * row['accuracy']:.1f}%" if 'accuracy' in row else ""))
        runs.append((v.label, v.pipe, sizes))
    if cache is not None:
        for label, pipe, sizes in runs:
            row = bench.measure(Method(f"{label} + {cache.label}", cache.configs, cache.cfg_every,
                                       group="compressed + cache"), model=pipe.model, extra=sizes)
            if row is not None:
                say(f"{row['method']}: {row['seconds']:.2f} s, PSNR {row['psnr']:.1f} dB")
    return bench.finish()


COLUMNS = [  # key, header, format (bytes shown in MiB, fractions in %)
    ("method", "model", "{}"), ("disk_bytes", "disk MiB", "{:.2f}"), ("weight_bytes", "weights MiB", "{:.2f}"),
    ("size_ratio", "smaller", "{:.2f}x"), ("speedup", "speed", "{:.2f}x"), ("forward_speedup", "forward", "{:.2f}x"),
    ("macs_speedup", "MACs ratio", "{:.2f}x"),
    *[c for c in ACCEL_COLUMNS if c[0] in ("psnr", "ssim", "accuracy", "agreement", "fd", "seconds")],
    ("compute", "compute", "{}"),
]
SCALE = {**ACCEL_SCALE, "disk_bytes": 1.0 / 2**20, "weight_bytes": 1.0 / 2**20}


def compress_table(result: BenchResult) -> str:
    return markdown_table(result, COLUMNS, SCALE)


def plot_compress(result: BenchResult, path) -> bool:
    """Weight bytes versus PSNR (marker size: speed); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in result.rows:
        if not row.get("weight_bytes"):
            continue
        ax.scatter(row["weight_bytes"] / 2**20, row["psnr"], s=40 * row["speedup"])
        ax.annotate(row["method"], (row["weight_bytes"] / 2**20, row["psnr"]), fontsize=7)
    ax.set_xlabel("weights (MiB)")
    ax.set_ylabel("PSNR vs float32 (dB, capped at 100)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
