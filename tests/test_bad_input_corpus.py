"""A corpus of bad invocations over every subcommand: each is one line on stderr and exit status 2, no traceback,
and nothing written at the output path.

The cases are built systematically: every numeric option of every subcommand with values it must refuse
(NaN, infinities, values below or above its range, 1e308, 10**12, words, the empty string), unknown options,
missing values and required options, invalid choices, options that cannot go together, missing paths, a
file where a folder is expected, and outputs the operating system refuses (a path under a regular file, a
read-only folder). All run in-process through `ditkit.cli.main` and fail before any real work (the few that
need a model use the tiny one the tests build).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from ditkit.assets import assets_dir
from ditkit.cli import main

# ----------------------------------------------------------------------------- bad values by kind of option

# the most telling values first: the first option of each command gets them all, the others the first SOME
POS = ["nan", "0", "1000000000000", "-1", "inf", "-inf", "2.5", "abc", "", "1e308"]  # a positive count
NONNEG = ["nan", "-1", "1000000000000", "inf", "0.5", "abc", "", "1e308"]  # a count that may be 0
SEED = ["-1", "4294967296", "nan", "1.5", "x", ""]
GUIDE = ["nan", "inf", "1e308", "-1", "-inf", "abc", ""]  # a finite number >= 0 (guidance scales, loss weights)
POSF = ["nan", "0", "1e308", "inf", "-inf", "-1", "abc", ""]  # a finite number > 0 (shift, learning rate, minutes)
UNIT = ["nan", "1", "-0.5", "inf", "1e308", "abc"]  # [0, 1)
PROB = ["nan", "1.5", "-0.1", "inf", "abc"]  # [0, 1]
ALPHA = ["nan", "0", "1.5", "-1", "inf"]  # (0, 1]
FPS = ["nan", "1e-9", "0", "inf", "-8", "1e308"]
INTERVAL = ["nan,nan", "0,inf", "500,100", "5,5", "-1,10", "0,2000", "abc", "1,2,3", ""]
ROTATE = ["3", "1", "1000000000000", "-2", "100", "nan"]
DEGREE = ["0", "11", "nan", "-1", "x"]
SEEDS = ["", "a,b", "4294967296", ",", "-1", "1,nan"]
SOME = 3

IMAGE_SAMPLING = {"--steps": POS, "--cfg-scale": GUIDE, "--seed": SEED, "--batch-size": POS, "--threads": POS,
                  "--guidance-interval": INTERVAL, "--shift": POSF}
VIDEO_SAMPLING = {"--steps": POS, "--cfg-scale": GUIDE, "--seed": SEED, "--batch-size": POS, "--threads": POS,
                  "--context-noise": UNIT, "--history-guidance": GUIDE, "--overlap": POS, "--image-expert-scale": GUIDE,
                  "--ar-step": NONNEG, "--first-frame-redraws": NONNEG}
BENCH = {"--steps": POS, "--cfg-scale": GUIDE, "--shift": POSF, "--num-samples": POS, "--seed": SEED,
         "--batch-size": POS, "--threads": POS, "--repeats": POS, "--timing-samples": POS, "--reference-samples": POS,
         "--reference-seed": SEED}

# (argv prefix, the output it names, {option: bad values}) of each subcommand; {tmp} is the case's own folder
COMMANDS: dict[str, tuple[list[str], str | None, dict[str, list[str]]]] = {
    "generate": (["generate", "--out", "{tmp}/o.png"], "{tmp}/o.png",
                 {**IMAGE_SAMPLING, "--n-per-class": POS, "--upscale": POS}),
    "generate --video": (["generate", "--video", "--out", "{tmp}/o.gif"], "{tmp}/o.gif",
                         {**VIDEO_SAMPLING, "--shift": POSF, "--n-per-class": POS, "--upscale": POS, "--frames": POS,
                          "--ultravico-alpha": ALPHA, "--fps": FPS}),
    "eval": (["eval", "--json", "{tmp}/r.json"], "{tmp}/r.json",
             {**IMAGE_SAMPLING, "--num-samples": POS, "--reference-samples": POS, "--reference-seed": SEED}),
    "eval --video": (["eval", "--video", "--json", "{tmp}/r.json"], "{tmp}/r.json",
                     {**VIDEO_SAMPLING, "--num-samples": POS, "--long-clips": NONNEG}),
    "train": (["train", "--preset", "shapes-tiny", "--out", "{tmp}/run"], "{tmp}/run",
              {"--steps": POS, "--batch-size": POS, "--lr": POSF, "--max-minutes": POSF, "--threads": POS}),
    "export": (["export", "--run", "{tmp}/run", "--out", "{tmp}/m"], "{tmp}/m",
               {"--steps": POS, "--cfg-scale": GUIDE, "--shift": POSF}),
    "train-classifier": (["train-classifier", "--out", "{tmp}/c"], "{tmp}/c",
                         {"--steps": POS, "--seed": SEED, "--threads": POS}),
    "convert": (["convert", "{tiny}", "{tmp}/c", "--to", "ditkit"], "{tmp}/c", {"--num-heads": POS}),
    "tune": (["tune", "--budget", "psnr>=30", "--json", "{tmp}/t.json"], "{tmp}/t.json",
             {**BENCH, "--holdout-seed": SEED, "--holdout-samples": POS}),
    "calibrate-teacache": (["calibrate-teacache", "--out", "{tmp}/t.json"], "{tmp}/t.json",
                           {**{k: v for k, v in BENCH.items() if k in ("--steps", "--cfg-scale", "--shift",
                                                                      "--num-samples", "--batch-size", "--threads")},
                            "--degree": DEGREE, "--seeds": SEEDS}),
    "bench accel": (["bench", "accel", "--out", "{tmp}/b"], "{tmp}/b", BENCH),
    "bench compress": (["bench", "compress", "--variants", "{tiny}", "--out", "{tmp}/b"], "{tmp}/b", BENCH),
    "encode": (["encode", "--data", "shapes", "--vae", "{ae}", "--out", "{tmp}/c"], "{tmp}/c",
               {"--num": POS, "--image-size": POS, "--seed": SEED, "--batch-size": POS, "--shard-size": POS,
                "--threads": POS}),
    "quantize": (["quantize", "--out", "{tmp}/q"], "{tmp}/q",
                 {"--calib-samples": NONNEG, "--calib-steps": POS, "--sensitivity-inputs": POS, "--alpha": PROB,
                  "--keep-sensitive": NONNEG, "--timestep-groups": POS, "--rotate": ROTATE, "--group-size": POS,
                  "--vq-steps": NONNEG, "--vq-samples": POS, "--seed": SEED, "--threads": POS}),
    "prune": (["prune", "--keep", "1", "--out", "{tmp}/p"], "{tmp}/p",
              {"--keep": NONNEG, "--group": POS, "--search-steps": POS, "--calib-batches": POS, "--batch-size": POS,
               "--finetune-minutes": GUIDE, "--finetune-steps": POS, "--lr": POSF, "--ema": ["nan", "inf", "abc", ""],
               "--fm-weight": GUIDE, "--hidden-kd": GUIDE, "--guided-kd": GUIDE, "--seed": SEED, "--threads": POS}),
    "info": (["info"], None, {}),
}


@dataclasses.dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    out: str | None = None  # a path that must not exist afterwards
    line: str = ""  # a piece of the one error line, where it matters
    existing: str | None = None  # a user's file (or folder: ending in /) made first, to be found unchanged
    seconds: float | None = None  # refused within this time (requests beyond the machine)
    pending: str = ""  # not refused yet: why (an expected failure, not run: it would run until time or memory ends)

    @property
    def command(self) -> str:
        if not self.argv:
            return ""
        return self.argv[0] + (f" {self.argv[1]}" if self.argv[0] == "bench" and len(self.argv) > 1 else "")


def _numeric_cases() -> list[Case]:
    cases = []
    for prefix, out, options in COMMANDS.values():
        for i, (option, values) in enumerate(options.items()):
            cases += [Case((*prefix, option, v), out, option) for v in (values if i == 0 else values[:SOME])]
    return cases


def _usage_cases() -> list[Case]:
    """Unknown options, stray words, options without their value, missing required options, invalid choices."""
    cases = []
    for prefix, out, options in COMMANDS.values():
        cases.append(Case((*prefix, "--no-such-option"), out, "unrecognized arguments: --no-such-option"))
        cases.append(Case((*prefix, "--no-such-option=3"), out, "unrecognized arguments"))
        cases.append(Case((*prefix, "stray"), out, "unrecognized arguments: stray"))
        for option in list(options)[:3]:
            cases.append(Case((*prefix, option), out, "expected one argument"))
    cases += [Case(argv, out, line) for argv, out, line in [
        ((), None, "required: command"),
        (("no-such-command",), None, "invalid choice"),
        (("bench",), None, "required"),
        (("bench", "nothing"), None, "invalid choice"),
        (("export", "--out", "{tmp}/m"), "{tmp}/m", "--run"),
        (("export", "--run", "{tmp}/run"), None, "--out"),
        (("encode", "--data", "shapes", "--out", "{tmp}/c"), "{tmp}/c", "--vae"),
        (("encode", "--vae", "{ae}", "--out", "{tmp}/c"), "{tmp}/c", "--data"),
        (("encode", "--data", "shapes", "--vae", "{ae}"), None, "--out"),
        (("convert", "{tiny}", "{tmp}/c"), "{tmp}/c", "--to"),
        (("convert", "{tiny}"), None, "dst"),
        (("convert", "{tiny}", "{tmp}/c", "--to", "onnx"), "{tmp}/c", "invalid choice"),
        (("convert", "{tiny}", "{tmp}/c", "--to", "ditkit", "--dtype", "int3"), "{tmp}/c", "invalid choice"),
        (("prune", "--out", "{tmp}/p"), "{tmp}/p", "--keep"),
        (("prune", "--keep", "1"), None, "--out"),
        (("prune", "--keep", "1", "--out", "{tmp}/p", "--method", "random"), "{tmp}/p", "invalid choice"),
        (("prune", "--keep", "1", "--out", "{tmp}/p", "--update", "half"), "{tmp}/p", "invalid choice"),
        (("tune",), None, "--budget"),
        (("bench", "compress"), None, "--variants"),
        (("quantize", "--scheme", "w1a1", "--out", "{tmp}/q"), "{tmp}/q", "invalid choice"),
        (("quantize", "--override", "nonsense", "--out", "{tmp}/q"), "{tmp}/q", "PATTERN=SCHEME"),
        (("quantize", "--override", "=w8a8", "--out", "{tmp}/q"), "{tmp}/q", "PATTERN=SCHEME"),
        (("generate", "--sampler", "euler-a", "--out", "{tmp}/o.png"), "{tmp}/o.png", "invalid choice"),
        (("generate", "--video", "--sampler", "heun", "--out", "{tmp}/o.gif"), "{tmp}/o.gif", "invalid choice"),
        (("generate", "--video", "--long-mode", "loop", "--out", "{tmp}/o.gif"), "{tmp}/o.gif", "invalid choice"),
        (("generate", "--video", "--i2v-guidance", "x", "--out", "{tmp}/o.gif"), "{tmp}/o.gif", "invalid choice"),
        (("export", "--run", "{tmp}/run", "--out", "{tmp}/m", "--dtype", "int8"), "{tmp}/m", "invalid choice"),
        (("export", "--run", "{tmp}/run", "--out", "{tmp}/m", "--sampler", "ddpm"), "{tmp}/m", "invalid choice"),
        (("bench", "accel", "--sampler", "x", "--out", "{tmp}/b"), "{tmp}/b", "invalid choice"),
        (("generate", "--frames", "8", "--out", "{tmp}/o.png"), "{tmp}/o.png", "is a video option"),
        (("generate", "--video", "--vae", "v", "--out", "{tmp}/o.gif"), "{tmp}/o.gif", "is not supported with --video"),
        (("eval", "--long-clips", "2", "--json", "{tmp}/r.json"), "{tmp}/r.json", "is a video option"),
        (("eval", "--video", "--grid", "{tmp}/g.png"), "{tmp}/g.png", "image-model option"),
        # empty names and paths are refused, never read as "the default"
        (("generate", "--model", "", "--out", "{tmp}/o.png"), "{tmp}/o.png", "non-empty"),
        (("generate", "--out", ""), None, "non-empty"),
        (("generate", "--classes", "", "--out", "{tmp}/o.png"), "{tmp}/o.png", "non-empty"),
        (("generate", "--prompt", "", "--out", "{tmp}/o.png"), "{tmp}/o.png", "non-empty"),
        (("generate", "--device", "", "--out", "{tmp}/o.png"), "{tmp}/o.png", "non-empty"),
        (("eval", "--json", ""), None, "non-empty"),
        (("bench", "accel", "--out", ""), None, "non-empty"),
        (("bench", "compress", "--variants", "{tiny}", "--out", ""), None, "non-empty"),
        (("calibrate-teacache", "--out", ""), None, "non-empty"),
        (("train", "--preset", "shapes-tiny", "--out", ""), None, "non-empty"),
        (("eval", "--grid", "", "--json", "{tmp}/r.json"), "{tmp}/r.json", "non-empty"),
        (("tune", "--budget", "psnr>=30", "--json", ""), None, "non-empty"),
        (("quantize", "--report", "", "--out", "{tmp}/q"), "{tmp}/q", "non-empty"),
        (("info", "--model", ""), None, "non-empty"),
        (("info", "--preset", ""), None, "non-empty"),
        (("train", "--preset", ""), None, "non-empty"),
        (("convert", "", "{tmp}/c", "--to", "ditkit"), "{tmp}/c", "non-empty"),
    ]]
    return cases


def _conflict_cases() -> list[Case]:
    """Options that cannot go together, and options that do nothing without another: refused, never dropped."""
    g, v = ("generate", "--out", "{tmp}/o.png"), ("generate", "--video", "--out", "{tmp}/o.gif")
    q, p = ("quantize", "--out", "{tmp}/q"), ("prune", "--keep", "1", "--out", "{tmp}/p")
    rows = [
        ((*g, "--prompt", "a red circle", "--classes", "circle"), "cannot be used together"),
        ((*g, "--classes", "all", "--prompt", "a red circle"), "cannot be used together"),
        (("info", "--preset", "DiT-XL/2", "--model", "{tiny}"), "cannot be used together"),
        (("info", "--model", "{tiny}", "--preset", "DiT-S/2"), "cannot be used together"),
        (("train", "--list-presets", "--preset", "shapes-tiny"), "cannot be used together"),
        (("train", "--list-presets", "--steps", "3"), "cannot be used together"),
        (("train", "--list-presets", "--out", "{tmp}/run"), "cannot be used together"),
        ((*v, "--image", "{file}", "--first-frame-model", "{tiny}"), "not both"),
        ((*v, "--first-frame-redraws", "2"), "give that too"),
        ((*v, "--image-expert-scale", "2"), "--image-expert"),
        ((*v, "--i2v-guidance", "text"), "--image"),
        ((*v, "--ultravico-alpha", "0.5"), "--long-mode extrapolate"),
        ((*v, "--ultravico-alpha", "0.5", "--long-mode", "chunked"), "--long-mode extrapolate"),
        ((*v, "--long-mode", "chunked", "--overlap", "2"), "--long-mode rollout"),
        ((*v, "--long-mode", "extrapolate", "--context-noise", "0.3"), "--long-mode rollout"),
        ((*v, "--long-mode", "chunked", "--history-guidance", "1"), "--long-mode rollout"),
        (("eval", "--video", "--long-motions", "bounce", "--json", "{tmp}/r.json"), "--long-clips"),
        (("eval", "--video", "--long-motions", "bounce", "--long-clips", "0", "--json", "{tmp}/r.json"), "--long-clips"),
        (("eval", "--video", "--image-expert-scale", "2", "--json", "{tmp}/r.json"), "--image-expert"),
        (("eval", "--video", "--first-frame-redraws", "1", "--json", "{tmp}/r.json"), "--first-frame-model"),
        (("bench", "accel", "--no-classifier", "--classifier", "{tiny}", "--out", "{tmp}/b"), "cannot be used together"),
        (("bench", "accel", "--no-classifier", "--reference-samples", "5", "--out", "{tmp}/b"), "cannot be used"),
        (("tune", "--budget", "psnr>=30", "--no-classifier", "--reference-seed", "1", "--json", "{tmp}/t.json"),
         "cannot be used together"),
        (("bench", "compress", "--variants", "{tiny}", "--no-classifier", "--classifier", "{tiny}", "--out", "{tmp}/b"),
         "cannot be used together"),
        ((*q, "--no-smooth", "--alpha", "0.3"), "cannot be used together"),
        ((*q, "--calib-samples", "0", "--alpha", "0.3"), "--calib-samples > 0"),
        ((*q, "--calib-samples", "0", "--keep-sensitive", "2"), "--calib-samples > 0"),
        ((*q, "--calib-samples", "0", "--calib-steps", "4"), "--calib-samples > 0"),
        ((*q, "--calib-samples", "0", "--timestep-groups", "2"), "--calib-samples > 0"),
        ((*q, "--calib-samples", "0", "--sensitivity-inputs", "8"), "--calib-samples > 0"),
        ((*q, "--vq-steps", "5"), "vq scheme"),
        ((*q, "--scheme", "w4a8", "--vq-samples", "5"), "vq scheme"),
        ((*q, "--scheme", "w8a16", "--rotate", "64"), "w8a8 or w4a8"),
        ((*q, "--scheme", "w8a8", "--group-size", "64"), "4-bit scheme"),
        ((*p, "--method", "importance", "--group", "2"), "--method learned"),
        ((*p, "--method", "importance", "--search-steps", "5"), "--method learned"),
        ((*p, "--method", "importance", "--keep-update"), "--method learned"),
        ((*p, "--method", "importance", "--update", "full"), "--method learned"),
        ((*p, "--metric", "loss"), "--method importance"),
        ((*p, "--calib-batches", "3"), "--method importance"),
        ((*p, "--lr", "1e-3"), "fine-tuning"),
        ((*p, "--ema", "0.99"), "fine-tuning"),
        ((*p, "--kd-time", "low"), "fine-tuning"),
        ((*p, "--finetune-minutes", "0", "--hidden-kd", "1"), "fine-tuning"),
        ((*p, "--finetune-steps", "3", "--hidden-align", "next-input"), "--hidden-kd"),
        (("convert", "{tiny}", "{tmp}/c", "--to", "diffusers", "--source-format", "ditkit", "--num-heads", "2"),
         "reference checkpoint"),
        (("bench", "compress", "--variants", "{tiny}", "--full-samples", "{tmp}/f.pt", "--out", "{tmp}/b"),
         "--timing-samples"),
        ((*g, "--guidance-interval", "0,500", "--cfg-scale", "1"), "needs guidance"),
        (("eval", "--guidance-interval", "100,900", "--cfg-scale", "1", "--json", "{tmp}/r.json"), "needs guidance"),
        (("tune", "--budget", "psnr>=30", "--teacache", "{tmp}/missing.json", "--json", "{tmp}/t.json"),
         "no such file"),
        (("bench", "accel", "--teacache", "{tmp}/missing.json", "--out", "{tmp}/b"), "no such file"),
    ]
    return [Case(argv, _out_of(argv), line) for argv, line in rows]


def _out_of(argv: tuple[str, ...]) -> str | None:
    """The output path an argument list names (--out, --json), if any."""
    for flag in ("--out", "--json"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def _path_cases() -> list[Case]:
    """Missing inputs, a file where a folder is expected, and outputs the operating system refuses."""
    fast = ("--steps", "1", "--no-progress")
    rows = [
        # inputs that are not there
        ("generate", "--model", "{tmp}/nope", "--out", "{tmp}/o.png"),
        ("generate", "--video", "--model", "{tmp}/nope", "--prompt", "a red circle", "--out", "{tmp}/o.gif"),
        ("eval", "--model", "{tmp}/nope", "--json", "{tmp}/r.json"),
        ("info", "--model", "{tmp}/nope"),
        ("quantize", "--model", "{tmp}/nope", "--out", "{tmp}/q"),
        ("prune", "--model", "{tmp}/nope", "--keep", "1", "--out", "{tmp}/p"),
        ("export", "--run", "{tmp}/nope", "--out", "{tmp}/m"),
        ("convert", "{tmp}/nope", "{tmp}/c", "--to", "ditkit"),
        ("encode", "--data", "shapes", "--vae", "{tmp}/nope", "--out", "{tmp}/c"),
        ("encode", "--data", "{tmp}/nope", "--vae", "{ae}", "--out", "{tmp}/c"),
        ("tune", "--budget", "psnr>=30", "--model", "{tmp}/nope", "--json", "{tmp}/t.json"),
        ("bench", "accel", "--model", "{tmp}/nope", "--out", "{tmp}/b"),
        ("bench", "compress", "--variants", "{tmp}/nope", "--model", "{tiny}", "--out", "{tmp}/b"),
        ("calibrate-teacache", "--model", "{tmp}/nope", "--out", "{tmp}/t.json"),
        ("generate", "--model", "{tiny}", "--vae", "{tmp}/nope", *fast, "--out", "{tmp}/o.png"),
        ("train", "--preset", "no-such-recipe", "--out", "{tmp}/run"),
        ("info", "--preset", "DiT-Q/7"),
        # files that are not what they claim (read without executing anything)
        ("convert", "{junk}/random.pt", "{tmp}/c", "--to", "ditkit"),
        ("convert", "{junk}/zip.pt", "{tmp}/c", "--to", "ditkit"),
        ("convert", "{junk}/header.safetensors", "{tmp}/c", "--to", "ditkit"),
        ("convert", "{junk}/text.safetensors", "{tmp}/c", "--to", "ditkit"),
        ("convert", "{junk}/zip.pt", "{tmp}/c", "--to", "diffusers", "--source-format", "reference"),
        ("convert", "{junk}", "{tmp}/c", "--to", "ditkit"),
        ("generate", "--model", "{junk}", "--out", "{tmp}/o.png"),
        ("info", "--model", "{junk}"),
        ("generate", "--video", "--model", "{tiny}", "--prompt", "a red circle", "--out", "{tmp}/o.gif"),
        ("generate", "--video", "--image", "{junk}/random.pt", "--prompt", "a small red circle moving left on a blue "
         "background", "--out", "{tmp}/o.gif"),
        # a regular file where a folder is expected
        ("generate", "--model", "{file}", "--out", "{tmp}/o.png"),
        ("eval", "--model", "{file}", "--json", "{tmp}/r.json"),
        ("info", "--model", "{file}"),
        ("quantize", "--model", "{file}", "--out", "{tmp}/q"),
        ("prune", "--model", "{file}", "--keep", "1", "--out", "{tmp}/p"),
        ("export", "--run", "{file}", "--out", "{tmp}/m"),
        ("encode", "--data", "shapes", "--vae", "{file}", "--out", "{tmp}/c"),
        ("calibrate-teacache", "--model", "{file}", "--out", "{tmp}/t.json"),
        ("generate", "--model", "{tiny}", "--vae", "{file}", *fast, "--out", "{tmp}/o.png"),
        # an output under a regular file (ENOTDIR): refused with the path and the reason, nothing written
        ("generate", "--model", "{tiny}", *fast, "--n-per-class", "1", "--classes", "circle", "--out", "{file}/o.png"),
        ("quantize", "--model", "{tiny}", "--calib-samples", "0", "--out", "{file}/q"),
        ("prune", "--model", "{tiny}", "--keep", "1", "--method", "importance", "--calib-batches", "1",
         "--batch-size", "2", "--out", "{file}/p"),
        ("convert", "{tiny}", "{file}/c", "--to", "ditkit"),
        ("calibrate-teacache", "--model", "{tiny}", "--steps", "2", "--num-samples", "2", "--out", "{file}/t.json"),
        ("train", "--preset", "shapes-tiny", "--steps", "1", "--no-progress", "--out", "{file}/run"),
        ("encode", "--data", "shapes", "--vae", "{ae}", "--num", "2", "--quiet", "--out", "{file}/c"),
    ]
    return [Case(argv, _out_of(argv)) for argv in rows]


def _unwritable_cases() -> list[Case]:
    """Outputs in a folder that cannot be written ({locked}: read-only, or under a regular file where permissions
    do not bind, as for root)."""
    fast = ("--steps", "1", "--no-progress")
    rows = [
        ("generate", "--model", "{tiny}", *fast, "--n-per-class", "1", "--classes", "circle", "--out", "{locked}/o.png"),
        ("eval", "--model", "{tiny}", *fast, "--num-samples", "2", "--reference-samples", "2",
         "--json", "{locked}/r.json"),
        ("quantize", "--model", "{tiny}", "--calib-samples", "0", "--out", "{locked}/q"),
        ("calibrate-teacache", "--model", "{tiny}", "--steps", "2", "--num-samples", "2", "--out", "{locked}/t.json"),
        ("convert", "{tiny}", "{locked}/c", "--to", "ditkit"),
    ]
    return [Case(argv, _out_of(argv)) for argv in rows]


# model folders whose config.json lies (built from the tiny model by `places`): name -> (dotted key, value)
HOSTILE = {
    "nan-cfg": ("sampling.cfg_scale", float("nan")),
    "inf-cfg": ("sampling.cfg_scale", float("inf")),
    "negative-cfg": ("sampling.cfg_scale", -3.0),
    "nan-shift": ("sampling.shift", float("nan")),
    "huge-steps": ("sampling.steps", 10**9),
    "unknown-sampler": ("sampling.sampler", "warp"),
    "zero-heads": ("config.num_heads", 0),
    "negative-heads": ("config.num_heads", -2),
    "zero-patch": ("config.patch_size", 0),
    "float-depth": ("config.depth", 2.5),
    "null-width": ("config.hidden_size", None),
    "list-width": ("config.hidden_size", [64]),
    "negative-mlp": ("config.mlp_ratio", -1.0),
    "string-rope": ("config.use_rope", "yes"),
    "huge-width": ("config.hidden_size", 30_720),
    "string-classes": ("class_names", "circle,square"),
    "many-classes": ("class_names", [f"c{i}" for i in range(20_000)]),
    "unknown-process": ("process.type", "teleport"),
    "unknown-kind": ("kind", "ditkit-banana"),
    "absolute-autoencoder": ("autoencoder", {"path": "/etc"}),
    "outside-autoencoder": ("autoencoder", {"path": "../../.."}),
}


def _hostile_cases() -> list[Case]:
    cases = []
    for name in HOSTILE:
        cases.append(Case(("generate", "--model", "{hostile}/" + name, "--n-per-class", "1", "--classes", "0",
                           "--no-progress", "--out", "{tmp}/o.png"), "{tmp}/o.png"))
        if name != "huge-steps":  # info samples nothing
            cases.append(Case(("info", "--model", "{hostile}/" + name)))
    return cases


def _existing_output_cases() -> list[Case]:
    """A user's file or folder at the output path is never replaced without --overwrite; an output is never an
    input or inside one."""
    fast = ("--steps", "1", "--no-progress")
    rows = [
        (("generate", "--model", "{tiny}", *fast, "--n-per-class", "1", "--out", "{tmp}/mine.png"), "{tmp}/mine.png"),
        (("generate", "--video", "--prompt", "a red circle", *fast, "--out", "{tmp}/mine.gif"), "{tmp}/mine.gif"),
        (("eval", "--model", "{tiny}", *fast, "--num-samples", "2", "--json", "{tmp}/mine.json"), "{tmp}/mine.json"),
        (("eval", "--model", "{tiny}", *fast, "--num-samples", "2", "--grid", "{tmp}/mine.png"), "{tmp}/mine.png"),
        (("tune", "--model", "{tiny}", "--budget", "psnr>=30", "--json", "{tmp}/mine.json"), "{tmp}/mine.json"),
        (("calibrate-teacache", "--model", "{tiny}", "--steps", "2", "--out", "{tmp}/mine.json"), "{tmp}/mine.json"),
        (("quantize", "--model", "{tiny}", "--calib-samples", "0", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("quantize", "--model", "{tiny}", "--calib-samples", "0", "--out", "{tmp}/q", "--report", "{tmp}/mine.json"),
         "{tmp}/mine.json"),
        (("prune", "--model", "{tiny}", "--keep", "1", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("export", "--run", "{tmp}/mine/", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("train-classifier", "--steps", "1", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("train-classifier", "--steps", "1", "--out", "{tmp}/mine.txt"), "{tmp}/mine.txt"),  # a file for a folder
        (("bench", "accel", "--model", "{tiny}", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("bench", "compress", "--model", "{tiny}", "--variants", "{tiny}", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("encode", "--data", "shapes", "--vae", "{ae}", "--num", "2", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        (("convert", "{tiny}", "{tmp}/mine/", "--to", "ditkit"), "{tmp}/mine/"),
        (("train", "--preset", "shapes-tiny", "--steps", "1", "--out", "{tmp}/mine/"), "{tmp}/mine/"),
        # an output that is an input, or lies inside one
        (("quantize", "--model", "{tmp}/model", "--calib-samples", "0", "--out", "{tmp}/model", "--overwrite"),
         "{tmp}/model/"),
        (("eval", "--model", "{tmp}/model", *fast, "--num-samples", "2", "--json", "{tmp}/model/config.json",
          "--overwrite"), "{tmp}/model/"),
        (("generate", "--model", "{tmp}/model", *fast, "--n-per-class", "1", "--out", "{tmp}/model/model.safetensors",
          "--overwrite"), "{tmp}/model/"),
        (("prune", "--model", "{tmp}/model", "--keep", "1", "--out", "{tmp}/model", "--overwrite"), "{tmp}/model/"),
        (("convert", "{tmp}/model", "{tmp}/model", "--to", "ditkit", "--overwrite"), "{tmp}/model/"),
        (("export", "--run", "{tmp}/model", "--out", "{tmp}/model", "--overwrite"), "{tmp}/model/"),
    ]
    return [Case(argv, existing=existing) for argv, existing in rows]


CASES = _numeric_cases() + _usage_cases() + _conflict_cases() + _path_cases() + _unwritable_cases() + _hostile_cases()
CASES += _existing_output_cases()

def _resource_cases() -> list[Case]:
    """Requests beyond the machine, each option within its own range: refused before the work, in seconds."""
    rows = [
        (("generate", "--n-per-class", "10000", "--steps", "10000", "--out", "{tmp}/o.png"), ""),
        (("generate", "--video", "--frames", "4096", "--n-per-class", "10000", "--prompt",
          "a small red circle moving left on a blue background", "--no-progress", "--out", "{tmp}/o.gif"), ""),
        (("eval", "--num-samples", "100000", "--steps", "10000", "--json", "{tmp}/r.json"), ""),
        (("generate", "--model", "{tiny}", "--n-per-class", "10000", "--steps", "10000", "--out", "{tmp}/o.png"), ""),
        (("quantize", "--model", "{tiny}", "--calib-samples", "100000", "--calib-steps", "10000", "--out", "{tmp}/q"), ""),
        (("bench", "accel", "--model", "{tiny}", "--num-samples", "100000", "--steps", "10000", "--out", "{tmp}/b"), ""),
        (("tune", "--model", "{tiny}", "--budget", "psnr>=30", "--num-samples", "100000", "--steps", "10000",
          "--json", "{tmp}/t.json"), ""),
        (("calibrate-teacache", "--model", "{tiny}", "--num-samples", "100000", "--steps", "10000",
          "--out", "{tmp}/t.json"), ""),
        (("encode", "--data", "shapes", "--vae", "{ae}", "--image-size", "4096", "--batch-size", "65536",
          "--out", "{tmp}/c"), ""),
    ]
    return [Case(argv, _out_of(argv), seconds=20.0, pending=pending) for argv, pending in rows]


CASES += _resource_cases()


def _id(case: Case) -> str:
    return " ".join(a if a else "''" for a in case.argv)[:120]


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("corpus")
    file = root / "a-file"
    file.write_text("not a folder\n")
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:  # where permissions do not bind (root), a path under a regular file stands in for a read-only folder
        (locked / ".probe").write_text("")
        (locked / ".probe").unlink()
        locked = file
    except OSError:
        pass
    junk = root / "junk"
    junk.mkdir()
    (junk / "random.pt").write_bytes(bytes(range(256)) * 4)
    (junk / "zip.pt").write_bytes(b"PK\x03\x04not a zip archive")
    (junk / "header.safetensors").write_bytes(b"{}")
    (junk / "text.safetensors").write_bytes(b"\xff" * 8 + b"not json")
    hostile = root / "hostile"
    for name, (key, value) in HOSTILE.items():
        shutil.copytree(tiny_model_dir, hostile / name)
        config = json.loads((hostile / name / "config.json").read_text())
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
        (hostile / name / "config.json").write_text(json.dumps(config))
    yield {"tiny": str(tiny_model_dir), "file": str(file), "locked": str(locked), "ae": str(assets_dir() / "shapes-ae"),
           "hostile": str(hostile), "junk": str(junk)}
    (root / "locked").chmod(0o755)


def _make_existing(path: Path, tiny: str) -> None:
    """A user's file, folder (``.../mine/``) or model folder (``.../model/``, a copy of the tiny model)."""
    if path.name == "model":
        shutil.copytree(tiny, path)
    elif str(path).endswith("mine"):
        path.mkdir()
        (path / "keep.txt").write_text("the user's own\n")
    else:
        path.write_bytes(b"the user's own\n")


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def _expand(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def test_the_corpus_is_large_and_covers_every_subcommand():
    commands = {c.command for c in CASES if c.argv}
    assert len(CASES) >= 400
    assert {"generate", "eval", "train", "export", "train-classifier", "convert", "tune", "calibrate-teacache",
            "bench accel", "bench compress", "encode", "quantize", "prune", "info"} <= commands


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=_id(c), marks=[pytest.mark.xfail(strict=True, run=False, reason=c.pending)]
                         if c.pending else []) for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_is_one_line_and_exit_2(case, places, tmp_path, capsys, monkeypatch):
    values = {**places, "tmp": str(tmp_path)}
    argv = [_expand(a, values) for a in case.argv]
    out = Path(_expand(case.out, values)) if case.out else None
    monkeypatch.chdir(tmp_path)  # a default output lands in the case's own folder
    existing = Path(_expand(case.existing, values)) if case.existing else None
    if existing is not None:
        _make_existing(existing, places["tiny"])
        kept = _snapshot(existing)
    before = sorted(os.listdir(tmp_path))
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # --help and --version only; anything else is a failure here
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert case.line in lines[0], lines[0]
    if case.seconds is not None:
        assert time.perf_counter() - start < case.seconds, "refused too late"
    if out is not None:
        assert not out.exists(), f"{out} was written"
    assert sorted(os.listdir(tmp_path)) == before, "files were left in the working folder"
    if existing is not None:
        assert _snapshot(existing) == kept, f"{existing} was changed"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                                  errno.ENOENT, errno.ENAMETOOLONG, errno.EPERM, errno.EXDEV])
