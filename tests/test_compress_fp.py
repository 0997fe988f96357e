"""FP8 (E4M3, E5M2) and FP4 (E2M1) weight formats: grids, rounding, error bounds, memory, files, labels."""

import pytest
import torch
from torch import nn

from ditkit import DiT, FlowMatching, get_preset
from ditkit.compress import kernel_calls, quantize_model, save_quantized
from ditkit.compress.fp import E2M1_MAGNITUDES, FPLinear, _e2m1_groups, e2m1_decode, e2m1_encode
from ditkit.pipelines import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


def test_e2m1_grid_and_nearest_rounding():
    codes = torch.arange(16, dtype=torch.uint8)
    vals = e2m1_decode(codes)
    assert vals[:8].tolist() == list(E2M1_MAGNITUDES) and vals[8:].tolist() == [-v for v in E2M1_MAGNITUDES]
    keep = codes != 8  # -0 encodes as +0
    assert torch.equal(e2m1_encode(vals)[keep], codes[keep])
    x = torch.linspace(-7, 7, 1001)
    grid = vals.unique()
    nearest = grid[(x[:, None] - grid[None]).abs().argmin(1)]
    dec = e2m1_decode(e2m1_encode(x))
    assert torch.allclose((dec - x).abs(), (nearest - x).abs())  # ties may go either way, distance equal


def test_e2m1_clip_search_never_worse_than_absmax():
    torch.manual_seed(0)
    w = torch.randn(16, 4, 32)  # (N, G, g)
    codes, scales = _e2m1_groups(w)
    err = (e2m1_decode(codes) * scales.float()[..., None] - w).pow(2).sum()
    s1 = (w.abs().amax(-1) / 6).half().float()
    err_absmax = (e2m1_decode(e2m1_encode(w / s1[..., None])) * s1[..., None] - w).pow(2).sum()
    assert err <= err_absmax


@pytest.mark.parametrize("fmt,rel", [("e4m3", 1 / 16), ("e5m2", 1 / 8)])
def test_fp8_weight_error_bound(fmt, rel):
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    q = FPLinear.from_linear(lin, fmt)
    assert q.qweight.dtype == {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[fmt]
    w = lin.weight.detach()
    sub = q.scales * (2.0 ** -10 if fmt == "e4m3" else 2.0 ** -17)  # half the smallest subnormal step
    assert bool(((q.dequantized_weight() - w).abs() <= rel * w.abs() + sub + 1e-7).all())


def test_fp_layers_memory_and_outputs():
    torch.manual_seed(0)
    lin = nn.Linear(768, 3072)
    fp32 = 4 * (768 * 3072 + 3072)
    fp4 = FPLinear.from_linear(lin, "e2m1", group_size=32)
    fp8 = FPLinear.from_linear(lin, "e4m3")
    assert fp4.qweight.dtype == torch.uint8 and fp4.qweight.shape == (3072, 384)
    assert fp32 / fp4.weight_bytes() >= 6.5 and fp32 / fp8.weight_bytes() > 3.9  # 4 + 16/32 bits, 8 bits per weight
    x = torch.randn(2, 16, 768)
    with torch.no_grad():
        ref = lin(x)
        for q in (fp4, fp8, FPLinear.from_linear(lin, "e2m1", act_format="e4m3")):
            assert (q(x) - ref).norm() / ref.norm() < 0.15
    with pytest.raises(ValueError):
        FPLinear(4, 4, fmt="e3m4")
    with pytest.raises(ValueError):
        FPLinear(4, 4, act_format="int8")


def test_fp_schemes_on_a_tiny_dit_round_trip_and_labels(tmp_path):
    torch.manual_seed(0)
    model = DiT(get_preset("shapes-tiny")).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([100.0, 700.0]), torch.tensor([1, 2])
    with torch.no_grad():
        ref = model(x, t, y)
    for scheme in ("fp8_e5m2", "fp4_e2m1_a8"):
        qmodel, report = quantize_model(model, scheme)
        # every quantized layer names its kernel, and each is a simulated (decode-to-float) one
        assert set(report["kernels"]) == set(report["quantized"]) != set()
        assert all("simulated" in k for k in report["kernels"].values())
        save_quantized(tmp_path / scheme, qmodel, FlowMatching())
        pipe = load_quantized(tmp_path / scheme)
        with torch.no_grad():
            out = qmodel(x, t, y)
            assert torch.equal(pipe.model(x, t, y), out)
        assert (out - ref).norm() / ref.norm() < 0.05
        assert kernel_calls(qmodel)["dequant_fp32"] == len(report["quantized"])
