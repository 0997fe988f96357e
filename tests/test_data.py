import numpy as np
import pytest
import torch
from PIL import Image

from ditkit.data.folder import ImageFolderDataset
from ditkit.shapes.data import CLASSES, COLORS, ShapesDataset, class_index, render, sample_spec


def test_shapes_deterministic_and_disjoint_seeds():
    a, b = ShapesDataset(20, seed=5), ShapesDataset(20, seed=5)
    for i in (0, 7, 19):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and ya == yb
    c = ShapesDataset(20, seed=6)
    assert not torch.equal(a[0][0], c[0][0])


def test_shapes_range_shape_and_classes():
    ds = ShapesDataset(200, seed=1)
    images, labels = ds.materialize()
    assert images.shape == (200, 32, 32, 3) and images.dtype == torch.uint8
    assert set(labels.tolist()) == set(range(len(CLASSES)))  # all classes appear
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_every_class_renders_distinct_pixels():
    rng = np.random.default_rng(0)
    spec = sample_spec(rng, label=0)
    imgs = [render(spec.__class__(**{**spec.__dict__, "label": k}), 32) for k in range(len(CLASSES))]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i].astype(int) - imgs[j].astype(int)).sum() > 0, (CLASSES[i], CLASSES[j])


def test_shape_covers_foreground_and_stays_inside():
    ds = ShapesDataset(50, seed=2)
    for i in range(50):
        spec = ds.spec(i)
        img = render(spec, 32).astype(int)
        fg = np.abs(img - np.array(spec.background_rgb)).sum(-1) > 60
        assert fg.sum() > 15, spec  # visible
        assert not fg[0].all() and not fg[:, 0].all()  # not clipped to a border line


def test_captions_name_class_and_colours():
    ds = ShapesDataset(30, seed=3)
    for i in range(30):
        spec, cap = ds.spec(i), ds.caption(i)
        assert spec.name in cap and spec.color in cap and f"{spec.background} background" in cap
        assert spec.color in COLORS and spec.background != spec.color


def test_balanced_labels_and_moves():
    ds = ShapesDataset(20, seed=0, labels=[3, 4])
    assert [ds[i][1] for i in range(4)] == [3, 4, 3, 4]
    s = ds.spec(0)
    m = s.moved(dx=0.1, dangle=0.5)
    assert m.cx == pytest.approx(s.cx + 0.1) and m.label == s.label


def test_class_index():
    assert class_index("star") == CLASSES.index("star")
    assert class_index(3) == 3 and class_index("3") == 3
    with pytest.raises(ValueError, match="unknown class"):
        class_index("dodecahedron")
    with pytest.raises(ValueError):
        class_index(10)


def test_image_folder(tmp_path):
    for cls, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for k in range(2):
            Image.new("RGB", (40, 30), color).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert len(ds) == 4 and ds.classes == ["a", "b"]
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and y == 1
    assert x[2].mean() > 0.9 and x[0].mean() < -0.9  # blue


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        ImageFolderDataset(tmp_path)[0]


def test_prompt_notes_flag_unknown_words_and_a_missing_size_word():
    from ditkit.shapes.prompts import prompt_notes, shapes_vocabulary

    vocab = shapes_vocabulary()
    assert prompt_notes("a small red circle on a blue background", vocab) == []
    assert prompt_notes(ShapesDataset(4, seed=3).caption(1), vocab) == []  # every training caption reads clean
    missing = prompt_notes("a red circle on a blue background", vocab)
    assert len(missing) == 1 and "no size word" in missing[0]
    assert prompt_notes("a red circle on a blue background", vocab, size_word=False) == []
    unknown = prompt_notes("a small red zebra on a blue background", vocab)
    assert len(unknown) == 1 and "zebra" in unknown[0]
    assert prompt_notes("a red circle", ("a", "red", "circle")) == []  # a vocabulary without size words
