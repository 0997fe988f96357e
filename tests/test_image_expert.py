"""Image-expert guidance (`ditkit.diffusion.image_expert`): a text-to-image model guides each frame."""

from __future__ import annotations

import pytest
import torch
from video_tiny import PROMPTS, tiny_text_image, tiny_video  # tests/ is on sys.path (rootdir-less test modules)

from ditkit.diffusion.flow import FlowConfig, FlowMatching
from ditkit.diffusion.image_expert import image_expert_guidance
from ditkit.pipelines import Pipeline
from ditkit.shapes.moving import MovingShapesDataset, image_caption

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = {"caption_for_image": image_caption}  # the image model reads each prompt without its motion phrase


def test_image_caption_drops_only_the_motion_phrase():
    data = MovingShapesDataset(30, seed=4000, frames=8, image_size=32)
    for i in range(30):
        clip = data.clip(i)
        for style in ("sized", "image-first"):
            assert image_caption(clip.caption(style)) == clip.first.caption()
    assert image_caption("a red heart turning yellow on a blue background") == "a red heart on a blue background"
    assert image_caption("a small red circle on a blue background") == "a small red circle on a blue background"


def test_the_wrapper_adds_the_image_models_guidance_frame_by_frame():
    video_process, image_process = FlowMatching(), FlowMatching(FlowConfig(time_scale=1.0))  # different time units
    seen = {}

    def video_fn(x, t, **kw):
        seen["video_keys"] = set(kw)
        return torch.full_like(x, 0.5)

    def image_model(x, t, text, text_mask):  # "cond" rows see caption value c, "uncond" rows 0
        seen.setdefault("t", []).append(t)
        return x * 0 + text[:, :1, :1, None] * (1 + t[:, None, None, None])

    null_text, null_mask = torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool)
    text = torch.tensor([1.0, 2.0])[:, None, None].expand(2, 3, 2)  # clip 0 -> 1, clip 1 -> 2
    mask = torch.ones(2, 3, dtype=torch.bool)
    x = torch.randn(2, 4, 3, 8, 8)
    t = torch.tensor([[0.0, 250.0, 500.0, 1000.0], [900.0, 900.0, 900.0, 900.0]])  # network time of video_process
    fn = image_expert_guidance(video_fn, image_model, 2.0, null_text=null_text, null_mask=null_mask,
                               video_process=video_process, image_process=image_process)
    out = fn(x, t, pooled_text=torch.zeros(2, 16), image_text=text, image_text_mask=mask)
    assert seen["video_keys"] == {"pooled_text"}  # the image keys never reach the video model
    s = t / 1000.0  # process time, which is image_process's network time
    expect = 0.5 + 2.0 * torch.tensor([1.0, 2.0])[:, None] * (1 + s)  # (N, F)
    torch.testing.assert_close(out, expect[:, :, None, None, None].expand_as(out))
    # only the frames whose process time lies in the interval are guided
    fn = image_expert_guidance(video_fn, image_model, 2.0, null_text=null_text, null_mask=null_mask,
                               video_process=video_process, image_process=image_process, interval=(0.2, 0.6))
    out = fn(x, t, image_text=text, image_text_mask=mask)
    guided = (out[:, :, 0, 0, 0] != 0.5)
    assert guided.tolist() == [[False, True, True, False], [False] * 4]
    assert image_expert_guidance(video_fn, image_model, 0.0, null_text=null_text, null_mask=null_mask,
                                 video_process=video_process, image_process=image_process) is video_fn
    for bad, match in (({"scale": -1.0}, ">= 0"), ({"interval": (0.5, 0.2)}, "interval")):
        kw = {"scale": 1.0, **bad}
        with pytest.raises(ValueError, match=match):
            image_expert_guidance(video_fn, image_model, kw.pop("scale"), null_text=null_text, null_mask=null_mask,
                                  video_process=video_process, image_process=image_process, **kw)
    with pytest.raises(ValueError, match="image_text"):
        fn(x, t)


