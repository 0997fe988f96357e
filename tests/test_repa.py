"""REPA in the trainer: teacher features on the DiT's token grid, gradients through the projector and
the aligned blocks only, exact resume with the projector checkpointed, refusal of the judge as teacher.

Tiny runs (the tests/ddp_worker.py model: D=32, depth 2, 16x16 shapes, 4x4 tokens) and a random-weight
teacher CNN built here.
"""

import dataclasses
from pathlib import Path

import ddp_worker as worker
import pytest
import torch

from ditkit.io.checkpoint import CheckpointError, load_tensors, save_model
from ditkit.shapes.classifier import KIND, ClassifierConfig, ShapesClassifier
from ditkit.train.repa import RepaAlignment, RepaConfig
from ditkit.train.trainer import TrainConfig

torch.set_num_threads(1)

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ClassifierConfig(widths=(8, 16, 16, 24))
    folder = tmp_path_factory.mktemp("teacher")
    save_model(folder, ShapesClassifier(config).state_dict(),
               {"kind": KIND, "config": dataclasses.asdict(config)})
    return folder


def make(out, teacher_dir, **changes):
    return worker.make_trainer(out, repa=RepaConfig(encoder=str(teacher_dir), depth=1, proj_hidden=16), **changes)


def test_targets_and_gradients(tmp_path, teacher_dir):
    from ditkit.models.dit import DiT

    model = DiT(worker.MODEL)
    align = RepaAlignment(RepaConfig(encoder=str(teacher_dir), depth=1, proj_hidden=16), model, (4, 4))
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    y = align.targets(images)
    assert y.shape == (3, 16, 16 + 24)  # 4x4 tokens; the last two stages' widths
    # token k = row * 4 + col, as the DiT's row-major order: the (row 1, col 2) token is pooled from that cell
    maps = align._teacher[0].feature_maps(images)
    assert maps[-2].shape[-2:] == (4, 4) and torch.allclose(y[:, 1 * 4 + 2, :16], maps[-2][:, :, 1, 2])
    model(torch.randn(3, 3, 16, 16), torch.rand(3), torch.tensor([0, 1, 2])).sum()
    loss = align.loss(y)
    assert loss.ndim == 0 and -1 <= float(loss.detach()) <= 1
    loss.backward()
    assert all(p.grad is not None for p in align.projector.parameters())
    assert model.blocks[0].attn.qkv.weight.grad is not None  # the aligned block learns from it ...
    assert model.blocks[1].attn.qkv.weight.grad is None  # ... the blocks after it do not
    assert not any(k.startswith("_teacher") for k in align.state_dict())  # the teacher is never saved
    with pytest.raises(RuntimeError, match="no hidden state"):
        align.loss(y)  # a hidden state is used once


def test_resume_is_exact_and_projector_checkpointed(tmp_path, teacher_dir):
    straight = make(tmp_path / "a", teacher_dir, steps=4, ckpt_every=2)
    straight.run()
    make(tmp_path / "b", teacher_dir, steps=2, ckpt_every=2).run()
    resumed = make(tmp_path / "b", teacher_dir, steps=4, ckpt_every=2)
    resumed.run()
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k, v in straight.repa.state_dict().items():
        assert torch.equal(v, resumed.repa.state_dict()[k]), k
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000004"
    assert set(load_tensors(ckpt / "repa.safetensors")) == set(straight.repa.state_dict())
    logged = (tmp_path / "a" / "train_log.jsonl").read_text()
    assert '"proj_loss"' in logged


def test_repa_changes_training_and_config_round_trips(tmp_path, teacher_dir):
    plain = worker.make_trainer(tmp_path / "p", steps=2)
    plain.run()
    aligned = make(tmp_path / "r", teacher_dir, steps=2)
    aligned.run()
    w = "blocks.0.attn.qkv.weight"
    assert not torch.equal(plain.model.state_dict()[w], aligned.model.state_dict()[w])
    cfg = aligned.cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_repa_until_stops_the_alignment_for_good(tmp_path, teacher_dir):
    """HASTE's termination: steps < until add the term; later steps are plain steps (projector untouched)."""
    trainer = worker.make_trainer(tmp_path / "h", steps=3,
                                  repa=RepaConfig(encoder=str(teacher_dir), depth=1, proj_hidden=16, until=1))
    trainer.train_step()
    assert trainer.last_proj_loss != 0.0
    proj = {k: v.clone() for k, v in trainer.repa.state_dict().items()}
    w = trainer.model.state_dict()["blocks.0.attn.qkv.weight"].clone()
    trainer.train_step()
    assert trainer.last_proj_loss == 0.0
    assert all(torch.equal(v, trainer.repa.state_dict()[k]) for k, v in proj.items())
    assert not torch.equal(w, trainer.model.state_dict()["blocks.0.attn.qkv.weight"])
    with pytest.raises(ValueError, match="until must be >= 0"):
        RepaConfig(until=-1)


