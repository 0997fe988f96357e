"""Images and clips out, written atomically: PNG grids, frame-grid PNGs, GIF (Pillow) and MP4 (ffmpeg).

Clips are float tensors (F, 3, H, W) in [-1, 1], or batches (N, F, 3, H, W) which are tiled into
one picture per frame. MP4 goes through the ffmpeg binary that the ``imageio-ffmpeg`` package ships
(the ``[video]`` extra, imported only when an MP4 is written): H.264, yuv420p, so frame sides are
padded to even numbers; small clips read better with ``upscale``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, upscale: int = 1) -> Image.Image:
    """Tile images (N, 3, H, W) in [-1, 1] into one picture, `nrow` images per row."""
    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = arr[i]
    img = Image.fromarray(grid)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.Resampling.NEAREST)
    return img


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, upscale: int = 1) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {path}")
    img = make_grid(images, nrow=nrow, upscale=upscale)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------- clips


class MissingExtra(ValueError):
    """An optional dependency is not installed (one line for the CLI)."""


def _clip_frames(clips: torch.Tensor, nrow: int | None = None, padding: int = 2, upscale: int = 1) -> list[Image.Image]:
    """(F, 3, H, W) or (N, F, 3, H, W) in [-1, 1] -> one RGB picture per frame (a batch tiled like make_grid)."""
    if clips.ndim == 4:
        clips = clips.unsqueeze(0)  # (1, F, 3, H, W)
    if clips.ndim != 5 or clips.shape[2] != 3:
        raise ValueError(f"clips must be (F, 3, H, W) or (N, F, 3, H, W), got {tuple(clips.shape)}")
    if clips.shape[0] == 1:
        frames = [Image.fromarray(a) for a in to_uint8(clips[0])]
        if upscale > 1:
            frames = [f.resize((f.width * upscale, f.height * upscale), Image.Resampling.NEAREST) for f in frames]
        return frames
    return [make_grid(clips[:, i], nrow=nrow, padding=padding, upscale=upscale) for i in range(clips.shape[1])]


def _check_suffix(path: Path, suffix: str) -> None:
    if path.suffix.lower() != suffix:
        raise ValueError(f"output must be a {suffix} file, got {path}")


def _check_fps(fps: float) -> None:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")


def save_gif(clips: torch.Tensor, path: str | Path, fps: float = 8.0, upscale: int = 1, nrow: int | None = None) -> Path:
    """An endlessly looping GIF of a clip (or a tiled batch of clips)."""
    path = Path(path)
    _check_suffix(path, ".gif")
    _check_fps(fps)
    frames = _clip_frames(clips, nrow=nrow, upscale=upscale)
    with atomic_write(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path


def save_mp4(clips: torch.Tensor, path: str | Path, fps: float = 8.0, upscale: int = 1, nrow: int | None = None,
             quality: float = 8.0) -> Path:
    """An H.264 MP4 of a clip (or a tiled batch), through imageio-ffmpeg's bundled ffmpeg.

    ``quality`` 0-10 (imageio-ffmpeg's scale; 10 is near lossless). Raises `MissingExtra` when
    imageio-ffmpeg is not installed.
    """
    path = Path(path)
    _check_suffix(path, ".mp4")
    _check_fps(fps)
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MissingExtra("MP4 output needs imageio-ffmpeg: pip install 'ditkit[video]' (or write a .gif)") from None
    frames = [np.asarray(f) for f in _clip_frames(clips, nrow=nrow, upscale=upscale)]
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2  # yuv420p needs even sides
    with atomic_write(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (pw, ph), fps=fps, codec="libx264", quality=quality,
                                             pix_fmt_out="yuv420p", macro_block_size=1, output_params=["-f", "mp4"])
        writer.send(None)  # start ffmpeg
        try:
            for f in frames:
                if (ph, pw) != (h, w):
                    f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
                writer.send(np.ascontiguousarray(f))
        finally:
            writer.close()
    return path


def save_frame_grid(clips: torch.Tensor, path: str | Path, upscale: int = 1, padding: int = 2) -> Path:
    """A PNG with one row per clip and one column per frame."""
    if clips.ndim == 4:
        clips = clips.unsqueeze(0)  # (1, F, 3, H, W)
    if clips.ndim != 5:
        raise ValueError(f"clips must be (F, 3, H, W) or (N, F, 3, H, W), got {tuple(clips.shape)}")
    n, f = clips.shape[:2]
    path = Path(path)
    _check_suffix(path, ".png")
    img = make_grid(clips.reshape(n * f, *clips.shape[2:]), nrow=f, padding=padding, upscale=upscale)  # (N*F, 3, H, W)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def save_video(clips: torch.Tensor, path: str | Path, fps: float = 8.0, upscale: int = 1) -> Path:
    """Write by file suffix: .mp4, .gif, or .png (a frame grid)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return save_mp4(clips, path, fps=fps, upscale=upscale)
    if suffix == ".gif":
        return save_gif(clips, path, fps=fps, upscale=upscale)
    if suffix == ".png":
        return save_frame_grid(clips, path, upscale=upscale)
    raise ValueError(f"video output must end in .mp4, .gif or .png, got {path}")