def test_video_pipeline_samples_with_an_image_expert():
    pipe, expert = tiny_video(), tiny_text_image()
    plain = pipe.generate(PROMPTS, steps=3, cfg_scale=2.0, seed=1)
    off = pipe.generate(PROMPTS, steps=3, cfg_scale=2.0, seed=1, image_expert=expert, image_expert_scale=0.0, **CAPTIONS)
    on = pipe.generate(PROMPTS, steps=3, cfg_scale=2.0, seed=1, image_expert=expert, image_expert_scale=2.0, **CAPTIONS)
    assert on.shape == plain.shape == (2, 4, 3, 16, 16) and torch.isfinite(on).all()
    assert torch.equal(off, plain) and not torch.allclose(on, plain)
    # batch slicing keeps each clip's image caption with it (clip i draws its noise from seed + i)
    sliced = pipe.generate(PROMPTS, steps=3, cfg_scale=2.0, seed=1, image_expert=expert, image_expert_scale=2.0,
                           batch_size=1, **CAPTIONS)
    alone = pipe.generate(PROMPTS[1:], steps=3, cfg_scale=2.0, seed=2, image_expert=expert, image_expert_scale=2.0,
                          **CAPTIONS)
    torch.testing.assert_close(sliced[0], on[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sliced[1], alone[0], atol=1e-4, rtol=1e-4)  # padding: a shorter caption batch
    wrong = pipe.generate(PROMPTS, steps=3, cfg_scale=2.0, seed=1, image_expert=expert, image_expert_scale=2.0,
                          batch_size=1, image_prompts=[PROMPTS[0]] * 2, **CAPTIONS)
    assert (wrong[1] - sliced[1]).abs().max() > 1e-2  # clip 1's own caption matters
    # image-to-video and rollouts take it too; the given first frame stays
    first = torch.rand(3, 16, 16) * 2 - 1
    i2v = pipe.generate(PROMPTS[:1], steps=2, image=first, image_expert=expert, **CAPTIONS)
    torch.testing.assert_close(i2v[0, 0], first.clamp(-1, 1))
    long = pipe.generate(PROMPTS[:1], steps=2, frames=8, overlap=2, image_expert=expert, **CAPTIONS)
    assert long.shape == (1, 8, 3, 16, 16)
    with pytest.raises(ValueError, match="latents"):
        pipe.generate(PROMPTS, steps=1, image_expert=tiny_text_image(hw=8))
    with pytest.raises(ValueError, match="text-to-image"):
        pipe.generate(PROMPTS, steps=1, image_expert=Pipeline(expert.model, FlowMatching()))
    with pytest.raises(ValueError, match="one image prompt"):
        pipe.generate(PROMPTS, steps=1, image_expert=expert, image_prompts=PROMPTS[:1])


def test_cli_generate_and_eval_take_an_image_expert(tmp_path, capsys):
    import json

    from ditkit.cli import main
    from ditkit.pipelines import save_pipeline, save_video_pipeline

    pipe, expert = tiny_video(), tiny_text_image()
    save_video_pipeline(tmp_path / "video", pipe.model, pipe.process, pipe.text_encoder)
    save_pipeline(tmp_path / "t2i", expert.model, expert.process, text_encoder=expert.text_encoder)
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0], "--steps", "2",
                 "--n-per-class", "1", "--image-expert", str(tmp_path / "t2i"), "--image-expert-scale", "1.5",
                 "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 0
    assert (tmp_path / "v.gif").is_file()
    assert main(["eval", "--model", str(tmp_path / "video"), "--num-samples", "7", "--steps", "1", "--no-i2v",
                 "--image-expert", str(tmp_path / "t2i"), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["image_expert"] == str(tmp_path / "t2i") and result["image_expert_scale"] == 1.0
    capsys.readouterr()
    assert main(["generate", "--image-expert", str(tmp_path / "t2i")]) == 2  # a video option
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0],
                 "--image-expert", str(tmp_path / "video")]) == 2  # not a text-to-image folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("ditkit generate: error:") for line in err)
