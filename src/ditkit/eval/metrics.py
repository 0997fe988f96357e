"""Sample-quality metrics: classifier accuracy, Fréchet distance, PSNR and SSIM.

Conventions: images are float tensors (N, C, H, W) in [-1, 1] (the range of
`ditkit.shapes.data.to_tensor` and of the models' outputs), so ``data_range = 2``.
Per-sample metrics return a tensor of shape (N,); set-level metrics return a float.

* `class_accuracy` / `classifier_features` — run a classifier with ``features(x)`` and
  ``head(features)`` (e.g. `ditkit.shapes.classifier.ShapesClassifier`) in batches.
* `frechet_distance` — the FID formula (Heusel et al. 2017, https://arxiv.org/abs/1706.08500)
  on any features: ||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½), computed in float64 as in
  pytorch-fid (https://github.com/mseitzer/pytorch-fid). With our shapes classifier as the
  feature net this is "FD", not comparable with Inception-based FID numbers.
* `psnr` — 10 log10(data_range² / MSE), per sample.
* `ssim` — Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error
  visibility to structural similarity", eq. (13): 11x11 Gaussian window σ = 1.5, K1 = 0.01,
  K2 = 0.03, per channel, averaged over the valid (unpadded) region and the channels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- classifier-based


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def _run(classifier, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) and logits (N, K) of `images`, batched, on CPU in float32."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W) in [-1, 1], got {images.dtype} {tuple(images.shape)}")
    was_training = classifier.training
    classifier.eval()
    device = _device(classifier)
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f = classifier.features(images[i : i + batch_size].to(device, torch.float32))  # (B, D)
        feats.append(f.float().cpu())
        logits.append(classifier.head(f).float().cpu())  # (B, K)
    classifier.train(was_training)
    return torch.cat(feats), torch.cat(logits)


def classifier_features(classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate embeddings (N, D) of `images` (N, C, H, W) in [-1, 1]."""
    return _run(classifier, images, batch_size)[0]


def class_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of `images` whose argmax class equals `labels` (N,)."""
    logits = _run(classifier, images, batch_size)[1]
    return (logits.argmax(dim=1) == torch.as_tensor(labels).cpu()).float().mean().item()


# ----------------------------------------------------------------------------- Fréchet distance


def _mean_cov(feats) -> tuple[np.ndarray, np.ndarray]:
    x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) (tensors or arrays).

    d² = ||μa − μb||² + Tr(Σa) + Tr(Σb) − 2 Tr((Σa Σb)^½)   (Dowson & Landau 1982; FID, Heusel et al. 2017)

    As in pytorch-fid: if the square root of the product is not finite (singular product),
    retry with ``eps`` added to both diagonals; tiny imaginary parts from round-off are
    dropped, large ones raise ``ValueError``.
    """
    mu_a, sigma_a = _mean_cov(feats_a)
    mu_b, sigma_b = _mean_cov(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    diff = mu_a - mu_b

    def sqrtm(m: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # scipy warns on singular input; we check finiteness ourselves
            return scipy.linalg.sqrtm(m)

    covmean = sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    fd = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean)
    return float(fd)


# ----------------------------------------------------------------------------- PSNR / SSIM


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample (N,), in dB; +inf where the images are identical."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)  # (N,)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size), sums to 1


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 2.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean structural similarity per sample (N,) (Wang et al. 2004, eq. 13), computed in float64.

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
    C1 = (K1 L)², C2 = (K2 L)², local statistics under a normalised Gaussian window,
    valid region only (no padding), averaged over positions and channels.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n, c, h, w = a.shape
    if min(h, w) < window_size:
        raise ValueError(f"images of {h}x{w} are smaller than the {window_size}x{window_size} SSIM window")
    x, y = a.double(), b.double()
    win = _gaussian_window(window_size, sigma).to(x.device).expand(c, 1, window_size, window_size)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)  # (N, C, H - ws + 1, W - ws + 1)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov_xy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1).float()  # (N,)


# ----------------------------------------------------------------------------- summary


def evaluate_samples(
    classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    reference_images: torch.Tensor | None = None,
    batch_size: int = 256,
    class_names: Sequence[str] = (),
) -> dict:
    """Accuracy, per-class accuracy and (with `reference_images`) FD of generated `images` (N, C, H, W).

    Returns ``{"num_samples", "accuracy", "per_class_accuracy": {class name: acc}, "fd"?}``;
    per-class entries exist only for classes present in `labels`, keyed by ``class_names[k]``
    (the class index as a string past its end). FD needs ≥ 2 images per set; with few samples
    it is biased upwards (compare FDs only at equal N).
    """
    labels = torch.as_tensor(labels).cpu()
    feats, logits = _run(classifier, images, batch_size)
    correct = logits.argmax(dim=1) == labels
    per_class = {
        class_names[k] if k < len(class_names) else str(k): correct[labels == k].float().mean().item()
        for k in labels.unique().tolist()
    }
    result = {"num_samples": len(images), "accuracy": correct.float().mean().item(), "per_class_accuracy": per_class}
    if reference_images is not None:
        result["fd"] = frechet_distance(feats, classifier_features(classifier, reference_images, batch_size))
    return result
