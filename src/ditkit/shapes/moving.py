"""Moving-shape clips: the procedural shapes dataset in motion, with captions that name the motion.

A clip is one `ShapeSpec` (`ditkit.shapes.data`) and a motion; frame i is the spec moved i steps
(`ShapeSpec.moved`), rendered by the same renderer as the images. Motions:

    left, right, up, down   straight-line translation that stays inside the frame for the clip
    bounce                  diagonal translation reflected off the walls
    rotate                  spin about the centre (not for the circle and ring, which look the same)
    color                   the shape's colour fades to a second named colour, in place

Captions read "a red circle moving left on a blue background", "a green star bouncing on ...",
"a cyan cross rotating on ...", "a red heart turning yellow on ..." (style ``"motion-first"``, the
default). Style ``"image-first"`` is the image dataset's caption of frame 0 followed by the motion,
"a small red circle on a blue background moving left"; style ``"sized"`` puts the motion after the
shape's name in that caption, "a small red circle moving left on a blue background". The bundled
text-to-image model keys on the size word: on 96 held-out clips' captions it draws the named shape
89.6 % of the time from image-first, 78.1 % from sized and 18.8 % from motion-first captions, so a
video model started from it keeps more of its shapes with the first two (README, video section).

Determinism: clip i of a dataset with seed s comes from ``numpy.random.default_rng([s, i, 7])``
(the 7 keeps clip streams apart from the image dataset's ``[s, i]``), so any subset can be drawn
in any order and in any process. Frames past the clip length continue the motion (translations
reflect at the walls), so ``spec_at`` also serves long-video references.

The motion check (`track_motion`) reads the direction of travel from pixels only, so it applies
equally to real clips and to generated ones; see its docstring.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import torch

from .data import CLASSES, COLOR_NAMES, COLORS, ShapeSpec, _jitter, _too_close, render, sample_spec, to_tensor

MOTIONS = ("left", "right", "up", "down", "bounce", "rotate", "color")
DIRECTIONS = ("left", "right", "up", "down")  # motions with one direction of travel (what track_motion reads)
_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # (dx, dy), rows grow down
_SYMMETRIC = ("circle", "ring")  # rotation is invisible
CAPTION_STYLES = ("motion-first", "image-first", "sized")
RADIUS_RANGE = (0.16, 0.26)  # a clip's shape radius, fraction of the side
TRAVEL_RANGE = (0.25, 0.45)  # a straight motion's whole-clip path, fraction of the side


_DIRECTION_PHRASE = re.compile(rf"\bmoving\s+({'|'.join(DIRECTIONS)})\b")
_MOTION_PHRASE = re.compile(rf"\s+(?:moving\s+(?:{'|'.join(DIRECTIONS)})|bouncing|rotating|turning\s+[a-z]+)\b")


def image_caption(caption: str) -> str:
    """A clip caption without its motion phrase: "a small red circle moving left on a blue background"
    -> "a small red circle on a blue background", the caption of one frame (image-expert guidance)."""
    return re.sub(r"\s+", " ", _MOTION_PHRASE.sub("", caption)).strip()


def check_caption_style(style: str) -> None:
    """ValueError (one line) unless ``style`` is one of CAPTION_STYLES."""
    if style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r}; choose from {', '.join(CAPTION_STYLES)}")


@dataclass(frozen=True)
class ClipSpec:
    """A shape and its motion. Velocities are per frame, in units of the image side (radians for angle)."""

    first: ShapeSpec  # frame 0
    motion: str  # one of MOTIONS
    frames: int  # clip length
    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0
    color_to: str | None = None  # "color" motion: the named colour at the last frame
    color_to_rgb: tuple[int, int, int] | None = None

    @property
    def label(self) -> int:
        return self.first.label

    @property
    def motion_label(self) -> int:
        return MOTIONS.index(self.motion)

    def caption(self, style: str = "motion-first") -> str:
        """The clip's caption in one of CAPTION_STYLES (module docstring)."""
        s = self.first
        phrase = {"bounce": "bouncing", "rotate": "rotating"}.get(self.motion, f"moving {self.motion}")
        if self.motion == "color":
            phrase = f"turning {self.color_to}"
        check_caption_style(style)
        if style == "image-first":
            return f"{s.caption()} {phrase}"
        if style == "sized":  # the image caption with the motion after the shape's name
            return s.caption().replace(f" {s.name} on a ", f" {s.name} {phrase} on a ", 1)
        article = "an" if s.color[0] in "aeiou" else "a"
        return f"{article} {s.color} {s.name} {phrase} on a {s.background} background"

    def spec_at(self, i: int) -> ShapeSpec:
        """The shape at frame i (any i >= 0; translations reflect off the walls)."""
        s = self.first
        lo, hi = s.radius * 1.02, 1 - s.radius * 1.02
        cx, cy = _reflect(s.cx + self.vx * i, lo, hi), _reflect(s.cy + self.vy * i, lo, hi)
        spec = s.moved(dx=cx - s.cx, dy=cy - s.cy, dangle=self.spin * i)
        if self.color_to_rgb is not None:
            a = min(i / max(self.frames - 1, 1), 1.0)
            rgb = tuple(int(round((1 - a) * c0 + a * c1)) for c0, c1 in zip(s.color_rgb, self.color_to_rgb))
            spec = replace(spec, color_rgb=rgb)
        return spec

    def render(self, size: int = 32, frames: int | None = None) -> np.ndarray:
        """uint8 (F, size, size, 3); ``frames`` defaults to the clip length."""
        return np.stack([render(self.spec_at(i), size) for i in range(frames or self.frames)])


