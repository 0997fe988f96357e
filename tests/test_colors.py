"""The colour check of text-to-image samples (ditkit.shapes.colors) on real dataset images."""

import pytest
import torch

from ditkit.shapes.colors import color_accuracy, dominant_colors, nearest_color, parse_caption
from ditkit.shapes.data import COLORS, ShapesDataset, to_tensor


def test_real_images_pass_the_colour_check():
    ds = ShapesDataset(400, seed=1234)
    images, _ = ds.materialize()
    captions = [ds.caption(i) for i in range(len(ds))]
    result = color_accuracy(to_tensor(images), captions)  # float images in [-1, 1]
    assert result["n"] == 400 and result["both"] >= 0.95, result
    assert color_accuracy(images, captions) == result  # uint8 (N, H, W, 3) too


def test_wrong_captions_fail_it():
    ds = ShapesDataset(50, seed=9)
    images, _ = ds.materialize()
    swapped = []  # shape and background colours exchanged
    for i in range(len(ds)):
        p = parse_caption(ds.caption(i))
        swapped.append(f"a {p.size} {p.background} {p.shape} on a {p.color} background")
    result = color_accuracy(images, swapped)
    assert result["foreground"] <= 0.05 and result["background"] <= 0.05


def test_blank_image_has_no_foreground_and_names_are_nearest():
    blank = torch.full((1, 3, 32, 32), -1.0)  # black everywhere
    assert dominant_colors(blank) == [(None, "black")]
    assert color_accuracy(blank, ["a small red circle on a black background"])["both"] == 0.0
    rgb = torch.tensor([[c + 15 if c < 128 else c - 15 for c in COLORS[name]] for name in COLORS], dtype=torch.float32)
    assert nearest_color(rgb) == list(COLORS)


def test_parse_caption():
    p = parse_caption("a small red triangle on a green background")
    assert (p.size, p.color, p.shape, p.background) == ("small", "red", "triangle", "green")
    for bad in ("a red triangle", "a small red blob on a green background", "a small pink circle on a red background"):
        with pytest.raises(ValueError, match="not a shapes caption"):
            parse_caption(bad)
    with pytest.raises(ValueError, match="captions"):
        color_accuracy(torch.zeros(2, 3, 8, 8), ["a small red circle on a blue background"])
