"""Command-line entry points of ditkit.accel: ``bench accel``, ``tune``, ``calibrate-teacache``.

``register(subparsers)`` adds ``tune`` and ``calibrate-teacache`` to ditkit's argparse subparsers
and ``add_bench_accel(bench_subparsers)`` adds ``accel`` to the ``bench`` group (``ditkit.cli``
wires both). `common_args`, `judge_args`, `bench_setup` and `judge` are shared with ``bench compress``.
Each command sets ``func(args)``; user errors are ``ValueError``s (one line, exit status 2).

    ditkit calibrate-teacache --steps 50   # TeaCache polynomial of the bundled model -> ./shapes-dit-teacache.json
    ditkit bench accel --steps 50 --num-samples 200 --out bench-accel
    ditkit tune --budget "psnr>=30" --steps 50 --num-samples 100 --json tuned.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .. import cli_types as T
from ..cli_types import new_output


def common_args(p: argparse.ArgumentParser, num_samples: int, seed: bool = True) -> None:
    p.add_argument("--model", type=T.text, help="model folder (default: the bundled shapes model)")
    p.add_argument("--sampler", choices=["euler", "heun", "dpm++2m", "ddim", "ddpm"], help="default: the model's")
    p.add_argument("--steps", type=T.sampler_steps, help="sampler steps (default: the model's)")
    p.add_argument("--cfg-scale", type=T.guidance, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--shift", type=T.shift, help="flow timestep shift (default: the model's)")
    p.add_argument("--num-samples", type=T.samples, default=num_samples, help="samples, classes balanced")
    if seed:
        p.add_argument("--seed", type=T.seed, default=0, help="seed of the samples' noise")
    p.add_argument("--batch-size", type=T.batch_size, default=100)
    p.add_argument("--threads", type=T.threads_arg, help="torch CPU threads")


def _quality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=T.text,
                   help="comma-separated method names to keep (substring match, e.g. 'FORA,TaylorSeer')")
    p.add_argument("--teacache", type=T.text,
                   help="TeaCache fit (JSON from calibrate-teacache; default <model>/teacache.json when it matches "
                        "the sampler, steps and guidance, else fitted now)")
    p.check(lambda a, given: None if a.teacache is None or Path(a.teacache).is_file() else
            f"--teacache {a.teacache}: no such file (ditkit calibrate-teacache writes one)")
    judge_args(p)


def judge_args(p: argparse.ArgumentParser) -> None:
    """Timing repeats and the classifier/reference options of every quality benchmark."""
    p.add_argument("--repeats", type=T.positive(1_000), default=1, help="timed runs per setting (the best counts)")
    p.add_argument("--timing-samples", type=T.samples,
                   help="time each setting on the first this many samples, after one untimed run over all "
                        "(default: time the runs over all samples)")
    p.add_argument("--classifier", type=T.text, help="classifier folder for accuracy/FD (default: the bundled one)")
    p.add_argument("--no-classifier", action="store_true", help="PSNR/SSIM only")
    p.add_argument("--reference-samples", type=T.samples, default=1000, help="held-out shapes for FD")
    p.add_argument("--reference-seed", type=T.seed, default=3000)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    p.conflicts("--no-classifier", "--classifier", "--reference-samples", "--reference-seed",
                why="--no-classifier measures PSNR/SSIM only")


def bench_setup(args):
    """(pipeline, BenchSetting, model folder) from the common arguments."""
    import torch

    from ..accel.bench import BenchSetting
    from ..assets import default_model_dir
    from ..pipelines import load_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.model) if args.model else default_model_dir()
    pipe = load_pipeline(folder)
    d = pipe.defaults
    setting = BenchSetting(sampler=args.sampler or d.sampler, steps=args.steps or d.steps,
                           cfg_scale=d.cfg_scale if args.cfg_scale is None else args.cfg_scale,
                           shift=d.shift if args.shift is None else args.shift, num_samples=args.num_samples,
                           seed=getattr(args, "seed", 0), batch_size=args.batch_size, repeats=getattr(args, "repeats", 1),
                           timing_samples=getattr(args, "timing_samples", None))
    return pipe, setting, folder


def check_budget(pipe, setting, what: str, samples: int | None = None) -> None:
    """Refuse (`ditkit.budget.BudgetError`, one line) before any sampling a benchmark whose runs at full compute
    alone (``samples`` in all, default the setting's) exceed the machine's memory or any reasonable time."""
    from .. import budget

    n = setting.num_samples if samples is None else samples
    pixels = 3 * pipe.image_shape[1] * pipe.image_shape[2] if pipe.codec is not None else 0
    budget.check(budget.estimate_sampling(pipe.config, n, setting.steps, setting.batch_size,
                                          guided=setting.cfg_scale != 1.0, decoded_pixels=pixels,
                                          what=f"{what} of {n} samples x {setting.steps} steps"))


def judge(args, pipe):
    """(classifier, reference images) unless --no-classifier or the model is not a shapes model."""
    if args.no_classifier:
        return None, None
    from ..assets import default_classifier_dir
    from ..shapes.classifier import load_classifier
    from ..shapes.data import ShapesDataset, to_tensor

    if pipe.image_shape != (3, 32, 32):
        print("note: not a 32x32 RGB shapes model; reporting PSNR/SSIM only", file=sys.stderr)
        return None, None
    clf = load_classifier(args.classifier or default_classifier_dir())
    ref, _ = ShapesDataset(args.reference_samples, seed=args.reference_seed).materialize()
    return clf, to_tensor(ref)


def _teacache(args, pipe, setting, folder, say):
    import torch

    from ..accel.teacache import TeaCacheFit, fit_teacache

    path = Path(args.teacache) if args.teacache else folder / "teacache.json"
    want = {"sampler": setting.sampler, "steps": setting.steps, "cfg_scale": setting.cfg_scale}
    if path.exists():
        fit = TeaCacheFit.load(path)
        if args.teacache or all(fit.setting.get(k) == v for k, v in want.items()):
            say(f"TeaCache polynomial from {path} (R² {fit.r2:.3f})")
            return fit
    say("fitting TeaCache's polynomial on 2 calibration seeds (ditkit calibrate-teacache stores one)")
    labels = torch.arange(16) % max(pipe.config.num_classes, 1)
    fit = fit_teacache(pipe.model, labels, process=pipe.process, sampler=setting.sampler, steps=setting.steps,
                       seeds=(setting.seed + 20_000, setting.seed + 20_001), cfg_scale=setting.cfg_scale,
                       shift=setting.shift)
    say(f"TeaCache fit: R² {fit.r2:.3f} over {fit.num_pairs} pairs")
    return fit


def _methods(args, pipe, setting, folder, say):
    from ..accel.bench import default_methods, select_methods

    fit = _teacache(args, pipe, setting, folder, say)
    methods = default_methods(pipe.config.depth, setting.calls, fit.coefficients, guided=setting.cfg_scale != 1.0)
    return select_methods(methods, args.methods) if args.methods else methods


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _inputs(args) -> list:
    """The input paths of a benchmark command (an output may be none of them, nor lie inside one)."""
    from ..assets import default_model_dir

    return [args.model or default_model_dir(), getattr(args, "classifier", None), getattr(args, "teacache", None)]


def cmd_bench_accel(args) -> None:
    from ..accel.bench import markdown_table, run_bench, write_report
    from ..io.outputs import bench_folder

    new_output(args.out, args.overwrite, inputs=_inputs(args), ditkit_wrote=bench_folder, folder=True)
    pipe, setting, folder = bench_setup(args)
    check_budget(pipe, setting, "benchmarking (full compute alone)")
    methods = _methods(args, pipe, setting, folder, _say)
    clf, ref = judge(args, pipe)
    result = run_bench(pipe.model, process=pipe.process, setting=setting, methods=methods, classifier=clf,
                       reference_images=ref, progress=_say, decode=pipe.decode, bar=False if args.no_progress else None)
    command = "ditkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    paths = write_report(result, args.out, command=command)
    print(markdown_table(result))
    print("wrote " + ", ".join(paths.values()))


def _configs_text(configs: list[dict]) -> str:
    """Every field of the chosen configs, as the Python that makes them: ``TaylorSeerConfig(interval=4, ...)``."""
    parts = []
    for c in configs:
        kind, rest = c["type"], {k: v for k, v in c.items() if k != "type"}
        parts.append(f"{kind}({', '.join(f'{k}={v!r}' for k, v in rest.items())})")
    return " + ".join(parts)


def cmd_tune(args) -> None:
    from ..accel.tune import parse_budget, tune
    from ..io.atomic import atomic_write
    from ..io.outputs import json_with

    budgets = parse_budget(args.budget)  # fail before any sampling
    out = new_output(args.json, args.overwrite, inputs=_inputs(args), ditkit_wrote=json_with("budget", "message"),
                     flag="--json", folder=False) if args.json else None
    pipe, setting, folder = bench_setup(args)
    check_budget(pipe, setting, "tuning (full compute alone, calibration and held-out runs)",
                 setting.num_samples + (args.holdout_samples or setting.num_samples))
    methods = _methods(args, pipe, setting, folder, _say)
    clf, ref = judge(args, pipe)
    needs = {b.metric for b in budgets} & {"accuracy", "agreement", "fd", "accuracy_drop", "fd_increase"}
    if needs and clf is None:
        raise ValueError(f"the budget uses {', '.join(sorted(needs))}, which needs the classifier")
    result = tune(pipe.model, budgets, process=pipe.process, setting=setting, holdout_seed=args.holdout_seed,
                  holdout_samples=args.holdout_samples, methods=methods, classifier=clf, reference_images=ref,
                  progress=_say, decode=pipe.decode, bar=False if args.no_progress else None)
    print(result.message)
    if result.chosen:
        print(f"settings: {_configs_text(result.chosen['configs'])}")
    if out is not None:
        with atomic_write(out) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {out}")


def cmd_calibrate_teacache(args) -> None:
    import torch

    from ..accel.teacache import fit_teacache
    from ..assets import default_model_dir
    from ..io.outputs import json_with

    folder = Path(args.model) if args.model else default_model_dir()
    # by default into the working directory: no command writes into its input folder unless told to; the one
    # file of the model folder it may write when told is the folder's own teacache.json (bench accel reads it)
    out = Path(args.out) if args.out else Path(f"{folder.resolve().name}-teacache.json")
    own = out.resolve() == (folder / "teacache.json").resolve()
    out = new_output(out, args.overwrite, inputs=[] if own else [folder], ditkit_wrote=json_with("coefficients", "r2"),
                     folder=False)
    pipe, setting, folder = bench_setup(args)
    seeds = args.seeds
    check_budget(pipe, setting, f"fitting TeaCache on {len(seeds)} seeds", setting.num_samples * len(seeds))
    labels = torch.arange(args.num_samples) % max(pipe.config.num_classes, 1)
    fit = fit_teacache(pipe.model, labels, process=pipe.process, sampler=setting.sampler, steps=setting.steps,
                       seeds=seeds, cfg_scale=setting.cfg_scale, shift=setting.shift, degree=args.degree,
                       batch_size=args.batch_size)
    fit.save(out)
    print(f"TeaCache polynomial (degree {args.degree}, highest first): {', '.join(f'{c:.4g}' for c in fit.coefficients)}")
    print(f"R² {fit.r2:.3f} over {fit.num_pairs} pairs, input change {fit.x_range[0]:.3g}..{fit.x_range[1]:.3g}; "
          f"wrote {out}" + ("" if out.parent == folder else f" (bench accel and tune read it with --teacache {out})"))


def add_bench_accel(bench_subparsers) -> argparse.ArgumentParser:
    p = bench_subparsers.add_parser("accel", help="full compute vs caching/forecasting/RAS on identical seeds")
    common_args(p, num_samples=100)
    _quality_args(p)
    p.add_argument("--out", type=T.text, default="bench-accel", help="folder for bench.json, bench.md, bench.png (replaced as a "
                                                        "whole; an existing folder not from ditkit bench needs "
                                                        "--overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if ditkit bench did not write it")
    p.set_defaults(func=cmd_bench_accel)
    return p


def register(subparsers) -> None:
    """Add ``tune`` and ``calibrate-teacache`` to ditkit's subparsers (``bench accel``: `add_bench_accel`)."""
    t = subparsers.add_parser("tune", help="fastest acceleration setting within a quality budget")
    common_args(t, num_samples=100)
    _quality_args(t)
    t.add_argument("--budget", type=T.text, required=True, help="e.g. 'psnr>=30' or 'accuracy_drop<=2, fd_increase<=10'")
    t.add_argument("--holdout-seed", type=T.seed, help="seed of the held-out check (default seed + 10000)")
    t.add_argument("--holdout-samples", type=T.samples, help="held-out samples (default --num-samples)")
    t.add_argument("--json", type=T.text, help="write the full result to this JSON file (an existing file needs --overwrite "
                                  "unless it is a result of ditkit tune)")
    t.add_argument("--overwrite", action="store_true", help="replace --json even if ditkit tune did not write it")
    t.set_defaults(func=cmd_tune)

    c = subparsers.add_parser("calibrate-teacache", help="fit TeaCache's rescaling polynomial for a model")
    common_args(c, num_samples=16, seed=False)
    c.add_argument("--seeds", type=T.int_list(0, T.MAX_SEED, "seeds"), default="1000,1001",
                   help="comma-separated calibration seeds")
    c.add_argument("--degree", type=T.int_in(1, 10), default=4, help="degree of the polynomial")
    c.add_argument("--out", type=T.text, help="JSON to write (default: ./<model folder name>-teacache.json; give "
                                 "--out <model>/teacache.json to put it where bench accel and tune look by default). "
                                 "An existing file needs --overwrite unless it is a fit of calibrate-teacache")
    c.add_argument("--overwrite", action="store_true", help="replace --out even if calibrate-teacache did not write it")
    c.set_defaults(func=cmd_calibrate_teacache)
