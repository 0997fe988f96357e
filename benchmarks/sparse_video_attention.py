"""Sparse video attention on a trained video model: attention FLOPs saved, PSNR against dense
attention on identical seeds, and the wall-clock ratio — all measured in one run.

    python benchmarks/sparse_video_attention.py --model assets/shapes-t2v --clips 8 --steps 25 \\
        --json docs/results/video/sparse-attention-shapes-t2v.json

Plans compared (`ditkit.models.video_attention`, `ditkit.accel.sparse_search`):

* fixed patterns on every head of every layer: STA 3D sliding tiles (STA, Zhang et al. 2025) with a
  3-frame window, a token diagonal of two frames' width, and the multi-diagonal (same place in every
  frame) band (Sparse-vDiT, Chen et al. 2025);
* searched plans: one pattern per (layer, head) picked offline from dense calibration inputs at
  three noise levels (Sparse-vDiT §4), at several error tolerances;
* far-field caching (`ditkit.accel.far_cache`): a local pattern every step, merged with the far
  part (the keys it leaves out) computed on refresh steps only — dense while the process time
  s > ``--dense-above``, then a refresh every ``--refresh-every`` steps.

FLOPs are those of the full-attention layers, counted as a block-sparse kernel computes them
(``--block-size`` blocks), over the whole sampling run (a far-cached refresh step computes the
local and the far blocks). PSNR compares the decoded clips with the dense model's clips from the
same prompts and noise (all frames). Wall clock: the whole sampling loop, sparse against dense,
interleaved in the same process; ``--backend flex`` runs FlexAttention (``--compile`` compiles it
to a block-sparse CPU kernel; eager flex materialises the scores and is slower than dense SDPA);
``--backend dense`` applies the same mask to SDPA (a correctness reference, never faster).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from ditkit.accel.far_cache import FarCachedAttention, RefreshSchedule
from ditkit.accel.sparse_search import SearchConfig, search_plan
from ditkit.eval.metrics import psnr
from ditkit.io.checkpoint import CheckpointError, save_json
from ditkit.models.text_video import null_labels
from ditkit.models.video_attention import Pattern, SparsePlan, VideoAttention, attention_flops
from ditkit.pipelines import load_video_pipeline
from ditkit.shapes.moving import MovingShapesDataset


def plan_flops(plan: SparsePlan, grid, heads: int, head_dim: int, layers: list[int], block: int,
               complement: bool = False) -> float:
    """Fraction of the full-attention layers' attention FLOPs the plan keeps (block-sparse counting);
    ``complement``: of the pairs it leaves out (0 on layers it does not name)."""
    kept = dense = 0.0
    for layer in layers:  # a layer the plan does not name is full: its complement is empty
        pats = plan.layers.get(layer) or [Pattern()] * heads
        f = attention_flops(pats, grid, head_dim, block, plan.tile, complement)
        kept, dense = kept + f["block"], dense + f["dense"]
    return kept / dense


def uniform(pattern: Pattern, layers: list[int], heads: int, tile=None) -> SparsePlan:
    return SparsePlan({i: [pattern] * heads for i in layers}, tile)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="assets/shapes-t2v")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--tolerances", default="0.05,0.1,0.2")
    ap.add_argument("--dense-above", type=float, default=0.9, help="far cache: dense while process time s > this")
    ap.add_argument("--refresh-every", type=int, default=3, help="far cache: then a refresh every N steps")
    ap.add_argument("--backend", choices=["flex", "dense"], default="flex")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--plans", help="comma-separated substrings: run only the plans whose name holds one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.clips <= 0 or args.steps <= 0 or args.block_size <= 0:
        print("error: --clips, --steps and --block-size must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        pipe = load_video_pipeline(args.model)
        tolerances = [float(v) for v in args.tolerances.split(",") if v.strip()]
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, cfg = pipe.model, pipe.config
    dit = cfg.dit
    grid = (cfg.latent_frames, dit.hw[0] // dit.patch_size, dit.hw[1] // dit.patch_size)
    heads, head_dim = dit.num_heads, dit.hidden_size // dit.num_heads
    layers = [i for i, a in enumerate(cfg.block_axes()) if a == "all"]
    data = MovingShapesDataset(args.clips, seed=4000, frames=cfg.num_frames, image_size=pipe.frame_shape[1],
                               caption_style=pipe.caption_style)
    prompts = [data.caption(i) for i in range(args.clips)]
    opts = dict(steps=args.steps, seed=args.seed, batch_size=args.clips, latents=True)

    def run(core) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        z = pipe.generate(prompts, attention=core, **opts)
        seconds = time.perf_counter() - t0
        return z, seconds

    print(f"grid {grid} ({grid[0] * grid[1] * grid[2]} tokens), {len(layers)} full-attention layers x {heads} heads, "
          f"{args.clips} clips x {args.steps} steps, backend {args.backend}{' compiled' if args.compile else ''}")
    dense_z, _ = run(None)  # warm-up
    dense_px = pipe.decode(dense_z)

    # calibration for the search: dense samples re-noised at three levels, with their prompts
    text, _ = pipe.encode_prompts(prompts)
    null = null_labels(model, args.clips, "cpu")
    g = torch.Generator().manual_seed(123)
    calibration = []
    for s in (0.8, 0.5, 0.2):
        x = (1 - s) * dense_z + s * torch.randn(dense_z.shape, generator=g)
        t = pipe.process.network_time(torch.full((args.clips,), s))
        calibration.append((x, t, {"y": null, **text}))

    th, tw = (4 if grid[1] % 4 == 0 else grid[1]), (4 if grid[2] % 4 == 0 else grid[2])
    ft = grid[1] * grid[2]
    plans = {
        "sta 3x3x3 tiles 1x4x4": uniform(Pattern("sta", tile=(1, th, tw), window=(3, 3, 3)), layers, heads, (1, th, tw)),
        "diagonal +-2 frames": uniform(Pattern("diagonal", 2 * ft), layers, heads),
        "diagonal +-1 frame": uniform(Pattern("diagonal", ft), layers, heads),
        "multi-diagonal +-row": uniform(Pattern("multi_diagonal", grid[2]), layers, heads),
    }
    for tol in tolerances:
        plan, _ = search_plan(model, calibration, config=SearchConfig(tolerance=tol, block_size=args.block_size))
        plans[f"searched tol {tol}"] = plan
    schedule = RefreshSchedule(args.dense_above, args.refresh_every)
    cached = {"frame-local": uniform(Pattern("sta", tile=(1, grid[1], grid[2]), window=(1, 1, 1)), layers, heads),
              "sta 3x3x3 tiles 1x4x4": plans["sta 3x3x3 tiles 1x4x4"]}
    for name, plan in cached.items():
        plans[f"{name} + far cache (dense s>{schedule.dense_above:g}, refresh every {schedule.every})"] = plan

    if args.plans:
        wanted = [w.strip() for w in args.plans.split(",") if w.strip()]
        plans = {k: v for k, v in plans.items() if any(w in k for w in wanted)}
        if not plans:
            print(f"error: no plan matches --plans {args.plans!r}", file=sys.stderr)
            return 2
    rows = []
    for name, plan in plans.items():
        far = "far cache" in name
        kind = FarCachedAttention if far else VideoAttention
        extra = {"schedule": schedule} if far else {}
        core = kind(plan, backend=args.backend, compile=args.compile, block_size=args.block_size, **extra)
        run(core)  # warm-up (mask building, compilation)
        d_times, s_times = [], []
        for _ in range(2):  # interleaved, same machine load
            _, d = run(None)
            z, s = run(core)
            d_times.append(d)
            s_times.append(s)
        kept = plan_flops(plan, grid, heads, head_dim, layers, args.block_size)
        if far:  # refresh calls compute the local and the far blocks, the others the local ones
            refresh, local = core.calls["refresh"], core.calls["local"]
            far_part = plan_flops(plan, grid, heads, head_dim, layers, args.block_size, complement=True)
            kept = (refresh * (kept + far_part) + local * kept) / (refresh + local)
        quality = psnr(pipe.decode(z).flatten(0, 1), dense_px.flatten(0, 1)).clamp(max=99.0)  # (N*F,)
        row = {"plan": name, "attention_flops_saved": round(1 - kept, 4), "psnr_db": round(quality.mean().item(), 2),
               "psnr_db_worst_frame": round(quality.min().item(), 2),
               "wall_clock_ratio": round(min(d_times) / min(s_times), 3),
               "dense_seconds": round(min(d_times), 2), "sparse_seconds": round(min(s_times), 2)}
        if far:
            row.update(refresh_calls=core.calls["refresh"], local_calls=core.calls["local"])
        rows.append(row)
        print(f"{name:28s} attention FLOPs saved {row['attention_flops_saved']:6.1%}  PSNR {row['psnr_db']:6.2f} dB "
              f"(worst frame {row['psnr_db_worst_frame']:.1f})  speed {row['wall_clock_ratio']:.2f}x")
    if args.json:
        given = sys.argv[1:] if argv is None else argv
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json(args.json, {"model": str(args.model), "grid": list(grid), "clips": args.clips, "steps": args.steps,
                              "command": shlex.join(["python", "benchmarks/sparse_video_attention.py", *given]),
                              "backend": args.backend, "compile": args.compile, "block_size": args.block_size,
                              "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
