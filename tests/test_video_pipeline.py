"""`VideoPipeline.generate`'s progress bar: one bar over every model call of the run, its total known up front."""

from __future__ import annotations

import pytest
import torch
from bars import bar_states
from video_tiny import PROMPTS, tiny_text_image, tiny_video  # tests/ is on sys.path (rootdir-less test modules)

from ditkit.shapes.moving import image_caption

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_bar_counts_every_window_of_a_long_rollout(capsys):
    pipe = tiny_video()  # a 4-frame window
    pipe.generate(PROMPTS[:1], steps=2, frames=8, overlap=2, ar_step=1, progress=True)
    # 3 windows; with ar_step 1 the 4 new frames take 2 + 3 calls, each later window of 2 new frames 2 + 1
    states = bar_states(capsys.readouterr().err)
    assert states[0] == (0, 11) and states[-1] == (11, 11)
    pipe.generate(PROMPTS, steps=2, frames=8, long_mode="chunked", batch_size=1, progress=True)
    assert bar_states(capsys.readouterr().err)[-1] == (8, 8)  # 2 clips x 2 windows x 2 steps
    pipe.generate(PROMPTS, steps=2, image=torch.zeros(3, 16, 16), progress=True)
    assert bar_states(capsys.readouterr().err)[-1] == (2, 2)  # image-to-video: one batch, one window
    pipe.generate(PROMPTS, steps=1, progress=False)
    assert capsys.readouterr().err == ""


def test_the_bar_includes_the_first_frames_and_grows_with_their_redraws(capsys):
    pipe, t2i = tiny_video(), tiny_text_image()  # the image model samples its default 50 steps
    seen = []

    def check(frame, prompt):  # clip 1's first draw fails
        seen.append(prompt)
        return prompt == PROMPTS[0] or seen.count(prompt) > 1

    pipe.generate(PROMPTS, steps=2, first_frame_model=t2i, first_frame_redraws=2, first_frame_check=check,
                  caption_for_image=image_caption, progress=True)
    states = bar_states(capsys.readouterr().err)
    assert states[0] == (0, 52)  # the first frames' 50 steps and the video's 2
    assert states[-1] == (102, 102)  # plus one redraw of 50 steps


def test_the_folder_loader_reads_every_kind(tmp_path, tiny_model_dir):
    from ditkit.io.checkpoint import CheckpointError, load_json, save_json
    from ditkit.pipelines import Pipeline, VideoPipeline, is_video_folder, load, save_video_pipeline

    pipe = tiny_video()
    save_video_pipeline(tmp_path / "video", pipe.model, pipe.process, pipe.text_encoder)
    assert is_video_folder(tmp_path / "video") and not is_video_folder(tiny_model_dir)
    assert isinstance(load(tmp_path / "video"), VideoPipeline) and isinstance(load(tiny_model_dir), Pipeline)
    info = load_json(tmp_path / "video" / "config.json")
    save_json(tmp_path / "video" / "config.json", {**info, "kind": "something-else"})
    with pytest.raises(CheckpointError, match="something-else"):
        load(tmp_path / "video")
    with pytest.raises(CheckpointError, match="not a ditkit model folder"):
        load(tmp_path)
