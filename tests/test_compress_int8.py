"""W8A8 Int8Linear: error bound, the int8 kernel really runs, smoothing, shapes, timestep groups."""

import pytest
import torch
from torch import nn

from ditkit.compress import int8 as int8_mod
from ditkit.compress.calibrate import TimestepRouter
from ditkit.compress.int8 import (
    PATH_FALLBACK,
    PATH_INT_MM,
    Int8Linear,
    int8_mm,
    int_mm_padding,
    quantize_per_token,
    quantize_weight_per_channel,
)
from ditkit.compress.smooth import smoothing_factors


def _linear(k=48, n=40, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    nn.init.normal_(lin.bias, std=0.1)
    return lin


pytestmark = pytest.mark.usefixtures("one_thread")


def test_matches_fp32_within_quantization_bound():
    lin = _linear()
    x = torch.randn(2, 20, 48)
    q = Int8Linear.from_linear(lin)
    with torch.no_grad():
        ref, out = lin(x), q(x)
    # |x w - x^ w^| <= sum_k |x_k| dw/2 + |w^_k| dx/2 with dw = w step (per row), dx = x step (per token)
    _, w_step = quantize_weight_per_channel(lin.weight.detach())
    x2 = x.reshape(-1, 48)
    x_step = x2.abs().amax(-1, keepdim=True) / 127  # (M, 1)
    w_abs = lin.weight.detach().abs() + w_step[:, None] / 2
    bound = 0.5 * x2.abs().sum(-1, keepdim=True) * w_step + 0.5 * x_step * w_abs.sum(-1)  # (M, N)
    err = (out - ref).reshape(-1, 40).abs()
    assert bool((err <= bound + 1e-5).all())
    assert (out - ref).norm() / ref.norm() < 1e-2


def test_int_mm_path_is_taken_and_fallback_is_labelled(monkeypatch):
    lin = _linear()
    q = Int8Linear.from_linear(lin)
    x = torch.randn(33, 48)
    out = q(x)
    assert q.calls == {PATH_INT_MM: 1, PATH_FALLBACK: 0}

    def refuse(*_):
        raise RuntimeError("no int8 kernel here")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    out_fb = q(x)
    assert q.calls == {PATH_INT_MM: 1, PATH_FALLBACK: 1}
    torch.testing.assert_close(out_fb, out)


def test_int8_mm_padding_path_matches(monkeypatch):
    a = torch.randint(-127, 128, (5, 13), dtype=torch.int8)
    b = torch.randint(-127, 128, (13, 7), dtype=torch.int8)
    exact = a.int() @ b.int()
    assert int_mm_padding(5, 13, 7, torch.device("cuda")) == (12, 3, 1)
    assert int_mm_padding(5, 13, 7, torch.device("cpu")) == (0, 0, 0)
    monkeypatch.setattr(int8_mod, "int_mm_padding", lambda m, k, n, d: (17 - m, (-k) % 8, (-n) % 8))
    acc, path = int8_mm(a, b)
    assert path == PATH_INT_MM and acc.shape == (5, 7)
    assert torch.equal(acc, exact)


def test_per_token_quantization_is_vectorised_and_safe():
    x = torch.randn(6, 10)
    x[2] = 0
    q, s = quantize_per_token(x)
    assert q.dtype == torch.int8 and s.shape == (6, 1)
    assert int(q.abs().amax()) == 127 and bool((q[2] == 0).all())
    assert torch.isfinite(s).all()
    torch.testing.assert_close(q.float() * s, x, atol=float(s.max()) / 2 + 1e-7, rtol=0)


def test_odd_shapes_and_leading_dims():
    lin = _linear(13, 7)
    q = Int8Linear.from_linear(lin)
    for shape in [(1, 13), (3, 5, 13), (2, 1, 4, 13)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert (q(x) - lin(x)).abs().max() < 0.05
        assert q(x).shape == (*shape[:-1], 7)


def test_smoothing_is_exact_before_rounding_and_helps_outlier_channels():
    lin = _linear(64, 32)
    torch.manual_seed(1)
    x = torch.randn(256, 64)
    x[:, 3] *= 80.0  # an outlier channel, as DiT activations have
    s = smoothing_factors(x.abs().amax(0), lin.weight, alpha=0.5)
    q_s = Int8Linear.from_linear(lin, s)
    # W s is rounded per row with step dw_i, so the weight seen by x has error <= dw_i / (2 s_j)
    w_step = (lin.weight.detach() * s).abs().amax(1) / 127  # (N,)
    err = (q_s.dequantized_weight() - lin.weight.detach()).abs()
    assert bool((err <= w_step[:, None] / (2 * s[None]) + 1e-6).all())
    with torch.no_grad():
        ref = lin(x)
        e_plain = (Int8Linear.from_linear(lin)(x) - ref).norm()
        e_smooth = (q_s(x) - ref).norm()
    assert e_smooth < 0.5 * e_plain
    with pytest.raises(ValueError):
        smoothing_factors(x.abs().amax(0), lin.weight, alpha=1.5)


def test_timestep_groups_route_each_sample():
    lin = _linear(16, 8)
    smooth = torch.stack([torch.ones(16), torch.linspace(0.5, 2.0, 16)])  # (G=2, K)
    q = Int8Linear.from_linear(lin, smooth, t_bounds=torch.tensor([500.0]))
    router = TimestepRouter()
    q.router = router
    x = torch.randn(3, 5, 16)
    router.t = torch.tensor([100.0, 900.0, 200.0])
    mixed = q(x)
    for i, t in enumerate([100.0, 900.0, 200.0]):
        router.t = torch.tensor([t])
        torch.testing.assert_close(mixed[i:i + 1], q(x[i:i + 1]))
    router.t = None
    with pytest.raises(RuntimeError, match="TimestepRouter"):
        q(x)
    with pytest.raises(ValueError, match="bounds"):
        Int8Linear.from_linear(lin, smooth)


def test_weight_bytes_are_int8():
    lin = nn.Linear(256, 128)
    q = Int8Linear.from_linear(lin)
    assert q.qweight.dtype == torch.int8
    # int8 weights + fp32 per-channel scales + fp32 bias
    assert q.weight_bytes() == 256 * 128 + 4 * 128 + 4 * 128
