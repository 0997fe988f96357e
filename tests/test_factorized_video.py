"""Factorized text-to-video (Emu Video): a text-to-image model draws the first frame, the video model the rest."""

from __future__ import annotations

import json

import pytest
import torch
from video_tiny import PROMPTS, tiny_text_image, tiny_video  # tests/ is on sys.path (rootdir-less test modules)

from ditkit.diffusion.flow import FlowMatching
from ditkit.pipelines import Pipeline
from ditkit.shapes.moving import first_frame_fits, image_caption

pytestmark = pytest.mark.usefixtures("one_thread")


def test_first_frame_model_draws_frame_zero_and_the_video_model_continues_it():
    pipe, t2i = tiny_video(), tiny_text_image()
    images = t2i.generate(prompts=[image_caption(p) for p in PROMPTS], seed=5).clamp(-1, 1)  # (2, 3, 16, 16)
    out = pipe.generate(PROMPTS, steps=3, seed=5, first_frame_model=t2i, caption_for_image=image_caption)
    assert out.shape == (2, 4, 3, 16, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], images)  # frame 0 is the image model's sample, unchanged
    # ... and the rest is image-to-video from it: the same as giving those images by hand
    torch.testing.assert_close(out, pipe.generate(PROMPTS, steps=3, seed=5, image=images))
    assert not torch.allclose(out, pipe.generate(PROMPTS, steps=3, seed=5), atol=1e-3)  # not plain text-to-video
    # each clip's own image caption (without the motion phrase) draws its frame
    other = pipe.generate(PROMPTS, steps=3, seed=5, first_frame_model=t2i, image_prompts=[PROMPTS[0]] * 2,
                          caption_for_image=image_caption)
    torch.testing.assert_close(other[0], out[0])
    assert (other[1, 0] - out[1, 0]).abs().max() > 1e-2


def test_first_frame_redraws_replace_only_the_frames_that_fail_the_check():
    pipe, t2i = tiny_video(), tiny_text_image()
    captions = [image_caption(p) for p in PROMPTS]
    first = t2i.generate(prompts=captions, seed=5).clamp(-1, 1)  # (2, 3, 16, 16)
    seen = []

    def check(frame, prompt):  # clip 1's first two draws fail
        seen.append(prompt)
        return prompt == PROMPTS[0] or seen.count(prompt) > 2

    out = pipe.generate(PROMPTS, steps=2, seed=5, first_frame_model=t2i, first_frame_redraws=3,
                        first_frame_check=check, caption_for_image=image_caption)
    torch.testing.assert_close(out[0, 0], first[0])  # passed: kept
    third = t2i.generate(prompts=captions[1:], seed=7).clamp(-1, 1)[0]  # round 2 draws with seed + 2
    torch.testing.assert_close(out[1, 0], third)
    assert (third - first[1]).abs().max() > 1e-2
    assert seen == [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1]]  # stops once all pass
    never = pipe.generate(PROMPTS, steps=2, seed=5, first_frame_model=t2i, first_frame_redraws=2,
                          first_frame_check=lambda f, p: False,  # never passes: the last draw is kept
                          caption_for_image=image_caption)
    torch.testing.assert_close(never[:, 0], t2i.generate(prompts=captions, seed=7).clamp(-1, 1))
    # the moving-shapes start rule as the check; it only ever replaces frames
    default = pipe.generate(PROMPTS, steps=2, seed=5, first_frame_model=t2i, first_frame_redraws=1,
                            first_frame_check=first_frame_fits, caption_for_image=image_caption)
    assert default.shape == out.shape and torch.isfinite(default).all()
    with pytest.raises(ValueError, match="give first_frame_check"):  # the engine has no default check
        pipe.generate(PROMPTS, steps=1, first_frame_model=t2i, first_frame_redraws=1)
    with pytest.raises(ValueError, match="give first_frame_model"):
        pipe.generate(PROMPTS, steps=1, first_frame_redraws=1)
    with pytest.raises(ValueError, match=">= 0"):
        pipe.generate(PROMPTS, steps=1, first_frame_model=t2i, first_frame_redraws=-1)


