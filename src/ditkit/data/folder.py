"""Users' own images: a folder of image files, optionally one sub-folder per class.

    root/cat/001.png, root/dog/002.jpg  -> labels from sorted sub-folder names
    root/001.png, root/002.png          -> every label 0 (unconditional / single class)

Images are converted to RGB, resized (shorter side) and centre-cropped to `image_size`
(ADM-style preprocessing without the random flip), scaled to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


class ImageFolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: str | Path, image_size: int | tuple[int, int] = 32, hflip: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder not found: {self.root}")
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.hflip = hflip
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        self.classes = [p.name for p in subdirs]
        files: list[tuple[Path, int]] = []
        for label, d in enumerate(subdirs):
            files += [(f, label) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
        files += [(f, 0) for f in sorted(self.root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {self.root}")
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
        h, w = self.size
        scale = max(h / img.height, w / img.width)
        img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.BICUBIC)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        return img.crop((left, top, left + w, top + h))

    def __getitem__(self, i: int):
        path, label = self.files[i]
        arr = np.asarray(self.load(path), dtype=np.float32) / 127.5 - 1.0  # (H, W, 3) in [-1, 1]
        x = torch.from_numpy(arr).permute(2, 0, 1)  # (3, H, W)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, label