def _reflect(p: float, lo: float, hi: float) -> float:
    """Fold p into [lo, hi] as a ball bouncing between two walls."""
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2
    u = (p - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def sample_clip(rng: np.random.Generator, frames: int = 16, motion: str | None = None, label: int | None = None,
                motions: tuple[str, ...] = MOTIONS) -> ClipSpec:
    """Draw a clip: a shape of radius 0.16-0.26 (of the side) and a motion that reads clearly in ``frames`` frames."""
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    motion = motion or motions[int(rng.integers(len(motions)))]
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    if motion == "rotate" and label is not None and CLASSES[label] in _SYMMETRIC:
        raise ValueError(f"a {CLASSES[label]} cannot visibly rotate")
    if label is None:
        choices = [i for i, n in enumerate(CLASSES) if not (motion == "rotate" and n in _SYMMETRIC)]
        label = choices[int(rng.integers(len(choices)))]
    spec = sample_spec(rng, label)
    radius = float(rng.uniform(*RADIUS_RANGE))
    margin = radius * 1.02
    spec = replace(spec, radius=radius, cx=float(rng.uniform(margin, 1 - margin)), cy=float(rng.uniform(margin, 1 - margin)))
    steps = frames - 1
    if motion in _UNIT:
        travel = float(rng.uniform(TRAVEL_RANGE[0], min(TRAVEL_RANGE[1], 1 - 2 * margin)))  # whole-clip path, inside the walls
        ux, uy = _UNIT[motion]
        start = float(rng.uniform(margin + travel, 1 - margin))  # far enough from the wall it heads to
        spec = replace(spec, **({"cx": start if ux < 0 else 1 - start} if ux else {"cy": start if uy < 0 else 1 - start}))
        return ClipSpec(spec, motion, frames, vx=ux * travel / steps, vy=uy * travel / steps)
    if motion == "bounce":
        heading = float(rng.uniform(0.15, 0.35) * math.pi / 2 + rng.integers(4) * math.pi / 2)  # off the axes
        speed = float(rng.uniform(0.8, 1.4)) / steps
        return ClipSpec(spec, motion, frames, vx=speed * math.cos(heading), vy=speed * math.sin(heading))
    if motion == "rotate":
        turn = float(rng.uniform(0.5, 1.0) * math.pi * rng.choice([-1, 1]))
        return ClipSpec(spec, motion, frames, spin=turn / steps)
    to = spec.color
    while to == spec.color or _too_close(to, spec.background) or _too_close(to, spec.color):
        to = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    return ClipSpec(spec, motion, frames, color_to=to, color_to_rgb=_jitter(rng, COLORS[to], 20))


class MovingShapesDataset(torch.utils.data.Dataset):
    """`num_samples` clips, deterministic by `seed`.

    Items are ``(clip, label, motion_label)`` with clip float (F, 3, S, S) in [-1, 1]. ``labels=`` /
    ``motions=`` restrict the classes and motions (cycled / drawn from); ``clip(i)`` and
    ``caption(i)`` give the full description (``caption_style``: one of CAPTION_STYLES).
    """

    def __init__(self, num_samples: int, seed: int = 0, frames: int = 16, image_size: int = 32,
                 motions: tuple[str, ...] = MOTIONS, labels: list[int] | None = None,
                 caption_style: str = "motion-first"):
        if num_samples <= 0:
            raise ValueError("num_samples must be positive")
        check_caption_style(caption_style)
        unknown = [m for m in motions if m not in MOTIONS]
        if not motions or unknown:
            raise ValueError(f"unknown motions {unknown}; choose from {', '.join(MOTIONS)}")
        self.num_samples, self.seed, self.frames, self.image_size = num_samples, seed, frames, image_size
        self.motions, self.labels, self.caption_style = tuple(motions), labels, caption_style

    def __len__(self) -> int:
        return self.num_samples

    def clip(self, i: int) -> ClipSpec:
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i, 7])
        label = None if self.labels is None else int(self.labels[i % len(self.labels)])
        motions = self.motions
        if label is not None and CLASSES[label] in _SYMMETRIC:
            motions = tuple(m for m in motions if m != "rotate") or motions
        motion = motions[int(rng.integers(len(motions)))]
        return sample_clip(rng, self.frames, motion, label)

    def caption(self, i: int) -> str:
        return self.clip(i).caption(self.caption_style)

    def __getitem__(self, i: int):
        clip = self.clip(i)
        return to_tensor(clip.render(self.image_size)), clip.label, clip.motion_label  # (F, 3, S, S)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything at once: (uint8 clips (N, F, S, S, 3), labels (N,), motion labels (N,))."""
        clips = [self.clip(i) for i in range(self.num_samples)]
        pixels = np.stack([c.render(self.image_size) for c in clips])
        return torch.from_numpy(pixels), torch.tensor([c.label for c in clips]), torch.tensor([c.motion_label for c in clips])


