"""The per-task parts of a training step (`ditkit.train.losses`): which task a config trains, the CFG drop of
labels and captions, micro-batch slicing, and that a trainer step minimises its task's loss."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ditkit.config import DiTConfig, TextDiTConfig
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.shapes.data import ShapesDataset
from ditkit.shapes.moving import MovingShapesDataset
from ditkit.train import losses
from ditkit.train.trainer import TrainConfig, Trainer
from ditkit.train.video import VideoTrainConfig

TRUNK = DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                  learn_sigma=False)
TEXT = TextDiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                     learn_sigma=False, text_dim=16)
ENCODER = WordEncoderConfig(dim=16, depth=1, num_heads=2)
VIDEO = VideoTrainConfig(frames=4, text_dim=16, per_frame_prob=0.5, context_prob=0.5)
RUN = TrainConfig(model=TRUNK, steps=2, batch_size=4, warmup_steps=1, seed=2, text_encoder=ENCODER)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def trainer(tmp_path: Path, **changes) -> Trainer:
    cfg = dataclasses.replace(RUN, **changes)
    data = (MovingShapesDataset(16, frames=4, image_size=16) if cfg.video is not None else ShapesDataset(16, image_size=16))
    return Trainer(cfg, tmp_path, dataset=data, log=lambda *a: None, progress=False)


def test_the_config_names_the_task():
    assert losses.task_of(RUN) is losses.CLASS
    assert losses.task_of(dataclasses.replace(RUN, model=TEXT)) is losses.TEXT
    assert losses.task_of(dataclasses.replace(RUN, video=VIDEO)) is losses.VIDEO
    assert losses.VIDEO.loss is losses.video_loss and losses.TEXT.loss is losses.CLASS.loss is losses.image_loss


def test_dropped_labels_become_the_null_class():
    cond = losses.class_conditions(None, torch.tensor([3, 4, 5]), torch.tensor([0, 1, 0]), RUN)
    assert cond["y"].tolist() == [3, TRUNK.num_classes, 5]


def test_dropped_captions_become_the_empty_prompt():
    encoder = WordTextEncoder(ENCODER, ("a", "red", "circle"))
    cond = losses.caption_conditions(SimpleNamespace(encoder=encoder), ["a red circle", "a circle"], torch.tensor([0, 1]),
                                     RUN)
    ids, mask = encoder.tokenize(["a red circle", ""])
    assert torch.equal(cond["ids"], ids) and torch.equal(cond["ids_mask"], mask)


def test_a_micro_batch_takes_the_same_rows_of_every_field():
    batch = losses.Batch(torch.arange(4.0), {"y": torch.arange(10, 14)}, torch.arange(20.0, 24.0), torch.arange(4.0) / 4,
                         context_level=torch.arange(30.0, 34.0))
    part = batch.rows(slice(1, 3))
    assert part.x.tolist() == [1.0, 2.0] and part.cond["y"].tolist() == [11, 12] and part.noise.tolist() == [21.0, 22.0]
    assert part.s.tolist() == [0.25, 0.5] and part.context_level.tolist() == [31.0, 32.0]
    assert losses.Batch(batch.x, {}, batch.noise, batch.s).rows(slice(0, 1)).context_level is None


@pytest.mark.parametrize("task", ["class", "text", "video"])
def test_a_step_returns_its_tasks_loss_on_the_steps_batch(tmp_path: Path, task: str):
    changes = {"class": {}, "text": {"model": TEXT}, "video": {"video": VIDEO}}[task]
    t = trainer(tmp_path, **changes)
    assert t.task.name == task
    batch, _ = t._step_batch(0)
    with torch.no_grad():
        want = float(t.task.loss(t.process, t.model, batch, t.cfg))
    assert t.train_step() == pytest.approx(want, rel=1e-6)
    clips = batch.x.ndim == 5
    assert clips == (task == "video") and batch.s.shape == ((4, 4) if clips else (4,))
