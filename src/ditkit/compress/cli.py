"""Command line of ditkit.compress: ``ditkit quantize``, ``ditkit prune``.

``register(subparsers)`` adds the command to ditkit's argparse subparsers (``ditkit.cli`` wires
it); the command sets ``func(args)`` and raises ``ValueError`` for user errors (one line, exit 2).

    ditkit quantize --scheme w8a8 --out out/shapes-w8a8                  # calibrate, quantize, save
    ditkit quantize --scheme w4a8 --override adaLN_modulation=w8a16 --override final_layer=w8a16 \\
                    --keep-sensitive 2 --out out/shapes-w4a8 --report out/w4a8.json
    ditkit prune --keep 4 --method learned --group 2 --search-steps 200 --finetune-minutes 20 --out out/shapes-d4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli_types import positive_int as _positive_int


def _override(s: str) -> tuple[str, str]:
    pattern, sep, scheme = s.partition("=")
    if not sep or not pattern or not scheme:
        raise argparse.ArgumentTypeError(f"expected PATTERN=SCHEME, e.g. adaLN_modulation=w8a16, got {s!r}")
    return pattern, scheme


def cmd_quantize(args) -> None:
    import torch

    from ..assets import default_model_dir
    from ..pipeline import load_pipeline, source_autoencoder
    from .calibrate import collect_calibration
    from .files import save_quantized
    from .quantize import quantize_model

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model or default_model_dir())
    cfg = pipe.config
    calib = None
    if args.calib_samples > 0:
        labels = torch.arange(args.calib_samples) % max(cfg.num_classes, 1)
        d = pipe.defaults
        calib = collect_calibration(pipe.model, pipe.process, labels, steps=args.calib_steps or d.steps,
                                    sampler=d.sampler, cfg_scale=d.cfg_scale, seed=args.seed)
    keep_fp = tuple(p for p in args.keep_fp.split(",") if p) if args.keep_fp is not None else None
    kwargs = {} if keep_fp is None else {"keep_fp": keep_fp}
    qmodel, report = quantize_model(
        pipe.model, args.scheme, calib, alpha=None if args.no_smooth else args.alpha, overrides=dict(args.override),
        keep_sensitive=args.keep_sensitive, sensitivity=calib is not None, timestep_groups=args.timestep_groups,
        group_size=args.group_size, rotate=args.rotate, **kwargs)
    if args.vq_steps and any(v.startswith("vq") for v in report["schemes"].values()):
        from .vq_calibrate import calibrate_vq

        vq = calibrate_vq(pipe.model, qmodel, samples=args.vq_samples, steps=args.vq_steps, seed=args.seed)
        report["vq_calibration"] = vq
        losses = [(b["loss_before"], b["loss_after"]) for b in vq["blocks"]]
        print("vq calibration (block residual rel. MSE before -> after): "
              + ", ".join(f"{a:.3f}->{b:.3f}" for a, b in losses))
    source = Path(args.model) if args.model else default_model_dir()
    ae_src, copy_ae = source_autoencoder(source.parent if source.suffix == ".safetensors" else source, pipe.info)
    save_quantized(args.out, qmodel, pipe.process, class_names=pipe.class_names, defaults=pipe.defaults,
                   extra={"quantized_from": str(source)}, autoencoder=ae_src, copy_autoencoder=copy_ae)
    b = report["bytes"]
    print(f"{args.scheme}: {len(report['quantized'])} layers quantized, {len(report['kept_fp'])} kept float; "
          f"weights {b['model_fp32'] / 2**20:.2f} -> {b['model_quantized'] / 2**20:.2f} MiB "
          f"({b['model_fp32'] / b['model_quantized']:.2f}x); {report['calibration_inputs']} calibration inputs, "
          f"{report['calibration_s']:.1f} s")
    kernels = sorted(set(report["kernels"].values()))
    print("compute: " + "; ".join(kernels))
    if report["sensitivity"]:
        top = sorted(report["sensitivity"].items(), key=lambda kv: -kv[1])[:5]
        print("most sensitive: " + ", ".join(f"{n} {v:.2e}" for n, v in top))
    print(f"wrote {args.out}")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


def cmd_prune(args) -> None:
    import torch

    from ..assets import default_model_dir
    from .prune_folder import PruneJob, prune_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    job = PruneJob(keep=args.keep, method=args.method, group=args.group, search_steps=args.search_steps,
                   update=args.update, keep_update=args.keep_update, metric=args.metric, calib_batches=args.calib_batches,
                   batch_size=args.batch_size, finetune_minutes=args.finetune_minutes, finetune_steps=args.finetune_steps,
                   finetune_lr=args.lr, fm_weight=args.fm_weight, hidden_weight=args.hidden_kd, seed=args.seed)
    record = prune_folder(args.model or default_model_dir(), args.out, job)
    p = record["parameters"]
    print(f"depth {record['depth']} -> {len(record['kept'])}, parameters {p['before'] / 1e6:.2f} M -> "
          f"{p['after'] / 1e6:.2f} M; {record['seconds']['total']:.1f} s in all")
    print(f"wrote {args.out} (record: {args.out}/prune.json)")


def _add_prune(subparsers) -> None:
    p = subparsers.add_parser("prune", help="depth-prune a model folder (TinyFusion learned masks or importance)")
    p.add_argument("--model", help="model folder (default: the bundled shapes model)")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--keep", type=int, required=True, help="blocks of the pruned model")
    p.add_argument("--method", default="learned", choices=["learned", "importance"])
    p.add_argument("--group", type=int, default=2, help="learned: keep --keep/(depth/N) of every N consecutive blocks")
    p.add_argument("--search-steps", type=_positive_int, default=100, help="learned: mask search steps")
    p.add_argument("--update", default="lora", choices=["lora", "full", "none"],
                   help="learned: weight update trained with the masks (recoverability)")
    p.add_argument("--keep-update", action="store_true", help="learned: prune the adapted weights, not the original")
    p.add_argument("--metric", default="output", choices=["output", "loss"], help="importance: what skipping a block changes")
    p.add_argument("--calib-batches", type=_positive_int, default=2, help="importance: calibration batches")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--finetune-minutes", type=float, default=0.0, help="distillation fine-tuning budget (0: none)")
    p.add_argument("--finetune-steps", type=_positive_int, help="at most this many fine-tuning steps")
    p.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate")
    p.add_argument("--fm-weight", type=float, default=0.0, help="fine-tuning: weight of the diffusion loss on data")
    p.add_argument("--hidden-kd", type=float, default=0.0, help="fine-tuning: weight of masked hidden-state KD")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prune)


def register(subparsers) -> None:
    """Add ``quantize`` and ``prune`` to ditkit's subcommands."""
    from .quantize import SCHEMES

    q = subparsers.add_parser("quantize", help="quantize a model folder (W8A8 int8 matmul, packed W4, ...)")
    q.add_argument("--model", help="model folder (default: the bundled shapes model)")
    q.add_argument("--out", required=True, help="output model folder (written atomically)")
    q.add_argument("--scheme", default="w8a8", choices=list(SCHEMES))
    q.add_argument("--calib-samples", type=int, default=20, help="samples whose sampling trajectory calibrates "
                                                                  "(0: no calibration, no smoothing)")
    q.add_argument("--calib-steps", type=_positive_int, help="sampler steps of the calibration run (default: the model's)")
    q.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    q.add_argument("--no-smooth", action="store_true", help="no channel smoothing")
    q.add_argument("--keep-fp", help="comma-separated layer-name patterns kept in float "
                                     "(default: t_embedder,adaLN_modulation,final_layer; '' quantizes them too)")
    q.add_argument("--override", type=_override, action="append", default=[], metavar="PATTERN=SCHEME",
                   help="another scheme for matching layers, e.g. adaLN_modulation=w8a16 (repeatable)")
    q.add_argument("--keep-sensitive", type=int, default=0, help="also keep the N most sensitive layers in float")
    q.add_argument("--timestep-groups", type=_positive_int, default=1, help="smoothing factors per timestep range (w8a8)")
    q.add_argument("--rotate", type=int, default=0, help="block Hadamard rotation size for w8a8/w4a8 inputs "
                                                         "(a power of two, e.g. 256; 0: none)")
    q.add_argument("--group-size", type=_positive_int, help="K-group size of 4-bit schemes (default 128; 32 for fp4)")
    q.add_argument("--vq-steps", type=int, default=100, help="zero-data calibration steps per block for vq schemes "
                                                              "(0: k-means only)")
    q.add_argument("--vq-samples", type=_positive_int, default=16, help="Gaussian-noise inputs of the vq calibration")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--report", help="write the full report (sensitivity per layer, bytes, kernels) as JSON")
    q.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    q.set_defaults(func=cmd_quantize)
    _add_prune(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m ditkit.compress.cli quantize ...``) until ditkit.cli wires it."""
    import sys

    parser = argparse.ArgumentParser(prog="ditkit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:
        print(f"ditkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
