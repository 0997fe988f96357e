"""Forward-pass benchmark: ditkit `DiT` against diffusers' `DiTTransformer2DModel`.

Both models get the same configuration, the same weights (ditkit's, copied into diffusers through
the library's explicit key table, `ditkit.interop.diffusers_dit`, docs/reference.md §4) and the same input;
the timings of the two are
interleaved repetition by repetition so that both see the same machine load, and the ratio
(diffusers time / ditkit time, > 1 means ditkit is faster) is taken from medians of one run.

    python benchmarks/forward.py                                  # shapes-small-ref and DiT-B/2, batch 2
    python benchmarks/forward.py --presets DiT-B/2 --batch 8 --threads 2 --json bench.json

On a machine shared with other work, `--threads 1` gives far steadier figures: with every core
requested, OpenMP threads wait on the busy ones and single forwards vary several-fold.

The two outputs are not bit-identical; diffusers differs from the reference DiT in two documented
numerics details (docs/reference.md §4):
  1. timestep frequencies exp(-ln(1e4) i / 127) instead of / 128 (vanishes at t = 0, grows with t);
  2. the pre-MLP LayerNorm (`norm3`) eps: the export carries ditkit's 1e-6 over through diffusers'
     `norm_eps` (the conversion script leaves diffusers' default 1e-5), so this one is exact here.
The benchmark therefore exports with `allow_numerics_change=True`; the max |difference| is printed as
a sanity line, at the benchmark's t and at t = 0 (where the divisor does not matter).

diffusers keeps a copy of the t/y embedders in every block (`transformer_blocks.{i}.norm1.emb`) and
recomputes the conditioning in every block; the parameter counts printed show the duplication.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from ditkit.config import DiTConfig, get_preset
from ditkit.interop.diffusers_dit import diffusers_config as interop_config
from ditkit.interop.parity import build_diffusers, embedder_parameters, randomize_zero_init
from ditkit.models.dit import DiT, macs_per_forward

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Benchmark-only configs, looked up before ditkit's presets. ditkit's `shapes-small` model preset
# uses RoPE + QK-norm (no diffusers equivalent), so the small case pins the reference-architecture
# shape: 32x32x3, patch 4, D=256, depth 8, 4 heads, 10 classes, no learned sigma.
BENCH_PRESETS = {
    "shapes-small-ref": DiTConfig(
        input_size=32, patch_size=4, in_channels=3, hidden_size=256, depth=8, num_heads=4,
        num_classes=10, learn_sigma=False,
    ),
}
DEFAULT_PRESETS = ("shapes-small-ref", "DiT-B/2")


def bench_config(name: str) -> DiTConfig:
    return BENCH_PRESETS[name] if name in BENCH_PRESETS else get_preset(name)


# ----------------------------------------------------------------------------- configs


def diffusers_config(cfg: DiTConfig, **overrides) -> dict:
    """DiTTransformer2DModel kwargs for a reference-architecture ditkit config (ValueError if none exists).

    diffusers' numerics are accepted on purpose: the benchmark measures diffusers as it computes."""
    return {**interop_config(cfg, allow_numerics_change=True), **overrides}


# ----------------------------------------------------------------------------- timing


def _time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3  # ms


