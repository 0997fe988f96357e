"""The shapes classifier: the committed asset is accurate on fresh held-out data; training runs."""

from pathlib import Path

import pytest
import torch

from ditkit.eval.metrics import class_accuracy
from ditkit.io.checkpoint import CheckpointError, save_model
from ditkit.shapes.classifier import EVAL_SEED, ClassifierConfig, ShapesClassifier, load_classifier
from ditkit.shapes.data import ShapesDataset, to_tensor
from ditkit.train.classifier import AugmentConfig, augment, train_classifier

ASSET = Path(__file__).resolve().parents[1] / "assets" / "classifier"


def test_committed_classifier_is_accurate_on_held_out_images():
    clf = load_classifier(ASSET)
    assert not clf.training
    pixels, labels = ShapesDataset(500, seed=EVAL_SEED).materialize()
    images = to_tensor(pixels.numpy())
    assert class_accuracy(clf, images, labels) >= 0.98
    assert clf.features(images[:4]).shape == (4, clf.config.feature_dim)
    assert (ASSET / "model.safetensors").stat().st_size < 2 * 1024 * 1024


def test_augment_keeps_shape_and_range():
    x = to_tensor(ShapesDataset(16, seed=0).materialize()[0].numpy())
    y = augment(x, torch.Generator().manual_seed(0), AugmentConfig(p_affine=1.0, p_blur=1.0, p_lowpass=1.0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    y2 = augment(x, torch.Generator().manual_seed(0), AugmentConfig(p_affine=1.0, p_blur=1.0, p_lowpass=1.0))
    torch.testing.assert_close(y, y2)  # seeded


def test_tiny_classifier_trains_saves_and_loads(tmp_path):
    config = ClassifierConfig(widths=(8, 16), groups=4)
    lines = []
    info = train_classifier(
        tmp_path / "clf", steps=3, batch_size=8, lr=1e-3, log=lines.append, num_train=32, num_eval=20, config=config
    )
    assert info["kind"] == "shapes-classifier" and lines
    assert 0.0 <= info["metrics"]["clean_accuracy"] <= 1.0 and "noisy_accuracy" in info["metrics"]
    clf = load_classifier(tmp_path / "clf")
    assert clf.config == config and not clf.training
    assert clf(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_load_classifier_rejects_other_models(tmp_path):
    state = ShapesClassifier(ClassifierConfig(widths=(8,), groups=4)).state_dict()
    save_model(tmp_path / "other", state, {"kind": "dit"})
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "other")
    wrong = {"kind": "shapes-classifier", "config": {"widths": [8, 16], "groups": 4}}
    save_model(tmp_path / "wrong", state, wrong)
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "wrong")
