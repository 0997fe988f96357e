"""ditkit.accel against diffusers' own cache hooks, on the same weights, seeds, labels and sampler steps.

A ditkit model folder (default: the bundled assets/shapes-dit) is loaded, and the same weights are put
into diffusers' `DiTTransformer2DModel` through ditkit's explicit key table (`ditkit.interop.diffusers_dit`).
Both networks are then sampled by the *same* sampler code (ditkit's Euler flow sampler, `ditkit.sample`,
the model's default guidance scale; one generation per run), from the same initial noise and labels:

  * ditkit:    full compute, and `ditkit.accel` methods (FORA, Δ-DiT, first-block cache, TeaCache when the
               folder holds a matching ``teacache.json``, TaylorSeer, gated Taylor, RAS, guidance reuse) at
               the settings `ditkit bench accel` uses;
  * diffusers: full compute, and diffusers' hooks enabled with ``transformer.enable_cache(...)``:
               ``FirstBlockCacheConfig`` (ParaAttention's first-block cache) and ``TaylorSeerCacheConfig``
               (Liu et al. 2025, arXiv:2503.06923) at several settings. TaylorSeer's default module patterns
               (names ending in ``attn``) match nothing in `DiTTransformer2DModel`, whose attention is ``attn1``;
               the benchmark says so and hooks ``transformer_blocks.<i>.attn1`` and ``.ff`` — the pre-gate
               attention and MLP outputs, the features the TaylorSeer paper caches for DiT — through
               ``cache_identifiers``. Its lite mode needs a ``proj_out`` module, which the DiT lacks (noted).

Per configuration: wall time per sample (sampling only; decoding a latent model's samples is the same
for every configuration and not timed), milliseconds per sampler step, speedup over its *own side's*
full compute (measured before and after the methods in this run; the faster baseline counts), and the
PSNR of its decoded images against its own side's full-compute images (capped at 100 dB). The summary
gives each side's best speedup at PSNR >= --psnr (default 30 dB) and the ratio ditkit / diffusers.

    python benchmarks/accel_vs_diffusers.py --threads 1                     # bundled model, 50 steps
    python benchmarks/accel_vs_diffusers.py --model runs/m --num-samples 64 --json accel_vs_diffusers.json

Same function on both sides. diffusers' DiT defaults differ from the reference numerics in its
timestep-frequency divisor and one LayerNorm eps (docs/reference.md §4); the twin's ``Timesteps`` shift and
LayerNorm eps are set to the model's own values, so both sides compute the model as it was trained, and
the PSNR between the two full-compute baselines is printed as a sanity line (100 dB = identical up to
float rounding). `DiTTransformer2DModel` has no 2D RoPE, no QK-norm and no Mix-FFN;
for a model that uses them (ditkit's shapes presets do), the diffusers side gets diffusers' own
``RMSNorm`` as ``attn1.norm_q``/``norm_k``, a short attention processor that applies the same rotary
tables (`RotaryAttnProcessor`), and a copy of the Mix-FFN as each block's ``.ff`` (`GridFeedForward`);
the hooks are unaffected (they wrap blocks, attention and feed-forward modules).

The measurement is `ditkit.interop.accel_vs_diffusers.compare`; the twin is
`ditkit.interop.parity.diffusers_twin`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ditkit.interop.accel_vs_diffusers import Setting, compare, markdown


def main(argv: list[str] | None = None) -> int:
    from ditkit.assets import default_model_dir
    from ditkit.cli_types import positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="ditkit model folder (default: the bundled assets/shapes-dit)")
    p.add_argument("--num-samples", type=positive_int, default=Setting.num_samples, help="samples, classes balanced")
    p.add_argument("--steps", type=positive_int, default=Setting.steps, help="Euler steps")
    p.add_argument("--cfg-scale", type=float, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, help="samples per generation (default: all at once)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed runs per configuration (fastest counts)")
    p.add_argument("--psnr", type=float, default=Setting.psnr, help="quality bar of the summary, dB")
    p.add_argument("--methods", help="ditkit methods to run, comma-separated substrings (default: all of "
                                     "ditkit bench accel's)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", help="also write the full result to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = Setting(steps=args.steps, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                      cfg_scale=args.cfg_scale, repeats=args.repeats, psnr=args.psnr, device=args.device,
                      methods=args.methods)
    try:
        result = compare(args.model or default_model_dir(), setting, say=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as e:  # CheckpointError included: one line, exit status 2
        print(f"accel_vs_diffusers: error: {e}", file=sys.stderr)
        return 2
    result["command"] = "python benchmarks/accel_vs_diffusers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(markdown(result))
    if args.json:
        from ditkit.io.checkpoint import save_json

        save_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
