"""Rollout settings side by side on the long-video measure (`ditkit.eval.video.consistency`).

Clips of 4x the window on held-out captions whose shape stays in view (bounce, rotate, color), the
same prompts and seeds for every setting; per-window shape accuracy and frame-to-frame consistency.

    python scripts/long_video_sweep.py --model assets/shapes-t2v --clips 24 --device cuda \
        --settings "hg0,hg1,hg2,hg4,hg2-ov6" --json out.json

A setting is dash-joined parts: ``hgW`` history guidance W, ``ovK`` overlap K, ``cnX`` context noise X,
``cfgW`` text guidance W, ``ieW`` image-expert guidance W from ``--image-expert`` (default
assets/shapes-t2i, each clip's first frame caption as its prompt), ``chunked`` the chunk-by-chunk baseline.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ditkit.assets import default_classifier_dir
from ditkit.eval.video import consistency, held_out_clips
from ditkit.pipelines import load_video_pipeline
from ditkit.shapes.classifier import load_classifier
from ditkit.shapes.moving import image_caption


def parse(setting: str) -> dict:
    opts: dict = {"long_mode": "rollout"}
    for part in setting.split("-"):
        if part == "chunked":
            opts["long_mode"] = "chunked"
        elif part.startswith("hg"):
            opts["history_guidance"] = float(part[2:])
        elif part.startswith("ov"):
            opts["overlap"] = int(part[2:])
        elif part.startswith("cn"):
            opts["context_noise"] = float(part[2:])
        elif part.startswith("cfg"):
            opts["cfg_scale"] = float(part[3:])
        elif part.startswith("ie"):
            opts["image_expert_scale"] = float(part[2:])
        else:
            raise SystemExit(f"unknown setting part {part!r}")
    return opts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="assets/shapes-t2v")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--steps", type=int)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--motions", default="bounce,rotate,color")
    p.add_argument("--settings", default="hg0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--image-expert", default="assets/shapes-t2i", help="the text-to-image model of ieW settings")
    p.add_argument("--json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = load_video_pipeline(a.model, device=a.device)
    clf = load_classifier(default_classifier_dir())
    window = pipe.config.num_frames
    data = held_out_clips(8 * a.clips, window, pipe.frame_shape[1])
    motions = set(a.motions.split(","))
    specs = [s for s in (data.clip(i) for i in range(len(data))) if s.motion in motions][: a.clips]
    prompts, labels = [s.caption(pipe.caption_style) for s in specs], torch.tensor([s.label for s in specs])
    image_prompts = [s.first.caption() for s in specs]  # the image model's own caption style, as ditkit eval
    expert = None
    results = {}
    for setting in a.settings.split(","):
        opts = parse(setting)
        if "image_expert_scale" in opts:
            if expert is None:
                from ditkit.pipelines import load_pipeline

                expert = load_pipeline(a.image_expert, device=a.device)
            opts.update(image_expert=expert, image_prompts=image_prompts, caption_for_image=image_caption)
        t0 = time.time()
        clips = pipe.generate(prompts, frames=a.factor * window, steps=a.steps, **opts)
        r = consistency(clf, clips, labels, window)
        r["seconds"] = round(time.time() - t0, 1)
        results[setting] = r
        print(setting, "by window", [round(v * 100, 1) for v in r["shape_accuracy_by_window"]],
              f"whole {r['shape_accuracy_whole_clip'] * 100:.1f}  consecutive PSNR {r['consecutive_psnr_mean']:.1f} dB "
              f"(worst {r['consecutive_psnr_worst']:.1f})  {r['seconds']} s", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"model": a.model, "clips": len(specs), "motions": sorted(motions), "steps": a.steps,
                           "image_expert": a.image_expert if expert is not None else None,
                           "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