def test_refusals(tmp_path, teacher_dir, monkeypatch):
    with pytest.raises(ValueError, match="depth 3 is not a block"):
        worker.make_trainer(tmp_path / "d", repa=RepaConfig(encoder=str(teacher_dir), depth=3))
    make(tmp_path / "ok", teacher_dir, steps=2).run()
    with pytest.raises(CheckpointError, match="different REPA setting"):
        worker.make_trainer(tmp_path / "ok", steps=4,
                            repa=RepaConfig(encoder=str(teacher_dir), depth=2, proj_hidden=16)).run()
    monkeypatch.setenv("DITKIT_ASSETS", str(tmp_path / "assets"))
    judge = tmp_path / "assets" / "classifier"
    judge.mkdir(parents=True)
    for f in teacher_dir.iterdir():
        (judge / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="is the judging classifier"):
        make(tmp_path / "j", teacher_dir)


def test_video_targets_are_per_frame_and_frame_major(teacher_dir):
    from ditkit.models.video_dit import VideoDiT, VideoDiTConfig

    cfg = RepaConfig(encoder=str(teacher_dir), depth=1, proj_hidden=16)
    clips = torch.rand(2, 4, 3, 16, 16) * 2 - 1  # (N, F, 3, H, W)
    model = VideoDiT(VideoDiTConfig(dit=worker.MODEL, num_frames=4))
    align = RepaAlignment(cfg, model, (4, 4))
    y = align.targets(clips)
    assert y.shape == (2, 4 * 16, 16 + 24)  # frame-major: frame f's tokens are rows f*16 .. f*16+15
    assert torch.allclose(y[1, 2 * 16:3 * 16], align.targets(clips[1:2, 2])[0], atol=1e-5)
    pair = RepaAlignment(cfg, VideoDiT(VideoDiTConfig(dit=worker.MODEL, num_frames=4, temporal_patch=2)), (4, 4),
                         temporal_patch=2)
    y2 = pair.targets(clips)
    assert y2.shape == (2, 2 * 16, 40)  # a token spans two frames: the mean of their features
    assert torch.allclose(y2[0, 16:32], (y[0, 32:48] + y[0, 48:64]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="temporal patches"):
        pair.targets(clips[:, :3])


def test_text_to_video_training_with_repa(tmp_path, teacher_dir):
    from ditkit.models.text_encoder import WordEncoderConfig
    from ditkit.shapes.moving import MovingShapesDataset
    from ditkit.train.trainer import Trainer
    from ditkit.train.video import VideoTrainConfig

    def run(out, repa):
        cfg = TrainConfig(model=dataclasses.replace(worker.MODEL, num_classes=10, class_dropout_prob=0.1), steps=2,
                          batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, ckpt_every=2, seed=5,
                          text_encoder=WordEncoderConfig(dim=16, depth=1, num_heads=2),
                          video=VideoTrainConfig(frames=2, text_dim=16), repa=repa)
        trainer = Trainer(cfg, out, dataset=MovingShapesDataset(8, frames=2, image_size=16), log=lambda *a: None,
                          progress=False)
        trainer.run()
        return trainer

    plain = run(tmp_path / "p", None)
    aligned = run(tmp_path / "r", RepaConfig(encoder=str(teacher_dir), depth=1, proj_hidden=16))
    assert '"proj_loss"' in (tmp_path / "r" / "train_log.jsonl").read_text()
    w = "dit.blocks.0.attn.qkv.weight"
    assert not torch.equal(plain.model.state_dict()[w], aligned.model.state_dict()[w])
