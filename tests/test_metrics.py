"""Metrics against closed forms and an independent numpy/scipy SSIM."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from ditkit.eval.metrics import class_accuracy, classifier_features, evaluate_samples, frechet_distance, psnr, ssim
from ditkit.shapes.data import CLASSES

# ----------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_closed_form():
    a = torch.rand(4, 3, 16, 16) * 1.6 - 0.8
    offsets = torch.tensor([0.1, 0.2, 0.05, 1.0])
    b = a + offsets[:, None, None, None]
    expected = 10 * torch.log10(4.0 / offsets.double() ** 2)  # data_range² / MSE, MSE = offset²
    torch.testing.assert_close(psnr(a, b).double(), expected, atol=1e-4, rtol=0)
    assert psnr(a, b)[0].item() == pytest.approx(10 * math.log10(400), abs=1e-4)  # 26.0206 dB
    assert psnr(a, b, data_range=1.0)[0].item() == pytest.approx(20.0, abs=1e-4)
    assert torch.isinf(psnr(a, a)).all()


# ----------------------------------------------------------------------------- SSIM


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range=2.0, k1=0.01, k2=0.03) -> float:
    """Straight from Wang et al. 2004 for one (C, H, W) image pair, with scipy's correlate2d."""
    coords = np.arange(11) - 5.0
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def f(img):
        return scipy.signal.correlate2d(img, w, mode="valid")

    maps = []
    for xc, yc in zip(x.astype(np.float64), y.astype(np.float64)):
        mx, my = f(xc), f(yc)
        sxx, syy, sxy = f(xc * xc) - mx**2, f(yc * yc) - my**2, f(xc * yc) - mx * my
        maps.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return float(np.mean(maps))


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    torch.testing.assert_close(ssim(a, a), torch.ones(3))
    mild = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    strong = (a + 0.5 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    s_mild, s_strong = ssim(a, mild), ssim(a, strong)
    assert (s_mild < 1).all() and (s_strong < s_mild).all()


def test_ssim_matches_numpy_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 3, 24, 20, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    b[3] = torch.rand(3, 24, 20, generator=g) * 2 - 1  # an unrelated pair too
    ours = ssim(a, b)
    ref = torch.tensor([_ssim_reference(x.numpy(), y.numpy()) for x, y in zip(a, b)])
    torch.testing.assert_close(ours.double(), ref.double(), atol=1e-4, rtol=0)
    ref_01 = _ssim_reference(a[0].numpy(), b[0].numpy(), data_range=1.0)
    assert ssim(a[:1], b[:1], data_range=1.0).item() == pytest.approx(ref_01, abs=1e-4)


def test_ssim_rejects_small_images():
    with pytest.raises(ValueError):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ----------------------------------------------------------------------------- Fréchet distance


def _gaussian_samples(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Samples whose sample mean and (ddof=1) covariance are exactly `mean` and `cov`."""
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whiten: cov = I
    return x @ np.linalg.cholesky(cov).T + mean


def _random_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_same_set_is_zero():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(feats, feats)) < 1e-6


def test_fd_diagonal_gaussians_closed_form():
    # commuting covariances: Tr((Σa Σb)^½) = Σ sqrt(a_i b_i), so d² = ||Δμ||² + Σ (sqrt(a_i) − sqrt(b_i))²
    mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    xa = _gaussian_samples(mu_a, np.diag(var_a), 400, seed=0)
    xb = _gaussian_samples(mu_b, np.diag(var_b), 300, seed=1)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(xa, xb) == pytest.approx(expected, rel=1e-8)


def test_fd_general_gaussians_closed_form_and_symmetry():
    d = 6
    rng = np.random.default_rng(3)
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    cov_a, cov_b = _random_spd(d, 4), _random_spd(d, 5)
    xa = torch.from_numpy(_gaussian_samples(mu_a, cov_a, 1000, seed=6)).float()
    xb = torch.from_numpy(_gaussian_samples(mu_b, cov_b, 800, seed=7)).float()
    # Σa Σb is similar to the SPD Σa^½ Σb Σa^½, so its eigenvalues are real, positive, and
    # Tr((Σa Σb)^½) is the sum of their square roots.
    tr_sqrt = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real).sum()
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
    fd_ab, fd_ba = frechet_distance(xa, xb), frechet_distance(xb, xa)
    assert fd_ab == pytest.approx(expected, rel=1e-4)  # float32 storage of the samples
    assert fd_ab == pytest.approx(fd_ba, rel=1e-9)


def test_fd_singular_covariances_are_finite():
    # fewer samples than dimensions: both covariances singular
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 32, generator=g), torch.randn(12, 32, generator=g) + 0.5
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0


# ----------------------------------------------------------------------------- classifier-based metrics


class _Oracle(torch.nn.Module):
    """A 'classifier' whose features are the mean colour and whose class is the brightest channel."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(3))

    def features(self, x):
        return x.mean(dim=(2, 3))  # (N, 3)

    def forward(self, x):
        return self.head(self.features(x))


def test_classifier_metrics_with_oracle():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    images = -torch.ones(7, 3, 16, 16)
    images[torch.arange(7), labels] = 1.0
    images[6] = torch.tensor([-1.0, 1.0, -1.0])[:, None, None]  # one wrong "class 0" sample
    clf = _Oracle()
    assert class_accuracy(clf, images, labels, batch_size=3) == pytest.approx(6 / 7)
    assert classifier_features(clf, images, batch_size=2).shape == (7, 3)
    result = evaluate_samples(clf, images, labels, reference_images=images, batch_size=4, class_names=CLASSES)
    assert result["accuracy"] == pytest.approx(6 / 7)
    assert result["per_class_accuracy"] == {"circle": pytest.approx(2 / 3), "square": 1.0, "triangle": 1.0}
    assert abs(result["fd"]) < 1e-6 and result["num_samples"] == 7
    assert "fd" not in evaluate_samples(clf, images, labels)