def bench_preset(name: str, batch: int, repeats: int, warmup: int, dtype: torch.dtype, seed: int = 0) -> dict:
    cfg = bench_config(name)
    torch.manual_seed(seed)
    model = randomize_zero_init(DiT(cfg), seed).to(dtype).eval()
    dmodel = build_diffusers(model)

    g = torch.Generator().manual_seed(seed + 1)
    h, w = cfg.hw
    x = torch.randn(batch, cfg.in_channels, h, w, generator=g).to(dtype)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)

    def run_ditkit(t=t):
        return model(x, t, y)

    def run_diffusers(t=t):
        return dmodel(x, timestep=t, class_labels=y, return_dict=False)[0]

    with torch.inference_mode():
        out_ditkit, out_diffusers = run_ditkit().float(), run_diffusers().float()
        max_diff = (out_ditkit - out_diffusers).abs().max().item()
        t0 = torch.zeros_like(t)
        max_diff_t0 = (run_ditkit(t0).float() - run_diffusers(t0).float()).abs().max().item()
        out_scale = out_ditkit.abs().max().item()

        for _ in range(warmup):
            run_ditkit()
            run_diffusers()
        times_ditkit, times_diffusers = [], []
        for r in range(repeats):  # interleaved, alternating which goes first
            if r % 2 == 0:
                times_ditkit.append(_time_once(run_ditkit))
                times_diffusers.append(_time_once(run_diffusers))
            else:
                times_diffusers.append(_time_once(run_diffusers))
                times_ditkit.append(_time_once(run_ditkit))

    ms_ditkit, ms_diffusers = statistics.median(times_ditkit), statistics.median(times_diffusers)
    n_ditkit = model.num_parameters()
    n_diffusers = sum(p.numel() for p in dmodel.parameters())
    return {
        "preset": name,
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "ms_ditkit": ms_ditkit,
        "ms_diffusers": ms_diffusers,
        "ratio": ms_diffusers / ms_ditkit,
        "paired_ratio_median": statistics.median(df / dk for dk, df in zip(times_ditkit, times_diffusers)),
        "gmacs_per_forward": macs_per_forward(cfg, batch) / 1e9,
        "params_ditkit": n_ditkit,
        "params_diffusers": n_diffusers,
        "params_duplicated_embedders": (cfg.depth - 1) * embedder_parameters(model),
        "max_abs_diff": max_diff,
        "max_abs_diff_t0": max_diff_t0,
        "max_abs_output": out_scale,
        "times_ditkit_ms": times_ditkit,
        "times_diffusers_ms": times_diffusers,
    }


def format_line(r: dict) -> str:
    return (
        f"{r['preset']:<16} batch {r['batch']}: ditkit {r['ms_ditkit']:8.1f} ms | diffusers {r['ms_diffusers']:8.1f} ms"
        f" | ratio {r['ratio']:.2f}x (paired {r['paired_ratio_median']:.2f}x)"
        f" | params ditkit {r['params_ditkit']:,} diffusers {r['params_diffusers']:,}"
        f" (+{r['params_duplicated_embedders']:,} = embedders copied into every block)"
    )


def markdown_table(results: list[dict]) -> str:
    rows = [
        "| preset | batch | dtype | threads | GMAC/fwd | ditkit ms | diffusers ms | ratio (diffusers/ditkit) "
        "| params ditkit | params diffusers | max abs diff: bench t (t=0) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['preset']} | {r['batch']} | {r['dtype']} | {r['threads']} | {r['gmacs_per_forward']:.1f} "
            f"| {r['ms_ditkit']:.1f} | {r['ms_diffusers']:.1f} | {r['ratio']:.2f}x "
            f"| {r['params_ditkit']:,} | {r['params_diffusers']:,} "
            f"| {r['max_abs_diff']:.2e} ({r['max_abs_diff_t0']:.1e}) |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS),
                    help=f"{', '.join(BENCH_PRESETS)} or a ditkit preset with the reference architecture")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="timed forwards per implementation (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards per implementation")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the results (with every timing) as JSON")
    args = ap.parse_args(argv)

    try:
        import diffusers
    except ImportError:
        print("diffusers is not installed; install the benchmark extras: pip install ditkit[bench]")
        return 2
    diffusers.utils.logging.set_verbosity_error()  # silence its dtype-cast advice for the --dtype cast
    for name in args.presets:  # fail on a typo or an unmappable architecture before any model is built
        try:
            diffusers_config(bench_config(name))
        except ValueError as e:
            ap.error(f"preset {name}: {e}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
        f"dtype {args.dtype}, batch {args.batch}, warmup {args.warmup}, repeats {args.repeats} (interleaved)"
    )
    results = []
    for name in args.presets:
        r = bench_preset(name, args.batch, args.repeats, args.warmup, DTYPES[args.dtype], args.seed)
        results.append(r)
        print(format_line(r))
        print(
            f"{'':<16} sanity: max|ditkit - diffusers| = {r['max_abs_diff']:.3e} at the benchmark's t, "
            f"{r['max_abs_diff_t0']:.3e} at t=0 (max|output| {r['max_abs_output']:.3f}; "
            "diffusers' t-frequency divisor differs, docs/reference.md §4)"
        )
        sys.stdout.flush()
    print()
    print(markdown_table(results))
    if args.json:
        meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