def test_what_the_system_refuses_is_one_line_with_the_path(code, capsys, monkeypatch):
    """Read-only or full disks, no permission, a file where a folder should be: the path and the reason, exit 2."""
    import ditkit.cli.info

    def refuse(args):
        raise OSError(code, os.strerror(code), "/data/out/samples.png")

    monkeypatch.setattr(ditkit.cli.info, "cmd_info", refuse)
    assert main(["info"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"ditkit info: error: /data/out/samples.png: {os.strerror(code)}"]


def test_a_failed_rename_names_both_paths_and_a_bug_is_exit_1(capsys, monkeypatch):
    import ditkit.cli.info

    def rename(args):
        os.rename("/nonexistent/a", "/nonexistent/b")

    monkeypatch.setattr(ditkit.cli.info, "cmd_info", rename)
    assert main(["info"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ditkit info: error: /nonexistent/a -> /nonexistent/b: {os.strerror(errno.ENOENT)}"]

    def bug(args):
        raise RuntimeError("an index went wrong")

    monkeypatch.setattr(ditkit.cli.info, "cmd_info", bug)
    monkeypatch.delenv("DITKIT_DEBUG", raising=False)
    assert main(["info"]) == 1  # exit 1 is ditkit's own bug, never bad input
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ditkit info: internal error: RuntimeError: an index went wrong")


def test_help_alone_prints_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: ditkit generate")
    assert main(["generate", "--steps", "-3"]) == 2
    err = capsys.readouterr().err
    assert "usage:" not in err and err.splitlines() == [
        "ditkit generate: error: argument --steps: expected a positive integer (at most 10,000), got -3 "
        "(see ditkit generate --help)"]


def _draw(rng: random.Random) -> str:
    """A value a careless or hostile user might type for a number."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(["nan", "NaN", "-nan", "inf", "+inf", "-Infinity", "1e309", "-1e309", "0x10", "1_000", " 7 ",
                           "", " ", "1,2", "٣", "1e-400", "--", "None", "true"])
    if kind == 1:
        return str(rng.randint(-10**15, 10**15))
    if kind == 2:
        return str(rng.randint(-3, 300))
    if kind == 3:
        return repr(rng.uniform(-2, 2) * 10 ** rng.randint(-12, 14))
    if kind == 4:
        return f"{rng.uniform(-5, 1500):.3g},{rng.uniform(-5, 1500):.3g}"
    return "".join(rng.choice("0123456789.-+eE,") for _ in range(rng.randint(1, 6)))


def test_random_option_values_parse_finite_and_bounded_or_are_refused_in_one_line():
    """Seeded fuzz over every numeric option of every subcommand: a value is either refused (one line, no traceback)
    or parsed to finite numbers no larger than the sane ceilings of `ditkit.cli_types`."""
    import math

    from ditkit.cli import build_parser
    from ditkit.cli.parser import UsageError

    rng = random.Random(46)
    options = [(prefix, option) for prefix, _, opts in COMMANDS.values() for option in opts]
    dummies = {"tmp": "/nonexistent/ditkit-fuzz", "tiny": "tiny", "ae": "ae"}
    refused = accepted = 0
    for _ in range(400):
        prefix, option = rng.choice(options)
        value = _draw(rng)
        argv = [_expand(a, dummies) for a in prefix] + [option, value]
        try:
            args = build_parser().parse_args(argv)
        except UsageError as e:
            refused += 1
            assert "\n" not in str(e) and option in str(e), (argv, str(e))
            continue
        accepted += 1
        parsed = getattr(args, option.lstrip("-").replace("-", "_"))
        numbers = list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) and abs(v) <= 2**32 for v in numbers), (argv, parsed)
    assert refused > 100 and accepted > 20  # both sides of the boundary are exercised
