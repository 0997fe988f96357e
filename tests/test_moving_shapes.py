"""Moving-shape clips and the pixel-level motion check."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ditkit.shapes.data import CLASSES, COLOR_NAMES
from ditkit.shapes.moving import (
    DIRECTIONS,
    MOTIONS,
    MovingShapesDataset,
    caption_direction,
    first_frame_fits,
    sample_clip,
    track_motion,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_clips_are_deterministic_and_shaped():
    a, b = MovingShapesDataset(6, seed=1, frames=8), MovingShapesDataset(6, seed=1, frames=8)
    clip, label, motion = a[3]
    assert clip.shape == (8, 3, 32, 32) and clip.dtype == torch.float32 and -1 <= clip.min() and clip.max() <= 1
    assert torch.equal(clip, b[3][0]) and (label, motion) == b[3][1:]
    assert a.caption(3) == b.caption(3)
    assert not torch.equal(MovingShapesDataset(6, seed=2, frames=8)[3][0], clip)
    pixels, labels, motions = a.materialize()
    assert pixels.shape == (6, 8, 32, 32, 3) and pixels.dtype == torch.uint8
    assert labels.tolist() == [a[i][1] for i in range(6)] and motions.tolist() == [a[i][2] for i in range(6)]


def test_captions_name_shape_colour_and_motion():
    ds = MovingShapesDataset(70, seed=0)
    seen = set()
    for i in range(len(ds)):
        clip = ds.clip(i)
        cap = ds.caption(i)
        seen.add(clip.motion)
        assert CLASSES[clip.label] in cap and clip.first.color in cap and clip.first.background in cap
        phrase = {"bounce": "bouncing", "rotate": "rotating", "color": f"turning {clip.color_to}"}.get(
            clip.motion, f"moving {clip.motion}")
        assert phrase in cap
        assert cap.startswith("an " if clip.first.color[0] in "aeiou" else "a ")
        if clip.motion == "rotate":
            assert CLASSES[clip.label] not in ("circle", "ring")
    assert seen == set(MOTIONS)


def test_caption_styles_reuse_the_image_caption():
    ds = MovingShapesDataset(40, seed=3, frames=8)
    for i in range(len(ds)):
        clip, plain = ds.clip(i), ds.caption(i)
        phrase = plain.split(f" {clip.first.name} ")[1].split(" on a ")[0]  # "moving left", "turning red", ...
        assert MovingShapesDataset(40, seed=3, frames=8, caption_style="image-first").caption(i) == \
            f"{clip.first.caption()} {phrase}"  # "a small red circle on a blue background moving left"
        sized = clip.caption("sized")
        assert sized.split()[1] in ("small", "medium", "large") and sized.split()[1] in clip.first.caption()
        assert sized.replace(f" {sized.split()[1]} ", " ", 1).split(" ", 1)[1] == plain.split(" ", 1)[1]
    with pytest.raises(ValueError, match="caption style"):
        clip.caption("poetic")
    with pytest.raises(ValueError, match="caption style"):
        MovingShapesDataset(3, caption_style="poetic")


def test_video_pipeline_reads_the_caption_style_of_its_training():
    from ditkit.pipelines import VideoPipeline
    from ditkit.train.video import VideoTrainConfig

    def pipe(info):
        return VideoPipeline(None, None, None, info=info)

    assert pipe({}).caption_style == "motion-first"  # folders from before the style was recorded
    recipe = {"video": {**vars(VideoTrainConfig(caption_style="sized"))}}
    assert pipe({"training": {"recipe": recipe}}).caption_style == "sized"
    with pytest.raises(ValueError, match="caption style"):
        VideoTrainConfig(caption_style="poetic")


def test_training_data_use_the_configured_caption_style():
    from ditkit.config import get_preset
    from ditkit.train.trainer import TrainConfig, build_dataset
    from ditkit.train.video import VideoTrainConfig

    cfg = TrainConfig(model=get_preset("shapes-tiny"), dataset_size=5,
                      video=VideoTrainConfig(frames=4, caption_style="image-first"))
    data = build_dataset(cfg)
    assert data.caption_style == "image-first" and data.caption(0) == data.clip(0).caption("image-first")


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_frame_moves_and_the_shape_stays_inside(motion):
    rng = np.random.default_rng([5, MOTIONS.index(motion)])
    for _ in range(10):
        clip = sample_clip(rng, frames=16, motion=motion)
        frames = clip.render(32)
        assert all(np.any(frames[i] != frames[i + 1]) for i in range(15)), clip.caption()
        for i in range(16):
            s = clip.spec_at(i)
            assert s.radius <= s.cx <= 1 - s.radius and s.radius <= s.cy <= 1 - s.radius
        if motion == "color":
            assert clip.color_to in COLOR_NAMES and clip.spec_at(15).color_rgb == clip.color_to_rgb


def test_labels_and_motions_restrict_the_draw():
    ds = MovingShapesDataset(20, seed=0, motions=("rotate", "left"), labels=[0, 2])  # circle cannot rotate
    for i in range(20):
        clip = ds.clip(i)
        assert clip.label == [0, 2][i % 2]
        assert clip.motion in ("rotate", "left") and not (clip.label == 0 and clip.motion == "rotate")
    with pytest.raises(ValueError, match="unknown motions"):
        MovingShapesDataset(3, motions=("sideways",))
    with pytest.raises(ValueError, match="cannot visibly rotate"):
        sample_clip(np.random.default_rng(0), motion="rotate", label=CLASSES.index("ring"))


def test_motion_check_recovers_the_true_direction():
    ds = MovingShapesDataset(200, seed=123, frames=16, motions=DIRECTIONS)
    rng = np.random.default_rng(0)
    hits = noisy_hits = reversed_hits = 0
    for i in range(len(ds)):
        clip = ds.clip(i)
        frames = clip.render(32)
        hits += track_motion(frames).direction == clip.motion
        noisy = np.clip(frames + rng.normal(0, 20, frames.shape), 0, 255).astype(np.uint8)
        noisy_hits += track_motion(noisy).direction == clip.motion
        reversed_hits += track_motion(frames[::-1]).direction == clip.motion
    assert hits / len(ds) >= 0.95
    assert noisy_hits / len(ds) >= 0.95
    assert reversed_hits / len(ds) <= 0.05  # played backwards, every clip reads the opposite way


def test_motion_check_on_tensors_and_still_clips():
    ds = MovingShapesDataset(60, seed=9, frames=8, motions=("rotate", "color"))
    still = sum(track_motion(ds[i][0]).direction == "none" for i in range(len(ds)))  # float (F, 3, H, W) input
    assert still / len(ds) >= 0.85
    est = track_motion(torch.full((4, 3, 8, 8), -1.0))  # blank frames: nothing to track
    assert est.direction == "none" and est.tracked == 0.0
    with pytest.raises(ValueError, match="frames must be"):
        track_motion(np.zeros((4, 8, 8)))


def test_first_frame_check_follows_the_start_rule():
    ds = MovingShapesDataset(300, seed=77, frames=8, motions=DIRECTIONS)
    clips = [ds.clip(i) for i in range(len(ds))]
    assert all(first_frame_fits(c.render(32, frames=1)[0], c.caption()) for c in clips)  # every real start fits
    assert first_frame_fits(ds[0][0][0], clips[0].caption("sized"))  # float (3, H, W) frames, any caption style
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for c in clips[:40]:  # the same shape pushed against the wall it heads to: no room for the path
        s, edge = c.first, c.first.radius * 1.02
        at_wall = {"left": {"cx": edge}, "right": {"cx": 1 - edge}, "up": {"cy": edge}, "down": {"cy": 1 - edge}}
        frame = replace(c, first=replace(s, **at_wall[c.motion])).render(32, frames=1)[0]
        assert not first_frame_fits(frame, c.caption())
        assert first_frame_fits(frame, c.caption().replace(c.motion, opposite[c.motion]))
    assert caption_direction("a small red star moving up on a blue background") == "up"
    assert caption_direction("a red star bouncing on a blue background") is None
    assert first_frame_fits(np.zeros((8, 8, 3), np.uint8), "a red star rotating on a blue background")
    assert not first_frame_fits(np.zeros((8, 8, 3), np.uint8), "a red star moving up on a blue background")
