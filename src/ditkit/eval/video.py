"""Video evaluation: content and motion adherence, image-to-video fidelity, long-video consistency.

All on captions of held-out moving-shape clips (`MovingShapesDataset` with ``seed`` ≠ training's 0):

* **adherence** — text-to-video clips of the window length (and, as the ceiling of the measures, the
  real held-out clips themselves: the classifier reads about 85 % of real moving-shape frames right).
  *Per-frame shape accuracy*: the bundled classifier (`ditkit.shapes.classifier`) on every frame,
  against the caption's shape. *Motion-direction accuracy*: on the clips whose caption moves left /
  right / up / down, the direction read from pixels by `ditkit.shapes.moving.track_motion`
  (tracked centroid) equals the caption's.
* **image-to-video** — the first frames of the held-out clips given as images; PSNR of the decoded
  first frame against the given image (frame replacement keeps it up to the autoencoder's round trip),
  plus the same adherence figures for the generated clips.
* **long video** — clips of ``factor`` x the window by diffusion-forcing rollout and by independent
  chunks (the baseline), same prompts and seeds. Per-frame shape accuracy of the first window and of
  the whole clip; frame-to-frame consistency as the mean PSNR between consecutive frames (higher is
  steadier), its minimum over the clip (the worst jump, e.g. at a chunk boundary), and the fraction of
  consecutive frames whose classified shape changes.
"""

from __future__ import annotations

import torch

from ..io.progress import RunBar
from ..shapes.moving import DIRECTIONS, MovingShapesDataset, first_frame_fits, image_caption, track_motion
from .metrics import _run, psnr

HELD_OUT_SEED = 4000  # dataset seed of the evaluation captions (training uses seed 0)


def held_out_clips(num: int, frames: int, image_size: int, seed: int = HELD_OUT_SEED) -> MovingShapesDataset:
    return MovingShapesDataset(num, seed=seed, frames=frames, image_size=image_size, labels=list(range(10)))


@torch.no_grad()
def _frame_predictions(classifier, clips: torch.Tensor) -> torch.Tensor:
    """Clips (N, F, 3, H, W) -> predicted class per frame (N, F)."""
    n, f = clips.shape[:2]
    _, logits = _run(classifier, clips.flatten(0, 1), 256)  # (N*F, K)
    return logits.argmax(1).reshape(n, f)


def adherence(classifier, clips: torch.Tensor, labels: torch.Tensor, motions: list[str]) -> dict:
    """Per-frame shape accuracy and motion-direction accuracy of clips (N, F, 3, H, W) against their captions."""
    pred = _frame_predictions(classifier, clips)  # (N, F)
    per_frame = (pred == labels[:, None]).float()  # (N, F)
    directional = [i for i, m in enumerate(motions) if m in DIRECTIONS]
    read = [track_motion(clips[i]).direction for i in directional]
    hits = [r == motions[i] for r, i in zip(read, directional)]
    return {
        "clips": len(clips),
        "frames": clips.shape[1],
        "shape_accuracy_per_frame": per_frame.mean().item(),
        "shape_accuracy_by_frame": [round(v, 4) for v in per_frame.mean(0).tolist()],
        "direction_clips": len(directional),
        "direction_accuracy": sum(hits) / len(hits) if hits else None,
        "direction_read": {d: read.count(d) for d in (*DIRECTIONS, "none")},
    }


def consistency(classifier, clips: torch.Tensor, labels: torch.Tensor, window: int) -> dict:
    """Accuracy over the first window and the whole clip, and frame-to-frame consistency."""
    pred = _frame_predictions(classifier, clips)  # (N, F)
    correct = (pred == labels[:, None]).float()
    step = psnr(clips[:, 1:].flatten(0, 1), clips[:, :-1].flatten(0, 1)).reshape(len(clips), -1)  # (N, F-1) dB
    step = step.clamp(max=60.0)  # identical frames give inf; 60 dB is "no visible change"
    return {
        "frames": clips.shape[1],
        "shape_accuracy_first_window": correct[:, :window].mean().item(),
        "shape_accuracy_whole_clip": correct.mean().item(),
        "shape_accuracy_by_window": [round(correct[:, i:i + window].mean().item(), 4)
                                     for i in range(0, clips.shape[1], window)],
        "consecutive_psnr_mean": step.mean().item(),
        "consecutive_psnr_worst": step.min(1).values.mean().item(),  # per clip, then averaged
        "class_switch_rate": (pred[:, 1:] != pred[:, :-1]).float().mean().item(),
    }


