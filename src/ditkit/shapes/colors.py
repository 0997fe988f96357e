"""Colour check for text-to-image samples: are the caption's named colours the ones drawn?

A shapes caption reads "a {size} {colour} {shape} on a {background} background" (see
`ditkit.shapes.data`): one filled shape in a named colour, jittered by at most ±20 per channel,
on a plain background in another named colour (the pair differs by ≥ 150 in L1). The check
recovers both colours from pixels alone and names each by its nearest entry of `COLORS`:

1. background = the per-channel median of the image's border ring (``border`` pixels wide); every
   shape lies fully inside the image, so the ring is background;
2. foreground = the per-channel median of the pixels farthest from the background, those whose RGB
   distance to it exceeds ``max(min_contrast, fraction x the largest distance)`` (this drops the
   anti-aliased edge pixels, mixtures of the two colours); an image with no such pixel (no shape
   drawn) has no foreground colour and fails the check;
3. each median is named by its nearest named colour (Euclidean distance in RGB).

`color_accuracy` compares these names with the caption's. On real dataset images the check is
right ≥ 95 % of the time (tested in tests/test_colors.py), so a model's score is a fair measure of
whether it draws the named colours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import CLASSES, COLOR_NAMES, COLORS, SIZE_WORDS

_PALETTE = torch.tensor([COLORS[n] for n in COLOR_NAMES], dtype=torch.float32)  # (K, 3)
_CAPTION = re.compile(r"^a (\w+) (\w+) (\w+) on a (\w+) background$")


@dataclass(frozen=True)
class CaptionParts:
    size: str
    color: str
    shape: str
    background: str


def parse_caption(caption: str) -> CaptionParts:
    """Split a shapes caption into its words; ValueError if it is not one."""
    m = _CAPTION.match(caption.strip().lower())
    sizes = {w for _, w in SIZE_WORDS}
    if m is None or m[1] not in sizes or m[2] not in COLORS or m[3] not in CLASSES or m[4] not in COLORS:
        raise ValueError(f"not a shapes caption (a SIZE COLOUR SHAPE on a COLOUR background): {caption!r}")
    return CaptionParts(m[1], m[2], m[3], m[4])


def nearest_color(rgb: torch.Tensor) -> list[str]:
    """Names of the nearest named colours of RGB values (..., 3) in 0..255, flattened to a list."""
    d = torch.cdist(rgb.reshape(-1, 3).float(), _PALETTE)  # (M, K)
    return [COLOR_NAMES[i] for i in d.argmin(1).tolist()]


def _to_rgb255(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [-1, 1] or uint8 (N, H, W, 3) -> float (N, H, W, 3) in 0..255."""
    if images.dtype == torch.uint8:
        return images.float()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W) in [-1, 1] or uint8 (N, H, W, 3), got {tuple(images.shape)}")
    return ((images.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1)  # (N, H, W, 3)


def dominant_colors(images: torch.Tensor, border: int = 1, fraction: float = 0.6,
                    min_contrast: float = 40.0) -> list[tuple[str | None, str]]:
    """(foreground name or None, background name) per image (see the module docstring)."""
    rgb = _to_rgb255(images)
    n, h, w, _ = rgb.shape
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[border:h - border, border:w - border] = False  # (H, W) border pixels
    out = []
    for img in rgb:
        bg = img[ring].median(dim=0).values  # (3,)
        px = img.reshape(-1, 3)  # (H*W, 3)
        dist = (px - bg).norm(dim=1)  # (H*W,)
        far = dist > max(min_contrast, fraction * float(dist.max()))
        fg = nearest_color(px[far].median(dim=0).values)[0] if bool(far.any()) else None
        out.append((fg, nearest_color(bg)[0]))
    return out


def color_accuracy(images: torch.Tensor, captions: Sequence[str], **kwargs) -> dict:
    """Fractions of images whose shape colour, background colour, and both match their captions."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    parts = [parse_caption(c) for c in captions]
    found = dominant_colors(images, **kwargs)
    fg = [f == p.color for (f, _), p in zip(found, parts)]
    bg = [b == p.background for (_, b), p in zip(found, parts)]
    n = max(1, len(parts))
    return {"foreground": sum(fg) / n, "background": sum(bg) / n, "both": sum(a and b for a, b in zip(fg, bg)) / n,
            "n": len(parts)}
