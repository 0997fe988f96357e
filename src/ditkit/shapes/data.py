"""Procedural shapes: a dataset that ships as code.

Every image is one filled geometric shape on a plain background, drawn from a
`ShapeSpec` (class, centre, radius, rotation, colours). A spec is a pure value
that `render` turns into pixels, so moving-shape video clips are a sequence of
specs (see `ShapeSpec.moved`), not a second renderer.

Determinism: sample `i` of a dataset with seed `s` comes from
`numpy.random.default_rng([s, i])`, so any subset can be drawn in any order and
in any process, and two datasets with different seeds never share a sample.

Rendering is done at 4x the target size and box-filtered down, which gives
anti-aliased edges without any dependency beyond Pillow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw

CLASSES = (
    "circle", "square", "triangle", "pentagon", "hexagon",
    "star", "cross", "ring", "crescent", "heart",
)

# Named colours: the caption names the colour, the pixel value is jittered around it.
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "cyan": (40, 210, 220),
    "magenta": (210, 50, 200),
    "orange": (245, 140, 30),
    "purple": (120, 50, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLOR_NAMES = tuple(COLORS)

SIZE_WORDS = ((0.30, "small"), (0.40, "medium"), (1.0, "large"))  # radius / image side thresholds
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeSpec:
    """One shape on a background. Geometry is in units of the image side (0..1)."""

    label: int  # index into CLASSES
    cx: float  # centre, x (column), 0..1
    cy: float  # centre, y (row), 0..1
    radius: float  # circumscribed radius, fraction of the side
    angle: float  # rotation, radians
    color: str  # key of COLORS
    background: str  # key of COLORS
    color_rgb: tuple[int, int, int]  # jittered pixel value of the shape
    background_rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        return CLASSES[self.label]

    def caption(self) -> str:
        size = next(word for limit, word in SIZE_WORDS if self.radius < limit)
        return f"a {size} {self.color} {self.name} on a {self.background} background"

    def moved(self, dx: float = 0.0, dy: float = 0.0, dangle: float = 0.0) -> ShapeSpec:
        """The same shape shifted and rotated (the building block of moving-shape clips)."""
        return replace(self, cx=self.cx + dx, cy=self.cy + dy, angle=self.angle + dangle)


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def sample_spec(rng: np.random.Generator, label: int | None = None) -> ShapeSpec:
    """Draw a random spec; the shape always lies fully inside the image."""
    if label is None:
        label = int(rng.integers(len(CLASSES)))
    radius = float(rng.uniform(0.22, 0.45))
    margin = radius * 1.02
    cx, cy = (float(rng.uniform(margin, 1 - margin)) for _ in range(2))
    angle = float(rng.uniform(0, 2 * math.pi))
    fg = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    bg = fg
    while _too_close(fg, bg):
        bg = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    return ShapeSpec(label, cx, cy, radius, angle, fg, bg, _jitter(rng, COLORS[fg], 20), _jitter(rng, COLORS[bg], 20))


def _too_close(a: str, b: str) -> bool:
    """Colour pairs too similar to tell a shape from its background."""
    ca, cb = np.array(COLORS[a]), np.array(COLORS[b])
    return float(np.abs(ca - cb).sum()) < 150


# ----------------------------------------------------------------------------- outlines


def _polygon(n: int, r: float, angle: float, star_inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices of a regular n-gon (or n-pointed star) of circumradius r centred on 0."""
    pts = []
    steps = 2 * n if star_inner else n
    for k in range(steps):
        rad = r if (not star_inner or k % 2 == 0) else r * star_inner
        a = angle + 2 * math.pi * k / steps - math.pi / 2
        pts.append((rad * math.cos(a), rad * math.sin(a)))
    return pts


def _rotate(pts, angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def _cross(r: float, angle: float):
    w = r * 0.38
    pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    return _rotate(pts, angle)


def _heart(r: float, angle: float):
    pts = []
    for k in range(64):
        a = 2 * math.pi * k / 64
        x = 16 * math.sin(a) ** 3
        y = -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a))
        pts.append((x * r / 17, (y + 2.5) * r / 17))
    return _rotate(pts, angle)


