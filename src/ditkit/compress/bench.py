"""Micro-benchmarks of the quantized layers against float32, at DiT-B/2 shapes.

    python -m ditkit.compress.bench --threads 1            # Linear layers: fp32 vs Int8Linear
    python -m ditkit.compress.bench --threads 1 --forward  # plus one whole DiT-B/2 forward

DiT-B/2 at 256x256 (32x32 latents) has T = 256 tokens and D = 768, so its Linear layers are
(M = batch * 256) x K @ K x N with (K, N) in {(768, 2304) qkv, (768, 768) proj, (768, 3072) fc1,
(3072, 768) fc2}. Timings interleave the variants and take medians, so background load hits
them alike; ratios are fp32 time / variant time (> 1 = faster than fp32).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

DIT_B2_LINEARS = {"qkv": (768, 2304), "proj": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}


def time_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def parse_variant(name: str) -> tuple[str, dict]:
    """"w4a8-cached-rot64" -> ("w4a8", {"cache_int8": True, "rotate": 64}): a scheme plus bench suffixes."""
    base, *suffixes = name.split("-")
    opts = {"cache_int8": "cached" in suffixes, "rotate": 0}
    for x in suffixes:
        if x.startswith("rot"):
            opts["rotate"] = int(x[3:])
        elif x != "cached":
            raise ValueError(f"unknown benchmark suffix {x!r} in {name!r} (use -cached, -rot<b>)")
    return base, opts


def bench_linears(batch: int = 2, tokens: int = 256, schemes: tuple[str, ...] = ("w8a8",), repeats: int = 7,
                  shapes: Mapping[str, tuple[int, int]] = DIT_B2_LINEARS, group_size: int | None = None) -> list[dict]:
    """One row per layer shape: fp32 ms and, per scheme, ms, speed-up over fp32 and weight bytes."""
    from .quantize import SCHEMES

    rows = []
    m = batch * tokens
    for name, (k, n) in shapes.items():
        torch.manual_seed(0)
        lin = nn.Linear(k, n)
        x = torch.randn(m, k)
        mods = {"fp32": lin}
        for s in schemes:  # suffixes: "-cached" (W4A8 keeps its unpacked int8 weight), "-rot256" (Hadamard)
            base, opts = parse_variant(s)
            mods[s] = SCHEMES[base][0](lin, None, None, {"group_size": group_size, **opts})
        fns = {s: (lambda mod=mod, x=x: mod(x)) for s, mod in mods.items()}
        with torch.inference_mode():
            t = time_interleaved(fns, repeats)
        row = {"layer": name, "M": m, "K": k, "N": n, "fp32_ms": 1e3 * t["fp32"], "fp32_bytes": 4 * (k * n + n)}
        for s in schemes:
            row[f"{s}_ms"] = 1e3 * t[s]
            row[f"{s}_bytes"] = mods[s].weight_bytes()
            row[f"{s}_speedup"] = t["fp32"] / t[s]
        rows.append(row)
    return rows


def bench_forward(preset: str = "DiT-B/2", batch: int = 2, scheme: str = "w8a8", repeats: int = 3) -> dict:
    """Whole-model forward time, fp32 vs ``quantize_model(model, scheme)`` (default keep_fp)."""
    from ..config import get_preset
    from ..models.dit import DiT
    from .quantize import quantize_model, resident_bytes

    torch.manual_seed(0)
    model = DiT(get_preset(preset)).eval()
    for p in model.parameters():  # non-zero adaLN / final layer, as a trained model has
        nn.init.normal_(p, std=0.02)
    base, opts = parse_variant(scheme)
    qmodel, report = quantize_model(model, base, **opts)
    cfg = model.config
    x = torch.randn(batch, cfg.in_channels, *cfg.hw)
    t = torch.full((batch,), 500.0)
    y = torch.zeros(batch, dtype=torch.long)
    with torch.inference_mode():
        tm = time_interleaved({"fp32": lambda: model(x, t, y), scheme: lambda: qmodel(x, t, y)}, repeats)
    return {"preset": preset, "batch": batch, "tokens": cfg.num_tokens, "fp32_ms": 1e3 * tm["fp32"],
            f"{scheme}_ms": 1e3 * tm[scheme], "speedup": tm["fp32"] / tm[scheme],
            "weight_bytes_fp32": report["bytes"]["model_fp32"], "weight_bytes_quantized": report["bytes"]["model_quantized"],
            "resident_bytes_quantized": resident_bytes(qmodel)}  # after the timed calls: caches filled


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--schemes", default="w8a8",
                    help="comma-separated schemes to time, e.g. w8a8,w8a8-rot256,w4a8,w4a8-cached,w4a16")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--forward", action="store_true", help="also time one whole DiT-B/2 forward (slower)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    schemes = tuple(s for s in args.schemes.split(",") if s)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    total = {"fp32": 0.0, **{s: 0.0 for s in schemes}}
    for r in bench_linears(args.batch, schemes=schemes, repeats=args.repeats):
        cols = "  ".join(f"{s} {r[f'{s}_ms']:6.2f} ms ({r[f'{s}_speedup']:.2f}x, "
                         f"{r['fp32_bytes'] / r[f'{s}_bytes']:.1f}x smaller)" for s in schemes)
        print(f"{r['layer']:5s} M={r['M']} K={r['K']:4d} N={r['N']:4d}  fp32 {r['fp32_ms']:7.2f} ms  {cols}")
        total["fp32"] += r["fp32_ms"]
        for s in schemes:
            total[s] += r[f"{s}_ms"]
    print("block linears: " + "  ".join(f"{s} {total['fp32'] / total[s]:.2f}x" for s in schemes))
    if args.forward:
        for s in schemes:
            f = bench_forward(batch=args.batch, scheme=s, repeats=max(2, args.repeats // 3))
            print(f"DiT-B/2 forward, batch {f['batch']} x {f['tokens']} tokens: fp32 {f['fp32_ms']:.1f} ms, "
                  f"{s} {f[f'{s}_ms']:.1f} ms -> {f['speedup']:.2f}x  "
                  f"(weights {f['weight_bytes_fp32'] / 2**20:.1f} -> {f['weight_bytes_quantized'] / 2**20:.1f} MiB, "
                  f"resident {f['resident_bytes_quantized'] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