# ----------------------------------------------------------------------------- motion check


@dataclass(frozen=True)
class MotionEstimate:
    direction: str  # "left" / "right" / "up" / "down", or "none" when the centroid barely moves
    dx: float  # fitted centroid travel over the clip, pixels (x to the right)
    dy: float  # ... pixels (y downwards)
    tracked: float  # fraction of frames with a foreground mask


def _frames_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (F, H, W, 3), or float (F, 3, H, W) in [-1, 1] -> int32 (F, H, W, 3) in 0..255."""
    if torch.is_tensor(frames):
        if frames.is_floating_point():
            frames = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)
        frames = frames.cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) or float (F, 3, H, W), got shape {arr.shape}")
    return arr.astype(np.int32)


def track_motion(frames: np.ndarray | torch.Tensor, min_travel: float = 0.08) -> MotionEstimate:
    """The direction a clip's single shape travels, read from pixels (the documented motion check).

    1. Background colour: the per-channel median of the border pixels over all frames (the shape
       covers a minority of the border).
    2. Foreground mask per frame: pixels whose L1 distance to the background exceeds half of the
       clip's 99th-percentile distance (at least 30 of 765), i.e. halfway to the shape's colour.
    3. Centroid per frame (mean mask coordinate); frames with an empty mask are skipped.
    4. A least-squares line through the centroids over the frame index gives the travel over the
       clip (dx, dy). If it is shorter than ``min_travel`` x the image side the answer is "none";
       otherwise the larger axis and its sign name the direction (image rows grow downwards).
    """
    mask = _foreground(_frames_uint8(frames))
    n, h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    idx, cx, cy = [], [], []
    for i in range(n):
        m = mask[i]
        if m.any():
            idx.append(i)
            cx.append(float(xs[m].mean()))
            cy.append(float(ys[m].mean()))
    if len(idx) < 2:
        return MotionEstimate("none", 0.0, 0.0, len(idx) / n)
    f = np.asarray(idx, dtype=np.float64)
    span = f.max() - f.min()
    dx = float(np.polyfit(f, cx, 1)[0] * span)
    dy = float(np.polyfit(f, cy, 1)[0] * span)
    if max(abs(dx), abs(dy)) < min_travel * max(h, w):
        direction = "none"
    elif abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    return MotionEstimate(direction, dx, dy, len(idx) / n)


def _foreground(px: np.ndarray) -> np.ndarray:
    """Boolean (F, H, W) shape mask of int (F, H, W, 3) frames: steps 1-2 of `track_motion`."""
    border = np.concatenate([px[:, 0], px[:, -1], px[:, :, 0], px[:, :, -1]], axis=1).reshape(-1, 3)  # (F*(2W+2H), 3)
    background = np.median(border, axis=0)
    dist = np.abs(px - background).sum(-1)  # (F, H, W)
    threshold = max(30.0, 0.5 * float(np.percentile(dist, 99)))
    return dist > threshold


def caption_direction(caption: str) -> str | None:
    """The direction a caption's "moving <direction>" phrase names, or None (other motions, other captions)."""
    m = _DIRECTION_PHRASE.search(caption)
    return m.group(1) if m else None


def first_frame_fits(frame: np.ndarray | torch.Tensor, caption: str, tolerance_px: float = 1.0) -> bool:
    """Whether a first frame leaves its shape the room its caption's straight motion needs in this data.

    `sample_clip` starts a "moving <direction>" clip far enough from the wall it heads to for its whole
    path, at least ``TRAVEL_RANGE[0]`` of the side between the shape and that wall. A text-to-image model
    that draws a factorized clip's first frame (`VideoPipeline.generate`'s ``first_frame_model``) never
    saw the motion words, so it places the shape anywhere; redrawing the frames that fail this check
    samples the first frame given the image caption *and* the motion, as the clips' own distribution
    does. The gap is measured from the shape's leading edge (the `track_motion` mask of this one frame)
    to the wall, less ``tolerance_px`` pixels for rendering; the edge lies inside the shape's radius, so
    every real clip's first frame passes. ``frame``: uint8 (H, W, 3) or float (3, H, W) in [-1, 1].
    Captions without a straight motion always fit.
    """
    direction = caption_direction(caption)
    if direction is None:
        return True
    arr = frame.unsqueeze(0) if isinstance(frame, torch.Tensor) else np.asarray(frame)[None]
    mask = _foreground(_frames_uint8(arr))[0]  # (H, W)
    if not mask.any():
        return False
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    gap = {"left": cols.min() / w, "right": (w - 1 - cols.max()) / w,
           "up": rows.min() / h, "down": (h - 1 - rows.max()) / h}[direction]
    return gap >= TRAVEL_RANGE[0] - 0.02 * RADIUS_RANGE[1] - tolerance_px / max(h, w)
