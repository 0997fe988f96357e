"""The asynchronous schedule in `VideoPipeline.generate` (``ar_step``, SkyReels-V2) and its CLI flag."""

from __future__ import annotations

import json

import pytest
import torch

from ditkit.config import DiTConfig
from ditkit.diffusion.flow import FlowMatching
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.models.video_dit import VideoDiT
from ditkit.pipelines import VideoPipeline, save_video_pipeline
from ditkit.shapes.prompts import video_vocabulary
from ditkit.train.video import VideoTrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a red circle moving left on a blue background", "a green star bouncing on a white background"]


def _pipe(temporal_patch: int = 1) -> VideoPipeline:
    trunk = DiTConfig(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                      num_classes=10, learn_sigma=False, use_rope=True)
    cfg = VideoTrainConfig(frames=4, temporal_patch=temporal_patch, text_dim=16, cross_attention=True)
    model = VideoDiT(cfg.video_model(trunk))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # away from the zero-initialised output layers
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return VideoPipeline(model.eval(), FlowMatching(),
                         WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), video_vocabulary()))


def _recorded(pipe: VideoPipeline) -> list[torch.Tensor]:
    """Wrap the model's forward to record the process times (N, F) of every call."""
    seen, forward = [], pipe.model.forward

    def spy(x, t, *args, **kw):
        seen.append(pipe.process.process_time(t).detach().clone())
        return forward(x, t, *args, **kw)

    pipe.model.forward = spy
    return seen


@pytest.mark.parametrize("temporal_patch", [1, 2])
def test_ar_step_runs_later_frame_blocks_behind_earlier_ones(temporal_patch):
    pipe = _pipe(temporal_patch)
    blocks = 4 // temporal_patch
    sync = pipe.generate(PROMPTS, steps=4, cfg_scale=1.0, seed=3)
    seen = _recorded(pipe)
    lagged = pipe.generate(PROMPTS, steps=4, cfg_scale=1.0, seed=3, ar_step=2)
    assert lagged.shape == sync.shape == (2, 4, 3, 8, 8) and torch.isfinite(lagged).all()
    assert not torch.allclose(lagged, sync, atol=1e-3)
    assert len(seen) == 4 + 2 * (blocks - 1)  # SkyReels-V2's iteration count
    for s in seen:  # noise never decreases along the frames, and frames of one block share a time
        assert (s[:, 1:] >= s[:, :-1] - 1e-6).all()
        assert torch.equal(s, s[:, ::temporal_patch].repeat_interleave(temporal_patch, dim=1))
    assert any((s[:, -1] > s[:, 0] + 0.1).all() for s in seen)  # the last block really trails
    with pytest.raises(ValueError, match="ar_step"):
        pipe.generate(PROMPTS, steps=2, ar_step=-1)


def test_ar_step_applies_to_image_to_video_and_rollouts():
    pipe = _pipe()
    first = torch.rand(3, 8, 8) * 2 - 1
    i2v = pipe.generate(PROMPTS[:1], steps=3, image=first, ar_step=1)
    torch.testing.assert_close(i2v[0, 0], pipe.generate(PROMPTS[:1], steps=3, image=first)[0, 0])  # frame 0 is given
    long = pipe.generate(PROMPTS[:1], steps=3, frames=8, overlap=2, ar_step=1)
    assert long.shape == (1, 8, 3, 8, 8) and torch.isfinite(long).all()
    assert not torch.allclose(long, pipe.generate(PROMPTS[:1], steps=3, frames=8, overlap=2), atol=1e-3)


def test_cli_takes_ar_step_for_video_models_only(tmp_path, capsys):
    from ditkit.cli import main

    pipe = _pipe()
    save_video_pipeline(tmp_path / "video", pipe.model, pipe.process, pipe.text_encoder)
    assert main(["eval", "--model", str(tmp_path / "video"), "--num-samples", "4", "--steps", "2", "--no-i2v",
                 "--ar-step", "1", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["ar_step"] == 1
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0], "--steps", "2",
                 "--n-per-class", "1", "--ar-step", "2", "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 0
    assert (tmp_path / "v.gif").is_file()
    capsys.readouterr()
    assert main(["generate", "--ar-step", "2"]) == 2  # a video option
    assert main(["eval", "--model", str(tmp_path / "video"), "--ar-step", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "ditkit generate: error: --ar-step is a video option: add --video"
    assert "expected an integer >= 0" in err[-1]