def test_first_frame_model_refusals():
    pipe, t2i = tiny_video(), tiny_text_image()
    first = torch.zeros(3, 16, 16)
    with pytest.raises(ValueError, match="not both"):
        pipe.generate(PROMPTS, steps=1, image=first, first_frame_model=t2i)
    with pytest.raises(ValueError, match="text-to-image"):
        pipe.generate(PROMPTS, steps=1, first_frame_model=Pipeline(t2i.model, FlowMatching()))
    with pytest.raises(ValueError, match="8x8"):  # wrong frame size
        pipe.generate(PROMPTS, steps=1, first_frame_model=tiny_text_image(hw=8))
    with pytest.raises(ValueError, match="one image prompt"):
        pipe.generate(PROMPTS, steps=1, first_frame_model=t2i, image_prompts=PROMPTS[:1])
    with pytest.raises(ValueError, match="2 frames"):
        pipe.generate(PROMPTS, steps=1, frames=1, first_frame_model=t2i)


def test_eval_gives_the_image_model_each_first_frames_own_caption(monkeypatch):
    import ditkit.eval.video as video_eval

    pipe, t2i = tiny_video(), tiny_text_image()
    calls, generate = [], pipe.generate

    def spy(prompts, **kw):
        calls.append((list(prompts), kw.get("image_prompts"), kw.get("first_frame_model")))
        return generate(prompts, **kw)

    pipe.generate = spy  # only the prompts matter here: any classifier will do
    monkeypatch.setattr(video_eval, "_frame_predictions", lambda clf, clips: torch.zeros(clips.shape[:2]))
    result = video_eval.evaluate_video(pipe, None, num_clips=3, steps=1, first_frame_model=t2i, log=lambda *a: None)
    specs = [video_eval.held_out_clips(3, 4, 16).clip(i) for i in range(3)]
    (t2v_prompts, image_prompts, ff), (_, i2v_image_prompts, i2v_ff) = calls
    assert t2v_prompts == [s.caption("motion-first") for s in specs] and ff is t2i and i2v_ff is None
    assert image_prompts == i2v_image_prompts == [s.first.caption() for s in specs]  # with the size word
    assert all(p != image_caption(q) for p, q in zip(image_prompts, t2v_prompts))
    assert "factorized" in result


def test_cli_generate_and_eval_take_a_first_frame_model(tmp_path, capsys):
    from ditkit.cli import main
    from ditkit.pipelines import save_pipeline, save_video_pipeline

    pipe, t2i = tiny_video(), tiny_text_image()
    save_video_pipeline(tmp_path / "video", pipe.model, pipe.process, pipe.text_encoder)
    save_pipeline(tmp_path / "t2i", t2i.model, t2i.process, text_encoder=t2i.text_encoder)
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0], "--steps", "2",
                 "--n-per-class", "1", "--first-frame-model", str(tmp_path / "t2i"), "--out", str(tmp_path / "v.gif"),
                 "--no-progress"]) == 0
    assert (tmp_path / "v.gif").is_file()
    assert main(["eval", "--model", str(tmp_path / "video"), "--num-samples", "3", "--steps", "1",
                 "--first-frame-model", str(tmp_path / "t2i"), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["first_frame_model"] == str(tmp_path / "t2i") and "factorized" in result
    assert "image_to_video" in result  # image-to-video still measured from the held-out frames
    capsys.readouterr()
    assert main(["generate", "--first-frame-model", str(tmp_path / "t2i")]) == 2  # a video option
    (tmp_path / "f.png").write_bytes(b"")
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0],
                 "--first-frame-model", str(tmp_path / "t2i"), "--image", str(tmp_path / "f.png")]) == 2
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0],
                 "--first-frame-model", str(tmp_path / "video")]) == 2  # not a text-to-image folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ditkit generate: error:") for line in err)
    assert "not both" in err[1]
    assert main(["eval", "--model", str(tmp_path / "video"), "--num-samples", "2", "--steps", "1", "--no-i2v",
                 "--first-frame-model", str(tmp_path / "t2i"), "--first-frame-redraws", "2",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["first_frame_redraws"] == 2
    capsys.readouterr()
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0],
                 "--first-frame-redraws", "2"]) == 2
    assert main(["generate", "--first-frame-redraws", "2"]) == 2  # a video option
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "give that too" in err[0] and "video option" in err[1]