def _draw(draw: ImageDraw.ImageDraw, spec: ShapeSpec, side: int) -> None:
    r = spec.radius * side
    ox, oy = spec.cx * side, spec.cy * side
    fg, bg = spec.color_rgb, spec.background_rgb

    def poly(pts):
        draw.polygon([(ox + x, oy + y) for x, y in pts], fill=fg)

    def disk(rad, fill, dx=0.0, dy=0.0):
        draw.ellipse([ox + dx - rad, oy + dy - rad, ox + dx + rad, oy + dy + rad], fill=fill)

    name = spec.name
    if name == "circle":
        disk(r * 0.85, fg)
    elif name == "square":
        poly(_polygon(4, r, spec.angle))
    elif name == "triangle":
        poly(_polygon(3, r, spec.angle))
    elif name == "pentagon":
        poly(_polygon(5, r, spec.angle))
    elif name == "hexagon":
        poly(_polygon(6, r, spec.angle))
    elif name == "star":
        poly(_polygon(5, r, spec.angle, star_inner=0.42))
    elif name == "cross":
        poly(_cross(r * 0.9, spec.angle))
    elif name == "ring":
        disk(r * 0.9, fg)
        disk(r * 0.5, bg)
    elif name == "crescent":
        disk(r * 0.9, fg)
        off = r * 0.45
        disk(r * 0.75, bg, off * math.cos(spec.angle), off * math.sin(spec.angle))
    elif name == "heart":
        poly(_heart(r, spec.angle))
    else:  # pragma: no cover - CLASSES and this table are kept in step by tests
        raise ValueError(f"unknown shape {name!r}")


def render(spec: ShapeSpec, size: int = 32) -> np.ndarray:
    """Render a spec to a uint8 array of shape (size, size, 3)."""
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), spec.background_rgb)
    _draw(ImageDraw.Draw(img), spec, big)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3), array or tensor -> float in [-1, 1], channels first."""
    t = pixels if torch.is_tensor(pixels) else torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True))
    t = t.float().div(127.5).sub(1.0)
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t.permute(2, 0, 1)  # (..., 3, H, W)


class ShapesDataset(torch.utils.data.Dataset):
    """`num_samples` shapes images, deterministic by `seed`.

    Items are `(image, label)` with image float (3, S, S) in [-1, 1]; `spec(i)` and
    `caption(i)` give the full description. `labels=` fixes the class of every
    sample (e.g. a balanced evaluation set), cycling through the given list.
    """

    def __init__(self, num_samples: int, seed: int = 0, image_size: int = 32, labels: list[int] | None = None):
        if num_samples <= 0:
            raise ValueError("num_samples must be positive")
        self.num_samples, self.seed, self.image_size = num_samples, seed, image_size
        self.labels = labels

    def __len__(self) -> int:
        return self.num_samples

    def spec(self, i: int) -> ShapeSpec:
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        label = None if self.labels is None else int(self.labels[i % len(self.labels)])
        return sample_spec(rng, label)

    def caption(self, i: int) -> str:
        return self.spec(i).caption()

    def __getitem__(self, i: int):
        spec = self.spec(i)
        return to_tensor(render(spec, self.image_size)), spec.label

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Render everything at once: (uint8 images (N, S, S, 3), int64 labels (N,))."""
        specs = [self.spec(i) for i in range(self.num_samples)]
        images = np.stack([render(s, self.image_size) for s in specs])
        return torch.from_numpy(images), torch.tensor([s.label for s in specs])


def class_index(name_or_index: str | int) -> int:
    """Resolve a class given by name or index; raises ValueError with the valid names."""
    if isinstance(name_or_index, int) or str(name_or_index).isdigit():
        idx = int(name_or_index)
        if 0 <= idx < len(CLASSES):
            return idx
    elif name_or_index in CLASSES:
        return CLASSES.index(name_or_index)
    raise ValueError(f"unknown class {name_or_index!r}; choose one of {', '.join(CLASSES)} or 0-{len(CLASSES) - 1}")
