"""One pipeline API: typed options with keyword overrides, the resolved options kept, one seeding rule
(batch size never changes a result), attention cores applied without touching the model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import ditkit
from ditkit.accel import FarCachedAttention, RefreshSchedule, WithAttention
from ditkit.cli import main
from ditkit.config import DiTConfig
from ditkit.diffusion.flow import FlowMatching
from ditkit.diffusion.gaussian import GaussianConfig
from ditkit.diffusion.noise import randn, sample_generators
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.models.video_attention import Pattern, SparsePlan
from ditkit.models.video_dit import VideoDiT
from ditkit.pipelines import ImageOptions, VideoOptions, VideoPipeline, load_pipeline
from ditkit.shapes.data import CLASSES
from ditkit.shapes.prompts import video_vocabulary
from ditkit.train.video import VideoTrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a small red circle moving left on a blue background", "a small green star bouncing on a white background",
           "a large blue heart moving up on a white background"]


@pytest.fixture(scope="module")
def video() -> VideoPipeline:
    trunk = DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                      learn_sigma=False, use_rope=True)
    model = VideoDiT(VideoTrainConfig(frames=4, text_dim=16, cross_attention=True).video_model(trunk)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # away from the zero-initialised output layers
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    encoder = WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), video_vocabulary())
    return VideoPipeline(model, FlowMatching(), encoder)


# ----------------------------------------------------------------------------- options


def test_shared_fields_have_the_same_names_and_defaults_come_from_the_folder(tiny_model_dir):
    shared = {f.name for f in dataclasses.fields(ditkit.pipelines.SamplingOptions)}
    assert shared >= {"sampler", "steps", "cfg_scale", "shift", "seed", "batch_size", "progress"}
    assert shared <= {f.name for f in dataclasses.fields(ImageOptions)} & {f.name for f in dataclasses.fields(VideoOptions)}
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    pipe.generate(["circle"], ImageOptions(steps=2), seed=3)
    assert pipe.last_options == ImageOptions(sampler="euler", steps=2, cfg_scale=2.0, shift=1.0, seed=3)
    assert json.loads(json.dumps(pipe.last_options.as_dict()))["cfg_scale"] == 2.0


def test_options_and_overrides_give_the_same_images(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    opts = ImageOptions(steps=2, cfg_scale=3.0, seed=4)
    torch.testing.assert_close(pipe.generate([0, 1], opts), pipe.generate([0, 1], steps=2, cfg_scale=3.0, seed=4))
    torch.testing.assert_close(pipe.generate([0, 1], opts, seed=5), pipe.generate([0, 1], dataclasses.replace(opts, seed=5)))


def test_unknown_options_and_bad_values_are_refused(tiny_model_dir, video):
    pipe = load_pipeline(tiny_model_dir)
    with pytest.raises(TypeError, match="'frames'"):
        pipe.generate([0], frames=8)  # a video option
    with pytest.raises(TypeError, match="'stepz'"):
        video.generate(PROMPTS[:1], stepz=2)
    with pytest.raises(TypeError, match="VideoOptions"):
        video.generate(PROMPTS[:1], ImageOptions())
    with pytest.raises(ValueError, match="steps must be positive"):
        ImageOptions(steps=0)
    with pytest.raises(ValueError, match="long_mode"):
        VideoOptions(long_mode="loop")
    with pytest.raises(ValueError, match="Euler"):
        VideoOptions(sampler="heun")


def test_the_video_pipeline_keeps_its_resolved_options(video):
    video.generate(PROMPTS[:1], VideoOptions(steps=2), frames=8, latents=True)
    opts = video.last_options
    assert (opts.sampler, opts.steps, opts.frames, opts.overlap, opts.cfg_scale) == ("euler", 2, 8, 2, 1.0)
    assert json.loads(json.dumps(opts.as_dict()))["long_mode"] == "rollout"


# ----------------------------------------------------------------------------- seeding


def test_per_sample_generators_give_each_row_its_own_noise():
    whole = randn((3, 2, 4), sample_generators(7, 0, 3))
    torch.testing.assert_close(whole[1:], randn((2, 2, 4), sample_generators(7, 1, 3)), rtol=0, atol=0)
    torch.testing.assert_close(whole[2:], torch.randn((1, 2, 4), generator=torch.Generator().manual_seed(9)), rtol=0, atol=0)


def test_stochastic_image_sampling_does_not_depend_on_the_batch_size():
    model = ditkit.DiT(ditkit.get_preset("shapes-tiny"))
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    pipe = ditkit.Pipeline(model, ditkit.GaussianDiffusion(GaussianConfig(learn_sigma=False)))
    opts = ImageOptions(sampler="ddpm", steps=3, seed=2)
    a = pipe.generate([0, 1, 2], opts, batch_size=3)
    torch.testing.assert_close(pipe.generate([0, 1, 2], opts, batch_size=1), a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pipe.generate([0, 1, 2], opts, batch_size=2), a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", [dict(), dict(frames=8, overlap=2), dict(frames=8, long_mode="chunked"),
                                  dict(image=True, cfg_scale=3.0)], ids=["window", "rollout", "chunked", "i2v-joint"])
def test_video_noise_does_not_depend_on_the_batch_size(video, mode):
    mode = dict(mode)
    if mode.pop("image", False):
        mode["image"] = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    whole = video.generate(PROMPTS, steps=2, seed=5, batch_size=3, latents=True, **mode)
    for batch_size in (1, 2):
        torch.testing.assert_close(video.generate(PROMPTS, steps=2, seed=5, batch_size=batch_size, latents=True, **mode),
                                   whole, atol=2e-4, rtol=1e-4)  # float rounding of other batch shapes, x cfg_scale
    assert not torch.allclose(video.generate(PROMPTS, steps=2, seed=6, latents=True, **mode), whole, atol=1e-3)


# ----------------------------------------------------------------------------- attention cores


def test_attention_cores_reach_the_model_per_call_without_setting_it(video, monkeypatch):
    local = Pattern("sta", tile=(1, 4, 4), window=(1, 1, 1))
    plan = SparsePlan({i: [local] * video.config.dit.num_heads for i in range(video.config.dit.depth)})
    core = FarCachedAttention(plan, RefreshSchedule(dense_above=0.7, every=2), backend="dense")
    assigned = []
    real = torch.nn.Module.__setattr__

    def record(module, name, value):
        if module is video.model and name != "training":
            assigned.append(name)
        real(module, name, value)

    monkeypatch.setattr(VideoDiT, "__setattr__", record)
    cached = video.generate(PROMPTS[:1], steps=6, latents=True, attention=core)
    video.generate(PROMPTS[:1], steps=2, frames=8, long_mode="extrapolate", latents=True)  # UltraViCo's core
    assert assigned == [] and video.model.attention_core is None and core.calls["local"] > 0
    # the wrapper passes the core by keyword: the same numbers as the model called with it
    net = WithAttention(video.model, core)
    x, t = torch.randn(1, 4, 3, 16, 16), torch.full((1, 4), 0.5)
    text, _ = video.encode_prompts(PROMPTS[:1])
    y = torch.tensor([video.config.dit.num_classes])  # the null class
    core.reset()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y, **text), video.model(x, t, y, attention=core, **text), rtol=0, atol=0)
    assert cached.shape == (1, 4, 3, 16, 16)


# ----------------------------------------------------------------------------- the CLI's record


def test_generate_writes_the_options_it_used_beside_the_image(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--model", str(tiny_model_dir), "--classes", "circle", "--n-per-class", "2", "--steps", "2",
                 "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((tmp_path / "grid.png.json").read_text())
    assert str(tmp_path / "grid.png.json") in capsys.readouterr().out
    assert record["labels"] == [CLASSES.index("circle")] * 2 and record["model"] == str(tiny_model_dir)
    assert record["options"]["steps"] == 2 and record["options"]["seed"] == 3
    assert record["options"]["sampler"] == "euler" and record["options"]["cfg_scale"] == 2.0  # the folder's defaults


def test_generate_video_writes_the_options_it_used_beside_the_clip(video, tmp_path, capsys):
    from ditkit.pipelines import save_video_pipeline

    save_video_pipeline(tmp_path / "video", video.model, video.process, video.text_encoder)
    out = tmp_path / "clip.gif"
    assert main(["generate", "--video", "--model", str(tmp_path / "video"), "--prompt", PROMPTS[0], "--steps", "2",
                 "--n-per-class", "1", "--seed", "4", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((tmp_path / "clip.gif.json").read_text())
    assert record["prompts"] == [PROMPTS[0]] and record["model"] == str(tmp_path / "video")
    opts = record["options"]
    assert (opts["steps"], opts["seed"], opts["frames"], opts["sampler"], opts["long_mode"]) == (2, 4, 4, "euler", "rollout")