def evaluate_video(pipe, classifier, *, num_clips: int = 100, steps: int | None = None,
                   cfg_scale: float | None = None, seed: int = 0, batch_size: int = 16, long_clips: int = 0,
                   long_factor: int = 4, i2v: bool = True, data_seed: int = HELD_OUT_SEED, context_noise: float = 0.0,
                   long_motions: tuple[str, ...] | None = None, history_guidance: float = 0.0,
                   overlap: int | None = None, image_expert=None, image_expert_scale: float = 1.0, ar_step: int = 0,
                   first_frame_model=None, first_frame_redraws: int = 0, log=print,
                   progress: bool | None = None) -> dict:
    """The three measurements above for a `VideoPipeline`; ``long_clips`` = 0 skips the long video.

    ``long_motions``: the long clips are the first held-out clips with these motions (e.g. the ones
    whose shape stays in view however long the clip: bounce, rotate, color); default the first ones.
    ``history_guidance``, ``overlap``: the rollout's; ``image_expert`` (a text-to-image `Pipeline`) and
    ``image_expert_scale``: image-expert guidance of every sample, ``ar_step``: the asynchronous schedule of
    every sample (`VideoPipeline.generate`). ``first_frame_model`` (a text-to-image `Pipeline`): factorized
    text-to-video, each clip's first frame drawn by it and continued as image-to-video (``first_frame_redraws``:
    frames without room for the caption's motion drawn again, `VideoPipeline.generate`); text-to-video only
    (image-to-video has its given frames, and the long-video baseline, chunk by chunk, takes no first image).
    The image expert and the first-frame model read each clip's first frame described as the text-to-image
    model was trained (`ShapeSpec.caption`, with the size word), whatever the video model's caption style.
    ``progress``: one bar on stderr over every generation of the evaluation (the sum of their bars'
    counts, `VideoPipeline.progress_total`; None: only on a terminal). The resolved options of each generation
    are recorded (``options``, `VideoPipeline.last_options`)."""
    window = pipe.config.num_frames
    _, h, w = pipe.frame_shape
    data = held_out_clips(num_clips, window, h, data_seed)
    specs = [data.clip(i) for i in range(num_clips)]
    prompts = [s.caption(pipe.caption_style) for s in specs]
    labels = torch.tensor([s.label for s in specs])
    motions = [s.motion for s in specs]
    opts = dict(steps=steps, cfg_scale=cfg_scale, seed=seed, batch_size=batch_size, image_expert_scale=image_expert_scale,
                ar_step=ar_step)
    parts = dict(image_expert=image_expert, caption_for_image=image_caption)
    result = {"held_out": f"{num_clips} moving-shape clips (seed {data_seed}), classes balanced",
              "window": window, "steps": steps or pipe.defaults.steps,
              "cfg_scale": pipe.defaults.cfg_scale if cfg_scale is None else cfg_scale}
    if image_expert is not None:
        result["image_expert_scale"] = image_expert_scale
    if ar_step:
        result["ar_step"] = ar_step
    if first_frame_model is not None:
        result["factorized"] = "text-to-video's first frames drawn by a text-to-image model, then image-to-video"
        if first_frame_redraws:
            result["first_frame_redraws"] = first_frame_redraws
    pick, long_opts = [], {}
    if long_clips:
        pick = [i for i, m in enumerate(motions) if long_motions is None or m in long_motions][:long_clips]
        if not pick:
            raise ValueError(f"no held-out clip among the first {num_clips} has a motion in {long_motions}")
        long_opts = {name: dict(opts, frames=long_factor * window, long_mode=name,
                                **({"context_noise": context_noise, "history_guidance": history_guidance,
                                    "overlap": overlap} if name == "rollout" else {}))
                     for name in ("rollout", "chunked")}
    t2v_opts = dict(opts, first_frame_redraws=first_frame_redraws if first_frame_model is not None else 0)
    totals = [pipe.progress_total(num_clips, first_frame_model=first_frame_model, **t2v_opts)]
    totals += [pipe.progress_total(num_clips, image=True, **opts)] if i2v else []
    totals += [pipe.progress_total(len(pick), **o) for o in long_opts.values()]
    total = None if None in totals else sum(totals)
    real = torch.stack([data[i][0] for i in range(num_clips)])  # (N, F, 3, H, W): the measures' ceiling
    result["real_clips"] = adherence(classifier, real, labels, motions)
    image_prompts = [s.first.caption() for s in specs]
    with RunBar(total, "eval video", progress) as bar:
        say = bar.above(log)
        say(f"text-to-video: {num_clips} clips of {window} frames ...")
        clips = pipe.generate(prompts, first_frame_model=first_frame_model, image_prompts=image_prompts,
                              first_frame_check=first_frame_fits, bar=bar, **parts, **t2v_opts)
        result["options"] = pipe.last_options.as_dict()
        result["text_to_video"] = adherence(classifier, clips, labels, motions)
        if i2v:
            say("image-to-video from the held-out clips' first frames ...")
            firsts = real[:, 0]  # (N, 3, H, W)
            out = pipe.generate(prompts, image=firsts, image_prompts=image_prompts, bar=bar, **parts, **opts)
            result["image_to_video"] = {
                "first_frame_psnr": psnr(out[:, 0], firsts).mean().item(),
                "autoencoder_round_trip_psnr": psnr(pipe.decode(pipe.encode_frames(firsts))[:, 0], firsts).mean().item(),
                **adherence(classifier, out, labels, motions), "options": pipe.last_options.as_dict(),
            }
        if long_clips:
            frames = long_factor * window
            say(f"long video: {len(pick)} clips of {frames} frames, rollout and chunk by chunk ...")
            long = {}
            for name, o in long_opts.items():
                out = pipe.generate([prompts[i] for i in pick], image_prompts=[image_prompts[i] for i in pick], bar=bar,
                                    **parts, **o)
                long[name] = {**consistency(classifier, out, labels[pick], window), "options": pipe.last_options.as_dict()}
            result["long_video"] = {"frames": frames, "clips": len(pick), "context_noise": context_noise,
                                    "history_guidance": history_guidance, "overlap": overlap,
                                    "motions": [motions[i] for i in pick], **long}
    return result
