"""Clip outputs: GIF, MP4 (imageio-ffmpeg), frame-grid PNG; atomic writes; missing-extra error."""

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from ditkit.io.media import MissingExtra, save_frame_grid, save_gif, save_mp4, save_video, to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")


def clip(frames=4, side=8, seed=0) -> torch.Tensor:
    """A square moving right over a plain background, in [-1, 1]: (F, 3, side, side)."""
    x = torch.full((frames, 3, side, side), -0.6)
    x[:, 2] = 0.4
    for i in range(frames):
        x[i, 0, 2:6, i:i + 3] = 0.9
    return x


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_gif_round_trip(tmp_path):
    c = clip()
    path = save_gif(c, tmp_path / "a.gif", fps=10, upscale=2)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.size == (16, 16) and im.info["duration"] == 100 and im.info["loop"] == 0
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB"))[::2, ::2])
    assert psnr(np.stack(frames), to_uint8(c)) > 40  # few colours: the palette is exact
    batch = save_gif(torch.stack([c, c.flip(0), c]), tmp_path / "b.gif", upscale=1, nrow=3)
    with Image.open(batch) as im:
        assert im.n_frames == 4 and im.size == (3 * 8 + 4 * 2, 8 + 2 * 2)


def test_mp4_round_trip(tmp_path):
    ffmpeg = pytest.importorskip("imageio_ffmpeg")
    c = clip(frames=6, side=8)
    path = save_mp4(c, tmp_path / "a.mp4", fps=6, upscale=4)
    reader = ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    assert tuple(meta["size"]) == (32, 32) and meta["fps"] == pytest.approx(6)
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(32, 32, 3) for f in reader])
    assert frames.shape[0] == 6
    assert psnr(frames[:, ::4, ::4], to_uint8(c)) > 25
    odd = save_mp4(clip(frames=3, side=5), tmp_path / "odd.mp4")  # padded to even sides for yuv420p
    assert tuple(next(ffmpeg.read_frames(str(odd)))["size"]) == (6, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "odd.mp4"]  # no temporary files left


def test_mp4_without_the_extra_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(MissingExtra, match=r"pip install 'ditkit\[video\]'"):
        save_mp4(clip(), tmp_path / "a.mp4")
    assert isinstance(MissingExtra("x"), ValueError)  # the CLI's one-line error path


def test_failed_writes_leave_nothing(tmp_path, monkeypatch):
    def write_frames(path, size, **kw):
        def gen():
            yield
            yield
            raise RuntimeError("encoder died")
        with open(path, "wb") as f:
            f.write(b"partial")
        return gen()

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", types.SimpleNamespace(write_frames=write_frames))
    (tmp_path / "keep.mp4").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder died"):
        save_mp4(clip(), tmp_path / "keep.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"] and (tmp_path / "keep.mp4").read_bytes() == b"old"


def test_frame_grid_and_dispatch(tmp_path):
    c = torch.stack([clip(), clip(seed=1)])  # (2, 4, 3, 8, 8)
    path = save_frame_grid(c, tmp_path / "g.png")
    with Image.open(path) as im:
        assert im.size == (4 * 10 + 2, 2 * 10 + 2)
        grid = np.asarray(im.convert("RGB"))
    assert np.array_equal(grid[2:10, 12:20], to_uint8(c[0, 1:2])[0])  # row 0, column 1 = clip 0, frame 1
    assert save_video(c[0], tmp_path / "v.gif").exists() and save_video(c[0], tmp_path / "v.png").exists()
    with pytest.raises(ValueError, match=r"\.mp4, \.gif or \.png"):
        save_video(c[0], tmp_path / "v.avi")
    with pytest.raises(ValueError, match="clips must be"):
        save_gif(torch.zeros(3, 8, 8), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="fps"):
        save_gif(c[0], tmp_path / "x.gif", fps=0)
    with pytest.raises(ValueError, match="must be a .gif"):
        save_gif(c[0], tmp_path / "x.png")
