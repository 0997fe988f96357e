"""Command line of ditkit.compress: ``ditkit quantize``, ``ditkit prune``, ``ditkit bench compress``.

``register(subparsers)`` adds quantize and prune to ditkit's argparse subparsers and
``add_bench_compress(bench_subparsers)`` adds ``compress`` to the ``bench`` group (``ditkit.cli``
wires both); each command sets ``func(args)`` and raises ``ValueError`` for user errors (one line, exit 2).

    ditkit quantize --scheme w8a8                                        # calibrate, quantize, save ./shapes-dit-w8a8
    ditkit quantize --scheme w4a8 --override adaLN_modulation=w8a16 --override final_layer=w8a16 \\
                    --keep-sensitive 2 --out out/shapes-w4a8 --report out/w4a8.json
    ditkit prune --keep 4 --method learned --group 2 --search-steps 200 --finetune-minutes 20 --out out/shapes-d4
    ditkit bench compress --variants out/shapes-w8a8,out/shapes-w4a8,out/shapes-d4 --cache "TaylorSeer N=3 m=1"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import cli_types as T
from ..cli_types import new_output
from ..io.atomic import atomic_write
from .parser import Parser


def _override(s: str) -> tuple[str, str]:
    pattern, sep, scheme = s.partition("=")
    if not sep or not pattern or not scheme:
        raise argparse.ArgumentTypeError(f"expected PATTERN=SCHEME, e.g. adaLN_modulation=w8a16, got {s!r}")
    return pattern, scheme


def cmd_quantize(args) -> None:
    import torch

    from ..assets import default_model_dir
    from ..compress.calibrate import collect_calibration
    from ..compress.files import save_quantized
    from ..compress.quantize import quantize_model
    from ..pipelines import load_pipeline
    from ..pipelines.folder import source_autoencoder

    source = Path(args.model) if args.model else default_model_dir()
    out = new_output(args.out or f"{source.resolve().name}-{args.scheme}", args.overwrite, inputs=[source], ask=True,
                     folder=True)
    report_path = new_output(args.report, args.overwrite, inputs=[source, out], ask=True, flag="--report",
                             folder=False) if args.report else None
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(source)
    cfg = pipe.config
    calib = None
    if args.calib_samples > 0:
        _check_calibration(pipe, args.calib_samples, args.calib_steps)
        labels = torch.arange(args.calib_samples) % max(cfg.num_classes, 1)
        d = pipe.defaults
        calib = collect_calibration(pipe.model, pipe.process, labels, steps=args.calib_steps,
                                    sampler=d.sampler, cfg_scale=d.cfg_scale, seed=args.seed,
                                    progress=False if args.no_progress else None)
    keep_fp = tuple(p for p in args.keep_fp.split(",") if p) if args.keep_fp is not None else None
    kwargs = {} if keep_fp is None else {"keep_fp": keep_fp}
    qmodel, report = quantize_model(
        pipe.model, args.scheme, calib, alpha=None if args.no_smooth else args.alpha, overrides=dict(args.override),
        keep_sensitive=args.keep_sensitive, sensitivity=calib is not None, timestep_groups=args.timestep_groups,
        group_size=args.group_size, rotate=args.rotate, sensitivity_inputs=args.sensitivity_inputs,
        progress=False if args.no_progress else None, **kwargs)
    if args.vq_steps and any(v.startswith("vq") for v in report["schemes"].values()):
        from ..compress.vq_calibrate import calibrate_vq

        vq = calibrate_vq(pipe.model, qmodel, samples=args.vq_samples, steps=args.vq_steps, seed=args.seed,
                          progress=False if args.no_progress else None)
        report["vq_calibration"] = vq
        losses = [(b["loss_before"], b["loss_after"]) for b in vq["blocks"]]
        print("vq calibration (block residual rel. MSE before -> after): "
              + ", ".join(f"{a:.3f}->{b:.3f}" for a, b in losses))
    ae_src, copy_ae = source_autoencoder(source, pipe.info)
    save_quantized(out, qmodel, pipe.process, class_names=pipe.class_names, defaults=pipe.defaults,
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
    print(f"wrote {out}")
    if report_path is not None:
        with atomic_write(report_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")


def _check_calibration(pipe, samples: int, steps: int) -> None:
    """Refuse (`ditkit.budget.BudgetError`, one line) before sampling a calibration run beyond the machine: its
    sampling, and the inputs of every model call it records (``rows x channels x height x width`` floats each)."""
    from .. import budget
    from ..compress.calibrate import CALIBRATION_BATCH

    cfg = pipe.config
    guided = pipe.defaults.cfg_scale != 1.0
    est = budget.estimate_sampling(cfg, samples, steps, CALIBRATION_BATCH, guided=guided,
                                   what=f"calibrating on {samples} samples x {steps} steps")
    h, w = cfg.hw
    recorded = float(samples) * steps * (2 if guided else 1) * (cfg.in_channels * h * w * 4 + 16)
    budget.check(budget.Estimate(est.what, est.memory + recorded, est.macs, est.calls))


def cmd_prune(args) -> None:
    import torch

    from ..assets import default_model_dir
    from ..cli_types import device as _device
    from ..compress.prune_folder import PruneJob, prune_folder
    from ..io.outputs import model_folder
    from ..train.datasets import training_images

    source = args.model or default_model_dir()
    new_output(args.out, args.overwrite, inputs=[source], ditkit_wrote=model_folder, folder=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    job = PruneJob(keep=args.keep, method=args.method, group=args.group, search_steps=args.search_steps,
                   update=args.update, keep_update=args.keep_update, metric=args.metric, calib_batches=args.calib_batches,
                   batch_size=args.batch_size, finetune_minutes=args.finetune_minutes, finetune_steps=args.finetune_steps,
                   finetune_lr=args.lr, lr_schedule=args.lr_schedule, ema_decay=args.ema, fm_weight=args.fm_weight,
                   hidden_weight=args.hidden_kd, hidden_align=args.hidden_align, guided_weight=args.guided_kd,
                   kd_time=args.kd_time, seed=args.seed, device=_device(args))
    record = prune_folder(source, args.out, job,
                          images=lambda seed, size: training_images(job.dataset, seed, size),
                          progress=False if args.no_progress else None)
    p = record["parameters"]
    print(f"depth {record['depth']} -> {len(record['kept'])}, parameters {p['before'] / 1e6:.2f} M -> "
          f"{p['after'] / 1e6:.2f} M; {record['seconds']['total']:.1f} s in all")
    print(f"wrote {args.out} (record: {args.out}/prune.json)")


def cmd_bench_compress(args) -> None:
    import shlex
    import sys

    from ..accel.bench import default_methods, write_report
    from ..assets import default_model_dir
    from ..compress.bench_models import Variant, compress_table, plot_compress, run_compress_bench
    from ..io.outputs import bench_folder
    from ..pipelines import load_pipeline
    from .accel import bench_setup, judge

    paths = [Path(v.strip()) for v in args.variants.split(",") if v.strip()]
    new_output(args.out, args.overwrite, inputs=[args.model or default_model_dir(), args.classifier, *paths],
               ditkit_wrote=bench_folder, folder=True)
    pipe, setting, folder = bench_setup(args)
    if pipe.info.get("kind") != "ditkit-dit":
        raise ValueError(f"--model {folder} is a {pipe.info.get('kind')!r} folder; give the float model")
    if not paths:
        raise ValueError("--variants needs at least one model folder")
    labels = [p.name for p in paths]
    variants = [Variant(p.name if labels.count(p.name) == 1 else str(p), load_pipeline(p), p) for p in paths]
    cache = None
    if args.cache:
        methods = default_methods(pipe.config.depth, setting.calls, guided=setting.cfg_scale != 1.0)
        cache = next((m for m in methods if m.label.lower() == args.cache.strip().lower()), None)
        if cache is None:
            raise ValueError(f"--cache {args.cache!r} is none of ditkit bench accel's methods: "
                             + ", ".join(m.label for m in methods if not m.label.startswith("TeaCache")))

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    clf, ref = judge(args, pipe)
    result = run_compress_bench(pipe, variants, setting=setting, reference_folder=folder, cache=cache,
                                classifier=clf, reference_images=ref, progress=say, full_store=args.full_samples,
                                bar=False if args.no_progress else None)
    command = "ditkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    written = write_report(result, args.out, command=command, table=compress_table, plot=plot_compress)
    print(compress_table(result))
    print("wrote " + ", ".join(written.values()))


def add_bench_compress(bench_subparsers) -> argparse.ArgumentParser:
    """``ditkit bench compress``: compressed folders against their float model (`bench_models`)."""
    from .accel import common_args, judge_args

    p = bench_subparsers.add_parser("compress", help="quantized/pruned model folders vs the float model, "
                                                     "identical seeds: bytes, speed, PSNR, accuracy, FD")
    common_args(p, num_samples=100)
    judge_args(p)
    p.add_argument("--variants", type=T.text, required=True, help="comma-separated model folders from ditkit quantize/prune")
    p.add_argument("--cache", type=T.text, help="also run the float model and every variant with this acceleration method "
                                   "of ditkit bench accel, e.g. 'TaylorSeer N=3 m=1'")
    p.add_argument("--full-samples", type=T.text, metavar="FILE",
                   help="float model's samples: loaded from FILE when it holds this very setting's, else "
                        "computed and written there (lets benchmarks of other variants run side by side; "
                        "needs --timing-samples)")
    p.requires("--full-samples", "--timing-samples", "--timing-samples (without it the timed run over all samples "
                                                   "computes the full-compute samples anyway)")
    p.add_argument("--out", type=T.text, default="bench-compress",
                   help="folder for bench.json, bench.md, bench.png (replaced as a "
                        "whole; an existing folder not from ditkit bench needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if ditkit bench did not write it")
    p.set_defaults(func=cmd_bench_compress)
    return p


def _schemes(args) -> set[str]:
    """The schemes a quantize command uses: --scheme and those of its --override patterns."""
    return {args.scheme, *(scheme for _, scheme in args.override)}


def _quantize_rules(q: Parser) -> None:
    """Options of quantize that do nothing in some setups are refused there instead of dropped."""
    q.conflicts("--no-smooth", "--alpha", why="--no-smooth turns the smoothing of --alpha off")
    for option in ("--alpha", "--calib-steps", "--timestep-groups", "--keep-sensitive", "--sensitivity-inputs"):
        q.requires(option, lambda a: a.calib_samples > 0, "calibration: --calib-samples > 0")
    q.requires("--vq-steps", lambda a: any(s.startswith("vq") for s in _schemes(a)), "a vq scheme (--scheme vq...)")
    q.requires("--vq-samples", lambda a: any(s.startswith("vq") for s in _schemes(a)), "a vq scheme (--scheme vq...)")
    q.requires("--rotate", lambda a: a.rotate == 0 or bool({"w8a8", "w4a8"} & _schemes(a)),
               "a w8a8 or w4a8 scheme (it rotates their inputs)")
    q.requires("--group-size", lambda a: any(s.startswith(("w4", "fp4")) for s in _schemes(a)),
               "a 4-bit scheme (w4a8, w4a16, fp4_...)")


_LEARNED_ONLY = ("--group", "--search-steps", "--update", "--keep-update")
_IMPORTANCE_ONLY = ("--metric", "--calib-batches")
_FINETUNE_ONLY = ("--lr", "--lr-schedule", "--ema", "--fm-weight", "--hidden-kd", "--hidden-align", "--guided-kd",
                  "--kd-time")


def _finetunes(args) -> bool:
    return args.finetune_minutes > 0 or args.finetune_steps is not None


def _prune_rules(p: Parser) -> None:
    """Options of one prune method, or of fine-tuning, are refused where they would be dropped."""
    p.check(lambda a, given: None if 0.0 <= a.ema < 1.0 else f"--ema must lie in [0, 1), got {a.ema}")
    for option in _LEARNED_ONLY:
        p.requires(option, lambda a: a.method == "learned", "--method learned")
    for option in _IMPORTANCE_ONLY:
        p.requires(option, lambda a: a.method == "importance", "--method importance")
    for option in _FINETUNE_ONLY:
        p.requires(option, _finetunes, "fine-tuning: --finetune-minutes > 0 or --finetune-steps")
    p.requires("--hidden-align", lambda a: a.hidden_kd > 0, "--hidden-kd > 0 (it aligns the hidden-state KD)")


def _add_prune(subparsers) -> None:
    p = subparsers.add_parser("prune", help="depth-prune a model folder (TinyFusion learned masks or importance)")
    p.add_argument("--model", type=T.text, help="model folder (default: the bundled shapes model)")
    p.add_argument("--out", type=T.text, required=True, help="output model folder (written atomically; a model folder of ditkit "
                                                "there is replaced, anything else needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a ditkit model folder")
    p.add_argument("--keep", type=T.nonneg(T.MAX_COUNT), required=True, help="blocks of the pruned model")
    p.add_argument("--method", default="learned", choices=["learned", "importance"])
    p.add_argument("--group", type=T.positive(T.MAX_COUNT), default=2,
                   help="learned: keep --keep/(depth/N) of every N consecutive blocks")
    p.add_argument("--search-steps", type=T.train_steps, default=100, help="learned: mask search steps")
    p.add_argument("--update", default="lora", choices=["lora", "full", "none"],
                   help="learned: weight update trained with the masks (recoverability)")
    p.add_argument("--keep-update", action="store_true", help="learned: prune the adapted weights, not the original")
    p.add_argument("--metric", default="output", choices=["output", "loss"], help="importance: what skipping a block changes")
    p.add_argument("--calib-batches", type=T.positive(T.MAX_COUNT), default=2, help="importance: calibration batches")
    p.add_argument("--batch-size", type=T.batch_size, default=16)
    p.add_argument("--finetune-minutes", type=T.nonneg_float_upto(T.MAX_MINUTES), default=0.0,
                   help="distillation fine-tuning budget (0: none)")
    p.add_argument("--finetune-steps", type=T.train_steps, help="at most this many fine-tuning steps")
    p.add_argument("--lr", type=T.learning_rate, default=2e-4, help="fine-tuning learning rate")
    p.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"],
                   help="fine-tuning: cosine to zero over the budget (steps or minutes) after warm-up, or constant")
    p.add_argument("--ema", type=T.finite, default=0.0,
                   help="fine-tuning: keep an EMA of the weights with this decay (e.g. 0.999) and save it (0: last weights); "
                        "the decay is capped by the warm-up (1+k)/(10+k) at step k, so below about 9,000 steps "
                        "every decay >= 0.999 gives the same average")
    p.add_argument("--fm-weight", type=T.nonneg_float, default=0.0, help="fine-tuning: weight of the diffusion loss on data")
    p.add_argument("--hidden-kd", type=T.nonneg_float, default=0.0, help="fine-tuning: weight of masked hidden-state KD")
    p.add_argument("--hidden-align", default="copied", choices=["copied", "next-input"],
                   help="hidden KD: match each student block to the teacher block it was copied from, or to the "
                        "teacher state the next kept block reads (the end of its group)")
    p.add_argument("--guided-kd", type=T.nonneg_float, default=0.0,
                   help="fine-tuning: weight of KD on the guided output at the model's cfg scale (Meng et al. 2023)")
    p.add_argument("--kd-time", default="process", choices=["process", "uniform", "low"],
                   help="fine-tuning noise levels: the model's training distribution, uniform in time "
                        "(more of both ends of the noise range), or low: half of them uniform below s = 0.35, "
                        "where a pruned student loses its accuracy")
    p.add_argument("--threads", type=T.threads_arg, help="torch CPU threads")
    p.add_argument("--device", type=T.text, default="cpu", help="cpu or cuda[:N]: where search and fine-tuning run (the "
                                                   "budget in minutes is that device's)")
    p.add_argument("--seed", type=T.seed, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown only on a terminal)")
    _prune_rules(p)
    p.set_defaults(func=cmd_prune)


def register(subparsers) -> None:
    """Add ``quantize`` and ``prune`` to ditkit's subcommands."""
    from ..compress.quantize import SCHEMES

    q = subparsers.add_parser("quantize", help="quantize a model folder (W8A8 int8 matmul, packed W4, ...)")
    q.add_argument("--model", type=T.text, help="model folder (default: the bundled shapes model)")
    q.add_argument("--out", type=T.text, help="output model folder, written atomically (default: ./<model folder name>-<scheme>, "
                                 "e.g. shapes-dit-w8a8)")
    q.add_argument("--overwrite", action="store_true", help="replace --out (and --report) if it exists")
    q.add_argument("--scheme", default="w8a8", choices=list(SCHEMES))
    q.add_argument("--calib-samples", type=T.nonneg(T.MAX_SAMPLES), default=20,
                   help="samples whose sampling trajectory calibrates "
                        "(0: no calibration, no smoothing)")
    q.add_argument("--calib-steps", type=T.sampler_steps, default=10,
                   help="sampler steps of the calibration run (its inputs span every timestep range)")
    q.add_argument("--sensitivity-inputs", type=T.positive(T.MAX_COUNT), default=128,
                   help="calibration inputs on which each layer's sensitivity is measured (the costly part)")
    q.add_argument("--alpha", type=T.probability, default=0.5, help="SmoothQuant migration strength")
    q.add_argument("--no-smooth", action="store_true", help="no channel smoothing")
    q.add_argument("--keep-fp", help="comma-separated layer-name patterns kept in float "
                                     "(default: t_embedder,adaLN_modulation,final_layer; '' quantizes them too)")
    q.add_argument("--override", type=_override, action="append", default=[], metavar="PATTERN=SCHEME",
                   help="another scheme for matching layers, e.g. adaLN_modulation=w8a16 (repeatable)")
    q.add_argument("--keep-sensitive", type=T.nonneg(T.MAX_COUNT), default=0,
                   help="also keep the N most sensitive layers in float")
    q.add_argument("--timestep-groups", type=T.positive(1_000), default=1, help="smoothing factors per timestep range (w8a8)")
    q.add_argument("--rotate", type=T.power_of_two_or_zero(65_536), default=0,
                   help="block Hadamard rotation size for w8a8/w4a8 inputs "
                        "(a power of two, e.g. 256; 0: none)")
    q.add_argument("--group-size", type=T.positive(65_536), help="K-group size of 4-bit schemes (default 128; 32 for fp4)")
    q.add_argument("--vq-steps", type=T.nonneg(T.MAX_TRAIN_STEPS), default=100,
                   help="zero-data calibration steps per block for vq schemes "
                        "(0: k-means only)")
    q.add_argument("--vq-samples", type=T.positive(T.MAX_SAMPLES), default=16, help="Gaussian-noise inputs of the vq calibration")
    q.add_argument("--seed", type=T.seed, default=0)
    q.add_argument("--report", type=T.text, help="write the full report (sensitivity per layer, bytes, kernels) as JSON")
    q.add_argument("--threads", type=T.threads_arg, help="torch CPU threads")
    q.add_argument("--no-progress", action="store_true", help="no progress bars (shown only on a terminal)")
    _quantize_rules(q)
    q.set_defaults(func=cmd_quantize)
    _add_prune(subparsers)
