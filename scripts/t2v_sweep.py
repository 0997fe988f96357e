"""Variants of the one-command text-to-video recipe, trained and evaluated side by side on a GPU.

Chooses a recipe at the step count of the CPU command: ``BASE`` is that recipe (3,000 steps from
assets/shapes-t2i, one frame per token; the bundled assets/shapes-t2v recipe grew out of it), and each
variant changes a few of its fields. On CUDA the recipes' bf16 flag turns on autocast, so figures match a
CPU run in recipe, not bit for bit. ``s5``/``s5lr`` continue a stage-4 model of the staged recipe
(``STAGE5``). ``scripts/gpu_t2v.sh`` runs several variants at once.

    python scripts/t2v_sweep.py train NAME OUT_DIR [--max-minutes M]
    python scripts/t2v_sweep.py eval OUT_DIR RESULT_JSON NAME [NAME ...] [--device cuda]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from ditkit.config import get_preset
from ditkit.diffusion.flow import FlowConfig
from ditkit.models.text_encoder import WordEncoderConfig
from ditkit.shapes.moving import DIRECTIONS, MOTIONS
from ditkit.train.repa import RepaConfig
from ditkit.train.trainer import TrainConfig
from ditkit.train.video import VideoTrainConfig

_WORDS = WordEncoderConfig(dim=128, depth=2, num_heads=2, max_length=16)
_CLIPS = VideoTrainConfig(frame_embed=True, cross_attention=True, context_noise=0.2, motions=(*DIRECTIONS, *MOTIONS))

# The one-command recipe: high-noise training times, directional motions twice as often, re-noised context,
# attention frame-local for the first 1,000 steps; 3,000 steps of 16 clips from assets/shapes-t2i.
BASE = TrainConfig(
    model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal", train_shift=3.0),
    steps=3_000, batch_size=16, lr=1e-3, warmup_steps=200, lr_schedule="cosine",
    log_every=25, ckpt_every=100, snapshot_every=500, ema_decay=0.999,
    autoencoder="assets/shapes-ae", text_encoder=_WORDS, init_from="assets/shapes-t2i",
    video=dataclasses.replace(_CLIPS, frame_local_steps=1_000),
)
VARIANTS = {
    "one": {},
    "one3k": {"steps": 3000},
    "init": {"steps": 1, "lr": 0.0},  # the initialisation from shapes-t2i, untrained (a diagnostic)
    "loc1k": {"steps": 3000, "video": {"frame_local_steps": 1000}},
    "loc2k": {"steps": 3000, "video": {"frame_local_steps": 2000}},
    "loc1k-lr1e3": {"steps": 3000, "lr": 1e-3, "video": {"frame_local_steps": 1000}},
    "loc3k": {"steps": 3000, "video": {"frame_local_steps": 3000}},
    "loc500-lr7e4": {"steps": 3000, "lr": 7e-4, "video": {"frame_local_steps": 500}},
    "loc1k-lr15e4": {"steps": 3000, "lr": 1.5e-3, "video": {"frame_local_steps": 1000}},
    "loc1k-lr1e3-pf15": {"steps": 3000, "lr": 1e-3,
                         "video": {"frame_local_steps": 1000, "per_frame_prob": 0.15, "context_prob": 0.15}},
    "img": {"video": {"caption_style": "image-first"}},  # captions that start with the image model's own
    "img-lr5e4": {"lr": 5e-4, "video": {"caption_style": "image-first"}},
    "img-lr5e4-loc0": {"lr": 5e-4, "video": {"caption_style": "image-first", "frame_local_steps": 0}},
    "sized": {"video": {"caption_style": "sized"}},
    "lr1e3": {"lr": 1e-3},
    "pf01": {"video": {"per_frame_prob": 0.1}},
    "shift2": {"flow": {"train_shift": 2.0}},
    "ctx05": {"video": {"context_prob": 0.5}},
    # per-frame REPA with the shapes encoder (as the bundled image model was trained), for shape accuracy
    "repa3": {"repa": RepaConfig(depth=3)},
    "img-repa3": {"repa": RepaConfig(depth=3), "video": {"caption_style": "image-first"}},
    # two frames per token: half the tokens, about half the CPU time per step
    "pt2": {"video": {"temporal_patch": 2}},
}


# Stage 5 of the staged recipe: 3,000 more steps from a stage-4 model folder (STAGE4_DIR; assets/shapes-t2v at
# commit aef3ebb is one: `git worktree add S aef3ebb`, then STAGE4_DIR=S/assets/shapes-t2v).
STAGE5 = TrainConfig(
    model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal", train_shift=3.0),
    steps=3_000, batch_size=16, lr=3e-4, warmup_steps=50, lr_schedule="cosine",
    log_every=25, ckpt_every=100, snapshot_every=500, ema_decay=0.999,
    autoencoder="assets/shapes-ae", text_encoder=_WORDS,
    init_from=os.environ.get("STAGE4_DIR", "<stage-4 model folder: set STAGE4_DIR>"), video=_CLIPS,
)
FULL = {"s5": STAGE5, "s5lr": dataclasses.replace(STAGE5, lr=1.5e-4)}


def variant(name: str):
    if name in FULL:
        return FULL[name]
    cfg = BASE
    for key, value in VARIANTS[name].items():
        value = dataclasses.replace(getattr(cfg, key), **value) if isinstance(value, dict) else value
        cfg = dataclasses.replace(cfg, **{key: value})
    return cfg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "eval"])
    p.add_argument("args", nargs="+")
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--device", default="cuda")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--long-clips", type=int, default=8)
    p.add_argument("--local", action="store_true", help="also score text-to-video with frame-local attention")
    a = p.parse_args()
    if a.mode == "train":
        from ditkit.train.trainer import Trainer

        name, out = a.args
        res = Trainer(variant(name), Path(out) / name, progress=False).run(
            max_seconds=None if a.max_minutes is None else a.max_minutes * 60)
        print(name, res)
        return
    from ditkit.assets import default_classifier_dir
    from ditkit.eval.video import evaluate_video
    from ditkit.pipelines import SamplingDefaults, load_video_pipeline
    from ditkit.shapes.classifier import load_classifier
    from ditkit.train.export import export_run

    out, result_json, *names = a.args
    clf = load_classifier(default_classifier_dir()).to(a.device)
    results = {}
    for name in names:
        run = Path(out) / name
        folder = Path(out) / f"{name}-model"
        summary = export_run(run, folder, defaults=SamplingDefaults(cfg_scale=4.0), dtype="float16")
        pipe = load_video_pipeline(folder, device=a.device)
        t0 = time.time()
        r = evaluate_video(pipe, clf, num_clips=a.num_samples, long_clips=a.long_clips, context_noise=0.0)
        if a.long_clips:
            r["long_video_ctx01"] = evaluate_video(pipe, clf, num_clips=a.long_clips, long_clips=a.long_clips,
                                                   i2v=False, context_noise=0.1)["long_video"]
        if a.local:
            from ditkit.train.video import FrameLocalBias
            # evaluate_video passes no attention core to generate: the model's default core is set around it
            pipe.model.attention_core = FrameLocalBias(1e4)
            r["text_to_video_frame_local"] = evaluate_video(pipe, clf, num_clips=a.num_samples, long_clips=0,
                                                            i2v=False)["text_to_video"]
            pipe.model.attention_core = None
            print(name, "frame-local shape", r["text_to_video_frame_local"]["shape_accuracy_per_frame"])
        r["steps_trained"] = summary["steps"]
        r["eval_seconds"] = round(time.time() - t0, 1)
        results[name] = r
        t2v, lv = r["text_to_video"], r.get("long_video", {})
        print(name, summary["steps"], "shape", round(t2v["shape_accuracy_per_frame"], 3), "dir",
              t2v["direction_accuracy"], "i2v", round(r["image_to_video"]["first_frame_psnr"], 1),
              {k: (round(v["shape_accuracy_first_window"], 3), round(v["shape_accuracy_whole_clip"], 3))
               for k, v in lv.items() if isinstance(v, dict)},
              "ctx0.1", {k: (round(v["shape_accuracy_first_window"], 3), round(v["shape_accuracy_whole_clip"], 3))
                         for k, v in r.get("long_video_ctx01", {}).items() if isinstance(v, dict)}, flush=True)
        Path(result_json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False
    main()
