"""The images and clips a run trains on: the procedural shapes datasets or an image folder.

`training_images` is the image dataset alone, for any code that needs a model's training images
(depth pruning draws its batches from it, see `ditkit.compress.prune.make_data_fn`); `build_dataset`
is the one a `TrainConfig` names, clips included.
"""

from __future__ import annotations

DATASET_SIZE = 1_000_000  # virtual size of the procedural shapes dataset (rendered on the fly)


def training_images(dataset: str, seed: int, size: tuple[int, int], dataset_size: int = DATASET_SIZE):
    """(image (3, H, W) in [-1, 1], label) pairs at ``size`` (H, W): ``dataset`` "shapes" or an image folder path."""
    from ..data.folder import ImageFolderDataset
    from ..shapes.data import ShapesDataset

    h, w = size
    if dataset == "shapes":
        if h != w:
            raise ValueError("the shapes dataset is square; use a square input_size")
        return ShapesDataset(dataset_size, seed=seed, image_size=h)
    return ImageFolderDataset(dataset, image_size=(h, w))


def build_dataset(cfg, codec=None):
    """The dataset of a `TrainConfig` `cfg`, rendered at the size whose latent the model sees (x ``codec.downsample``)."""
    h, w = cfg.model.hw
    if codec is not None:  # images at the size whose latent the model sees
        h, w = h * codec.downsample, w * codec.downsample
    if cfg.video is None:
        return training_images(cfg.dataset, cfg.dataset_seed, (h, w), cfg.dataset_size)
    if cfg.dataset != "shapes":
        raise ValueError("text-to-video trains on the moving-shapes clips (dataset 'shapes'), not an image folder")
    if h != w:
        raise ValueError("the shapes dataset is square; use a square input_size")
    from ..shapes.moving import MovingShapesDataset

    return MovingShapesDataset(cfg.dataset_size, seed=cfg.dataset_seed, frames=cfg.video.frames, image_size=h,
                               motions=cfg.video.motions, caption_style=cfg.video.caption_style)
