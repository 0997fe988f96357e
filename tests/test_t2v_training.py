"""Text-to-video training and sampling: a tiny video model trains on moving-shape clips with per-frame
noise levels, resumes exactly, starts from an image model folder, exports a video model folder that
generates text-to-video, image-to-video (the given first frame kept) and long clips, also through
`ditkit generate --video`. The tests of the exported model share one run (the module's `exported` fixture)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_script import run_benchmark
from PIL import Image
from resume_check import straight_and_resumed

from ditkit import FlowMatching, save_pipeline
from ditkit.cli import main
from ditkit.config import DiTConfig, TextDiTConfig
from ditkit.diffusion.flow import FlowConfig
from ditkit.eval.direction_probe import probe as direction_probe
from ditkit.models.dit import DiT
from ditkit.models.text_encoder import WordEncoderConfig
from ditkit.pipelines import is_video_folder, load_video_pipeline
from ditkit.shapes.moving import MovingShapesDataset
from ditkit.train.export import export_run
from ditkit.train.presets import get_train_preset
from ditkit.train.trainer import TrainConfig, Trainer
from ditkit.train.video import VideoTrainConfig

TRUNK = DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                  learn_sigma=False, use_rope=True, qk_norm=True, mlp_type="mixffn")
VIDEO = VideoTrainConfig(frames=4, text_dim=16, per_frame_prob=0.5, context_prob=0.5, frame_embed=True,
                         cross_attention=True)
TRAIN = TrainConfig(model=TRUNK, steps=4, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=2,
                    ema_decay=0.9, seed=5, text_encoder=WordEncoderConfig(dim=16, depth=1, num_heads=2), video=VIDEO)
PROMPT = "a red circle moving left on a blue background"
T2V_PRESET = "shapes-t2v-pt2-motion-9k"  # the recipe of the bundled assets/shapes-t2v


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def make_trainer(out_dir, **changes) -> Trainer:
    cfg = dataclasses.replace(TRAIN, **changes)
    data = MovingShapesDataset(32, frames=cfg.video.frames, image_size=16) if cfg.video else None
    return Trainer(cfg, out_dir, dataset=data, log=lambda *a: None, progress=False)


def test_video_training_resumes_exactly_and_round_trips_its_config(tmp_path: Path):
    straight, _ = straight_and_resumed(make_trainer, tmp_path)
    a = straight.model.state_dict()
    assert any(k.startswith("encoder.") for k in a) and any(k.startswith("dit.pooled_text_embedder") for k in a)
    assert straight.model.dit.pooled_text_embedder.weight.abs().sum() > 0  # the caption paths learn
    assert straight.model.dit.blocks[0].cross_attn.proj.weight.abs().sum() > 0
    saved = TrainConfig.from_dict(json.loads((tmp_path / "a" / "train_config.json").read_text()))
    assert saved == straight.cfg and saved.video == VIDEO


def test_batches_draw_per_frame_times_and_clean_prefixes(tmp_path: Path):
    trainer = make_trainer(tmp_path / "r", video=dataclasses.replace(VIDEO, per_frame_prob=1.0, context_prob=1.0),
                           batch_size=16)
    x, captions, noise, s, _ = trainer._batch(0)
    assert x.shape == (16, 4, 3, 16, 16) and noise.shape == x.shape and s.shape == (16, 4)
    assert len(captions) == 16 and all(isinstance(c, str) for c in captions)
    assert bool((s[:, 0] == 0).all())  # every clip has a clean prefix of >= 1 frame
    assert bool((s[:, -1] > 0).all())  # ... and at most F-1 frames
    flat = dataclasses.replace(VIDEO, per_frame_prob=0.0, context_prob=0.0)
    _, _, _, s, _ = make_trainer(tmp_path / "q", video=flat, batch_size=16)._batch(0)
    assert bool((s == s[:, :1]).all())  # one time per clip


def test_video_runs_refuse_what_they_cannot_train(tmp_path: Path):
    text = TextDiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                         learn_sigma=False, text_dim=16)
    with pytest.raises(ValueError, match="text-to-video"):
        make_trainer(tmp_path / "t", model=text)
    with pytest.raises(ValueError, match="moving-shapes"):
        Trainer(dataclasses.replace(TRAIN, dataset=str(tmp_path)), tmp_path / "f", log=lambda *a: None, progress=False)
    with pytest.raises(ValueError, match="frames"):
        VideoTrainConfig(frames=1)


def test_init_from_an_image_model_folder(tmp_path: Path):
    image = DiT(TRUNK)
    with torch.no_grad():
        for p in image.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_pipeline(tmp_path / "img", image, FlowMatching())
    trainer = make_trainer(tmp_path / "run", init_from=str(tmp_path / "img"))
    trainer._init_from_class_model()
    own = trainer.model.dit.state_dict()
    for k, v in image.state_dict().items():
        assert torch.equal(own[k].reshape(v.shape), v), k  # the patch embedding gains a temporal axis of 1
    assert torch.equal(trainer.ema.state_dict()["dit.x_embedder.proj.weight"], own["x_embedder.proj.weight"])
    other = DiT(dataclasses.replace(TRUNK, hidden_size=48, num_heads=3))
    save_pipeline(tmp_path / "other", other, FlowMatching())
    with pytest.raises(ValueError, match="trunk"):
        make_trainer(tmp_path / "run2", init_from=str(tmp_path / "other"))._init_from_class_model()


def test_init_from_a_video_model_folder_adds_the_frame_embedding_and_cross_attention(tmp_path: Path):
    make_trainer(tmp_path / "run", steps=2, video=dataclasses.replace(VIDEO, frame_embed=False,
                                                                     cross_attention=False)).run()
    export_run(tmp_path / "run", tmp_path / "model")
    source = load_video_pipeline(tmp_path / "model")
    trainer = make_trainer(tmp_path / "run2", init_from=str(tmp_path / "model"))
    trainer._init_from_class_model()
    own = trainer.model.state_dict()
    for k, v in source.model.state_dict().items():
        assert torch.equal(own["dit." + k], v.float()), k
    for k, v in source.text_encoder.state_dict().items():
        assert torch.equal(own["encoder." + k], v), k
    assert own["dit.frame_embedder.weight"].abs().sum() == 0
    assert own["dit.blocks.0.cross_attn.proj.weight"].abs().sum() == 0 and "dit.caption_projection.fc1.weight" in own
    assert torch.equal(trainer.ema.state_dict()["dit.frame_embedder.weight"], own["dit.frame_embedder.weight"])
    with pytest.raises(ValueError, match="config"):
        make_trainer(tmp_path / "run3", init_from=str(tmp_path / "model"),
                     video=dataclasses.replace(VIDEO, frames=2))._init_from_class_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread) -> Path:
    """A 4-step run of TRAIN in ``run/`` and its exported video model folder in ``model/``."""
    root = tmp_path_factory.mktemp("t2v")
    make_trainer(root / "run").run()
    export_run(root / "run", root / "model")
    return root


@pytest.fixture(scope="module")
def pipe(exported: Path):
    return load_video_pipeline(exported / "model")


@pytest.fixture(scope="module")
def clips(pipe) -> torch.Tensor:
    """Two text-to-video clips of the exported model, seed 1."""
    return pipe.generate([PROMPT, "a green star bouncing on a white background"], steps=3, cfg_scale=3.0, seed=1)


def test_export_writes_a_video_model_folder(exported: Path):
    assert is_video_folder(exported / "model") and not is_video_folder(exported / "run")


def test_generated_clips_are_in_range_and_their_noise_follows_the_seed_not_the_batch(pipe, clips):
    assert clips.shape == (2, 4, 3, 16, 16) and clips.abs().max() <= 1
    again = pipe.generate([PROMPT], steps=3, cfg_scale=3.0, seed=1, batch_size=1)
    torch.testing.assert_close(again[0], clips[0])  # noise by seed, not by batch


def test_image_to_video_keeps_the_given_first_frame_under_both_guidance_modes(pipe, clips):
    first = clips[1, 0]
    i2v = pipe.generate([PROMPT], image=first, steps=3, cfg_scale=3.0)
    torch.testing.assert_close(i2v[0, 0], first)  # the given frame is the clip's first (pixel model: exact)
    text_only = pipe.generate([PROMPT], image=first, steps=3, cfg_scale=3.0, i2v_guidance="text")
    torch.testing.assert_close(text_only[0, 0], first)
    assert not torch.equal(text_only, i2v)  # joint guidance drops the image in its unconditional pass
    unguided = [pipe.generate([PROMPT], image=first, steps=3, cfg_scale=1.0, i2v_guidance=g) for g in ("joint", "text")]
    torch.testing.assert_close(unguided[0], unguided[1])  # without guidance the two are the same


def test_long_clips_in_every_long_mode(pipe):
    long = pipe.generate([PROMPT], frames=10, steps=2)
    chunked = pipe.generate([PROMPT], frames=10, steps=2, long_mode="chunked")
    extrapolated = pipe.generate([PROMPT], frames=10, steps=2, long_mode="extrapolate")
    plain = pipe.generate([PROMPT], frames=10, steps=2, long_mode="extrapolate", ultravico_alpha=1.0)
    assert long.shape == chunked.shape == extrapolated.shape == (1, 10, 3, 16, 16)
    assert not torch.equal(extrapolated, plain) and pipe.model.attention_core is None  # decay applied, then removed


def test_generate_refuses_an_unknown_long_mode_and_a_first_frame_per_clip_mismatch(pipe, clips):
    with pytest.raises(ValueError, match="long_mode"):
        pipe.generate([PROMPT], long_mode="loop")
    with pytest.raises(ValueError, match="one first frame"):
        pipe.generate([PROMPT, PROMPT, PROMPT], image=clips[:2, 0], steps=2)


def test_cli_writes_text_to_video_gifs_and_image_to_video_from_a_png(exported: Path, tmp_path: Path):
    model = str(exported / "model")
    png = tmp_path / "first.png"
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(png)
    assert main(["generate", "--video", "--model", model, "--prompt", PROMPT, "--n-per-class", "2",
                 "--steps", "2", "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 0
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 4
    assert main(["generate", "--video", "--model", model, "--prompt", PROMPT, "--image", str(png),
                 "--steps", "2", "--frames", "6", "--out", str(tmp_path / "v.png"), "--no-progress",
                 "--long-mode", "extrapolate"]) == 0
    assert main(["generate", "--video", "--model", model, "--prompt", PROMPT, "--steps", "2",
                 "--frames", "6", "--context-noise", "0.1", "--device", "cpu", "--out", str(tmp_path / "r.gif")]) == 0
    assert main(["generate", "--video", "--model", model, "--prompt", PROMPT, "--steps", "2",
                 "--frames", "7", "--history-guidance", "1", "--overlap", "1", "--out", str(tmp_path / "h.gif")]) == 0


def test_cli_eval_reports_long_clip_rollouts(exported: Path, tmp_path: Path, capsys):
    model = str(exported / "model")
    assert main(["eval", "--model", model, "--num-samples", "14", "--steps", "1", "--no-i2v",
                 "--long-clips", "2", "--long-motions", "bounce,rotate,color", "--json", str(tmp_path / "e.json"),
                 "--history-guidance", "0.5", "--overlap", "3"]) == 0
    long = json.loads((tmp_path / "e.json").read_text())["long_video"]
    assert long["clips"] == 2 and set(long["motions"]) <= {"bounce", "rotate", "color"}
    assert len(long["rollout"]["shape_accuracy_by_window"]) == 4 and long["context_noise"] == 0.0
    assert long["history_guidance"] == 0.5 and long["overlap"] == 3
    assert main(["eval", "--model", model, "--long-clips", "2", "--long-motions", "fly"]) == 2
    capsys.readouterr()


def test_cli_bad_video_inputs_are_one_line_errors(exported: Path, tmp_path: Path, capsys):
    capsys.readouterr()
    assert main(["generate", "--video", "--model", str(exported / "model"), "--prompt", PROMPT,
                 "--image", str(tmp_path / "nope.png")]) == 2
    assert main(["generate", "--video", "--model", str(exported / "run"), "--prompt", PROMPT]) == 2
    assert main(["generate", "--frames", "3"]) == 2
    assert main(["generate", "--history-guidance", "1"]) == 2
    assert main(["eval", "--overlap", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith(("ditkit generate: error:", "ditkit eval: error:")) for line in err)


def test_sparse_attention_benchmark_reports_every_plan_on_a_video_model_folder(exported: Path, tmp_path: Path):
    out = tmp_path / "sparse.json"
    done = run_benchmark("sparse_video_attention", "--model", exported / "model", "--clips", "1", "--steps", "1",
                         "--tolerances", "0.5", "--backend", "dense", "--block-size", "16", "--json", out)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 7 and all(0 <= r["attention_flops_saved"] < 1 and r["wall_clock_ratio"] > 0 for r in rows)
    far = [r for r in rows if "far cache" in r["plan"]]  # one step, in the dense warm-up: a refresh, nothing saved
    assert len(far) == 2 and all(r["refresh_calls"] == 1 and r["local_calls"] == 0 for r in far)
    assert all(r["attention_flops_saved"] == 0 and r["psnr_db"] > 60 for r in far)
    assert run_benchmark("sparse_video_attention", "--model", exported / "run").returncode == 2


def test_direction_probe_benchmark_runs_on_a_run_and_refuses_bad_input(exported: Path, tmp_path: Path):
    done = run_benchmark("video_direction_probe", "--model", exported / "run", "--clips", "4", "--levels", "0.9",
                         "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert run_benchmark("video_direction_probe", "--model", tmp_path / "nope").returncode == 2
    assert run_benchmark("video_direction_probe", "--model", exported / "model", "--levels", "high").returncode == 2


def test_direction_probe_tells_the_direction_words_apart_and_a_deaf_encoder_cannot(exported: Path, pipe):
    rows = direction_probe(pipe, 4, [0.5, 0.9])
    assert [r["s"] for r in rows] == [0.5, 0.9] and all(r["loss_true"] > 0 and r["loss_wrong"] > 0 for r in rows)
    assert any(abs(r["loss_true"] - r["loss_wrong"]) > 1e-7 for r in rows)  # the captions differ in the direction
    deaf = load_video_pipeline(exported / "model")
    with torch.no_grad():  # words all alike: no direction word can be better than another
        deaf.text_encoder.token_embedding.weight.zero_()
    assert all(r["loss_true"] == pytest.approx(r["loss_wrong"], rel=1e-6) for r in direction_probe(deaf, 4, [0.5, 0.9]))


def test_shapes_t2v_preset_starts_from_the_bundled_image_trunk():
    cfg = get_train_preset(T2V_PRESET)
    assert cfg.video is not None and cfg.model == get_train_preset("shapes-repa").model and cfg.video.frame_embed
    assert cfg.video.video_model(cfg.model).text_dim == cfg.text_encoder.dim  # tokens through cross-attention
    assert cfg.video.video_model(cfg.model).pooled_text_dim == cfg.text_encoder.dim


def test_t2v_recipe_trains_at_high_noise_on_more_directional_clips():
    motion = get_train_preset(T2V_PRESET)
    base = dataclasses.replace(motion, flow=FlowConfig(), video=VideoTrainConfig(
        temporal_patch=2, frame_embed=True, cross_attention=True))  # the same model at the default draws
    assert motion.video.video_model(motion.model) == base.video.video_model(base.model)  # a warm start fits
    assert motion.flow.train_shift > 1 and base.flow.train_shift == 1
    directional = sum(m in ("left", "right", "up", "down") for m in motion.video.motions) / len(motion.video.motions)
    assert directional > 0.7 > sum(m in ("left", "right", "up", "down") for m in base.video.motions) / len(base.video.motions)


def test_video_measurements_score_real_clips_high_and_noise_low():
    """The adherence and consistency measures, checked on real held-out clips (they must pass) and on
    shuffled frames / wrong captions (they must not): the measurement pipeline behind the video figures."""
    from ditkit.assets import default_classifier_dir
    from ditkit.eval.video import adherence, consistency, held_out_clips
    from ditkit.shapes.classifier import load_classifier

    clf = load_classifier(default_classifier_dir())
    data = held_out_clips(40, 8, 32)
    clips = torch.stack([data[i][0] for i in range(40)])  # (N, F, 3, 32, 32)
    specs = [data.clip(i) for i in range(40)]
    labels, motions = torch.tensor([s.label for s in specs]), [s.motion for s in specs]
    real = adherence(clf, clips, labels, motions)
    assert real["shape_accuracy_per_frame"] >= 0.8 and real["direction_accuracy"] >= 0.9 and real["direction_clips"] > 10
    wrong = adherence(clf, clips, (labels + 1) % 10, motions)
    assert wrong["shape_accuracy_per_frame"] < 0.2
    reversed_motion = adherence(clf, clips.flip(1), labels, motions)  # played backwards: every direction flips
    assert reversed_motion["direction_accuracy"] < 0.1
    steady = consistency(clf, clips, labels, window=4)
    shuffled = consistency(clf, clips[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))], labels, 4)
    assert steady["consecutive_psnr_mean"] > shuffled["consecutive_psnr_mean"]
    assert steady["shape_accuracy_by_window"][0] == pytest.approx(steady["shape_accuracy_first_window"], abs=1e-3)
    assert len(steady["shape_accuracy_by_window"]) == 2


def test_joint_image_text_guidance_drops_the_image_in_the_unconditional_pass():
    from ditkit.models.text_encoder import WordTextEncoder
    from ditkit.models.video_dit import VideoDiT
    from ditkit.pipelines import VideoPipeline
    from ditkit.shapes.prompts import video_vocabulary

    model = VideoDiT(VIDEO.video_model(TRUNK)).eval()
    pipe = VideoPipeline(model, FlowMatching(), WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2),
                                                                video_vocabulary()))
    seen = []
    original = model.forward
    model.forward = lambda x, t, y, **text: seen.append((x, t, text)) or original(x, t, y, **text)
    text, null = pipe.encode_prompts([PROMPT])
    assert set(text) == {"pooled_text", "text", "text_mask"} and text["text"].shape[0] == 1
    noise = torch.randn(1, 1, 3, 16, 16)
    fn = pipe.model_fn(null, 3.0, noise)
    x, t = torch.randn(1, 4, 3, 16, 16), torch.tensor([[0.0, 500.0, 500.0, 500.0]])
    fn(x, t, **text)
    xs, ts, both = seen[0]
    assert xs.shape[0] == 2 and torch.equal(xs[0], x[0]) and torch.equal(xs[1, 0], noise[0, 0])
    assert torch.equal(xs[1, 1:], x[0, 1:]) and ts[1, 0] == 1000.0 and torch.equal(ts[1, 1:], t[0, 1:])
    for k in text:  # the unconditional row is the empty prompt's, for every text keyword
        assert torch.equal(both[k][0], text[k][0]) and torch.equal(both[k][1], null[k][0]), k


def test_history_guidance_adds_a_term_that_drops_the_context():
    from ditkit.models.text_encoder import WordTextEncoder
    from ditkit.models.video_dit import VideoDiT
    from ditkit.pipelines import VideoPipeline
    from ditkit.shapes.prompts import video_vocabulary

    torch.manual_seed(0)
    model = VideoDiT(VIDEO.video_model(TRUNK)).eval()
    for p in model.parameters():  # zero-initialised output layers would make every pass alike
        p.data.add_(0.05 * torch.randn_like(p))
    pipe = VideoPipeline(model, FlowMatching(), WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2),
                                                                video_vocabulary()))
    text, null = pipe.encode_prompts([PROMPT, "a green star bouncing on a white background"])
    noise = torch.randn(2, 2, 3, 16, 16)
    x, t = torch.randn(2, 4, 3, 16, 16), torch.tensor([[0.0, 0.0, 700.0, 700.0]] * 2)
    raw = pipe.model_fn(null, 1.0)
    with torch.no_grad():
        c, u = raw(x, t, **text), raw(x, t, **{k: v.expand(2, *v.shape[1:]) for k, v in null.items()})
        x_nh, t_nh = x.clone(), t.clone()
        x_nh[:, :2], t_nh[:, :2] = noise, 1000.0
        c_nh = raw(x_nh, t_nh, **text)
        assert (c - c_nh).abs().max() > 1e-4  # the context matters to this model
        for w in (0.0, 2.0):
            got = pipe.history_model_fn(null, 3.0, w, noise)(x, t, **text)
            torch.testing.assert_close(got, u + 3.0 * (c - u) + w * (c - c_nh), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(pipe.history_model_fn(null, 3.0, 0.0, noise)(x, t, **text),
                                   pipe.model_fn(null, 3.0)(x, t, **text), atol=1e-5, rtol=1e-4)
    long = pipe.generate([PROMPT], frames=8, steps=2, overlap=2, history_guidance=1.5, seed=2)
    again = pipe.generate([PROMPT], frames=8, steps=2, overlap=2, history_guidance=1.5, seed=2)
    plain = pipe.generate([PROMPT], frames=8, steps=2, overlap=2, seed=2)
    assert long.shape == (1, 8, 3, 16, 16) and torch.equal(long, again) and not torch.equal(long, plain)
    torch.testing.assert_close(long[:, :4], plain[:, :4])  # the first window has no history to guide on
    for bad, match in (({"frames": 4}, "rollouts"), ({"frames": 8, "long_mode": "chunked"}, "rollouts"),
                       ({"frames": 8, "history_guidance": -1.0}, ">= 0")):
        with pytest.raises(ValueError, match=match):
            pipe.generate([PROMPT], steps=1, **{"history_guidance": 1.0, **bad})


def test_bundled_video_model_loads_and_makes_a_gif(tmp_path: Path, capsys):
    """assets/shapes-t2v: the bundled text-to-video model, fp16 on disk, within the 30 MB budget, sampled as
    the README does (factorized: assets/shapes-t2i draws the first frame)."""
    from ditkit.assets import default_text_model_dir, default_video_model_dir

    folder = default_video_model_dir()
    pipe = load_video_pipeline(folder)
    assert pipe.info["weights_dtype"] == "float16" and pipe.config.num_frames == 8 and pipe.config.text_dim > 0
    assert pipe.caption_style == "sized"  # "a small red circle moving left on ...": the size word stays
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 30 * 2**20
    clips = pipe.generate(["a small red circle moving left on a blue background"], steps=2)
    assert clips.shape == (1, 8, 3, 32, 32) and torch.isfinite(clips).all()
    out = tmp_path / "clip.gif"
    main(["generate", "--video", "--prompt", "a small green star moving up on a white background", "--steps", "2",
          "--first-frame-model", str(default_text_model_dir()), "--first-frame-redraws", "1", "--out", str(out)])
    assert out.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert "note:" not in capsys.readouterr().err
    main(["generate", "--video", "--prompt", "a green star moving up on a white background", "--steps", "1",
          "--first-frame-model", str(default_text_model_dir()), "--out", str(out)])
    assert "no size word" in capsys.readouterr().err  # the image model would draw off-caption frames


def test_init_from_a_text_to_image_model_folder_reproduces_it_on_one_frame(tmp_path: Path):
    from ditkit.models.text_dit import build_model
    from ditkit.models.text_encoder import WordTextEncoder
    from ditkit.pipelines import load_pipeline

    cfg = TextDiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                        learn_sigma=False, use_rope=True, qk_norm=True, mlp_type="mixffn", arch="cross", text_dim=16)
    torch.manual_seed(0)
    t2i = build_model(cfg)
    with torch.no_grad():
        for p in t2i.parameters():
            p.add_(0.1 * torch.randn_like(p))
    words = ("a", "red", "circle", "on", "blue", "background")
    encoder = WordTextEncoder(TRAIN.text_encoder, words)
    save_pipeline(tmp_path / "t2i", t2i, FlowMatching(), text_encoder=encoder)
    trainer = make_trainer(tmp_path / "run", init_from=str(tmp_path / "t2i"))
    logs = []
    trainer.log = logs.append
    trainer._init_from_class_model()
    fit = float(logs[0].split("fit error ")[1].rstrip(")"))
    source = load_pipeline(tmp_path / "t2i")
    prompt = ["a red circle on a blue background"]
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([600.0])
    hidden = []
    for m in (source.model.blocks[-1], trainer.model.dit.blocks[-1]):
        m.register_forward_hook(lambda mod, inp, out: hidden.append(out))
    with torch.no_grad():
        tokens, mask = source.text_encoder.encode(prompt)
        ref = source.model(x, t, text=tokens, text_mask=mask)
        ids, ids_mask = trainer.model.encoder.tokenize(prompt)
        assert torch.allclose(trainer.model.encoder(ids, ids_mask), tokens, atol=1e-6)  # words matched by name
        out = trainer.model(x[:, None], t[:, None], ids, ids_mask)[:, 0]  # a one-frame video
    # every block is carried over exactly (adaLN-single -> per-block adaLN); the final layer is a fit
    assert ((hidden[1] - hidden[0]).norm() / hidden[0].norm()) < 1e-5
    assert 0 < fit < 0.2 and ((out - ref).norm() / ref.norm()) < fit
    new = [w for w in trainer.model.encoder.vocab if w not in encoder.vocab]
    assert "moving" in new and "left" in new
    with pytest.raises(ValueError, match="cross-attention"):
        make_trainer(tmp_path / "run2", init_from=str(tmp_path / "t2i"),
                     video=dataclasses.replace(VIDEO, cross_attention=False))._init_from_class_model()


def test_one_command_preset_and_context_noise_runs(tmp_path: Path):
    one = get_train_preset(T2V_PRESET)
    assert one.init_from == "assets/shapes-t2i" and one.video.context_noise > 0 and one.flow.train_shift > 1
    trainer = make_trainer(tmp_path / "r", steps=2, video=dataclasses.replace(VIDEO, context_noise=0.2))
    lv = trainer._context_level(1)
    assert lv.shape == (TRAIN.batch_size,) and (lv >= 0).all() and (lv < 0.2).all()
    assert torch.equal(lv, trainer._context_level(1)) and make_trainer(tmp_path / "q")._context_level(1) is None
    trainer.run()


def test_frame_local_penalty_anneals_to_zero_and_masks_only_cross_frame_logits():
    from ditkit.train.video import FrameLocalBias, frame_local_penalty

    cfg = dataclasses.replace(VIDEO, frame_local_steps=4, frame_local_bias=8.0)
    assert [frame_local_penalty(cfg, s) for s in range(6)] == [8.0, 6.0, 4.0, 2.0, 0.0, 0.0]
    assert frame_local_penalty(VIDEO, 0) == 0.0  # off by default
    with pytest.raises(ValueError, match="frame_local"):
        VideoTrainConfig(frame_local_steps=-1)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 3 * 4, 8, generator=g) for _ in range(3))  # (N, H, T, hd), grid (3, 2, 2)
    grid = (3, 2, 2)
    # a huge penalty = attention within each frame only
    out = FrameLocalBias(1e4)(q, k, v, layer=0, grid=grid, axes="all")
    qf, kf, vf = (x.reshape(2, 2, 3, 4, 8).transpose(1, 2).reshape(6, 2, 4, 8) for x in (q, k, v))  # per frame
    local = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf).reshape(2, 3, 2, 4, 8).transpose(1, 2)
    torch.testing.assert_close(out, local.reshape(2, 2, 12, 8), atol=1e-5, rtol=1e-5)
    # zero penalty, or a block that attends within a frame or across time only, is plain attention
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(FrameLocalBias(0.0)(q, k, v, layer=0, grid=grid, axes="all"), dense)
    torch.testing.assert_close(FrameLocalBias(8.0)(q, k, v, layer=0, grid=(3, 1, 1), axes="time"), dense)
    mid = FrameLocalBias(2.0)(q, k, v, layer=0, grid=grid, axes="all")
    assert (mid - dense).abs().max() > 1e-3 and (mid - out).abs().max() > 1e-3


def test_frame_local_warm_up_runs_and_leaves_no_core_behind(tmp_path: Path):
    video = dataclasses.replace(VIDEO, frame_local_steps=2)
    trainer = make_trainer(tmp_path / "r", video=video)
    seen = []
    step = trainer.train_step

    def spy():
        loss = step()
        seen.append(trainer.model.dit.attention_core)
        return loss

    trainer.train_step = spy
    trainer.run()
    assert [type(c).__name__ for c in seen] == ["FrameLocalBias", "FrameLocalBias", "NoneType", "NoneType"]
    assert seen[0].penalty == 8.0 and seen[1].penalty == 4.0
    plain = make_trainer(tmp_path / "q")
    plain.run()
    a, b = trainer.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the warm-up changed the training


def test_two_frames_per_token_trains_and_generates_image_to_video(tmp_path: Path):
    """Temporal patch 2: the first frame of image-to-video shares a token with a generated frame (frame
    replacement inside the patch), and every sampling mode runs and keeps the given frame."""
    video = dataclasses.replace(VIDEO, temporal_patch=2, context_prob=1.0)
    make_trainer(tmp_path / "run", video=video).run()
    export_run(tmp_path / "run", tmp_path / "model")
    pipe = load_video_pipeline(tmp_path / "model")
    assert pipe.config.temporal_patch == 2
    first = torch.rand(3, 16, 16) * 2 - 1
    for guidance in ("joint", "text"):
        clip = pipe.generate([PROMPT], image=first, steps=3, cfg_scale=3.0, i2v_guidance=guidance)
        assert clip.shape == (1, 4, 3, 16, 16)
        torch.testing.assert_close(clip[0, 0], first)
    long = pipe.generate([PROMPT], image=first, frames=8, steps=2)
    assert long.shape == (1, 8, 3, 16, 16) and torch.isfinite(long).all()
    torch.testing.assert_close(long[0, 0], first)
    with pytest.raises(ValueError, match="block_frames"):
        pipe.generate([PROMPT], frames=3, steps=2)
