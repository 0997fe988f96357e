"""Packed 4-bit weights: exact packing, error bounds, real memory saving, int8 kernel for W4A8."""

import pytest
import torch
from torch import nn

from ditkit import DiT, FlowMatching, get_preset
from ditkit.compress import collect_calibration, kernel_calls, quantize_model
from ditkit.compress.packing import pack_int4, unpack_int4, unpack_uint4
from ditkit.compress.w4 import W4A8Linear, W4A16Linear

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(k, n, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    nn.init.normal_(lin.bias, std=0.1)
    return lin


def test_pack_unpack_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    signed = torch.randint(-8, 8, (7, 3, 10), generator=g)
    unsigned = torch.randint(0, 16, (5, 64), generator=g)
    p = pack_int4(signed)
    assert p.dtype == torch.uint8 and p.shape == (7, 3, 5)
    assert torch.equal(unpack_int4(p).long(), signed)
    assert torch.equal(unpack_uint4(pack_int4(unsigned)).long(), unsigned)
    # every byte value decodes and re-encodes to itself
    all_bytes = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(pack_int4(unpack_int4(all_bytes)), all_bytes)
    assert torch.equal(pack_int4(unpack_uint4(all_bytes)), all_bytes)
    with pytest.raises(ValueError):
        pack_int4(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        pack_int4(torch.full((2, 2), 16))


def test_w4a16_weight_error_within_half_a_step():
    lin = _linear(256, 48)
    q = W4A16Linear.from_linear(lin, group_size=64)
    w = lin.weight.detach()
    step = q.scales.float().repeat_interleave(64, dim=1)  # (N, K)
    err = (q.dequantized_weight() - w).abs()
    assert bool((err <= step / 2 + 2e-3 * w.abs().amax()).all())  # + float16 rounding of the scales
    x = torch.randn(4, 10, 256)
    with torch.no_grad():
        ref, out = lin(x), q(x)
    assert (out - ref).norm() / ref.norm() < 0.1
    assert q.calls["dequant_fp32"] == 1


def test_w4a8_two_level_weights_and_int8_kernel():
    lin = _linear(256, 48)
    q = W4A8Linear.from_linear(lin, group_size=64)
    w8 = q.int8_weight()
    assert w8.dtype == torch.int8 and int(w8.abs().max()) <= 119
    assert int(q.group_scales.min()) >= 1 and int(q.group_scales.max()) <= 17
    step = q.w_scale[:, None, None] * q.group_scales.float()[..., None]  # (N, G, 1) weight step per group
    err = (q.dequantized_weight() - lin.weight.detach()).reshape(48, 4, 64).abs()
    assert bool((err <= step / 2 + 1e-6).all())
    x = torch.randn(3, 20, 256)
    with torch.no_grad():
        ref, out = lin(x), q(x)
    assert (out - ref).norm() / ref.norm() < 0.1
    assert q.calls["int_mm"] == 1 and q.calls["fallback_float_mm"] == 0


def test_w4a8_cache_gives_same_output_and_counts_its_bytes():
    lin = _linear(128, 32)
    packed = W4A8Linear.from_linear(lin, group_size=64)
    cached = W4A8Linear.from_linear(lin, group_size=64, cache_int8=True)
    x = torch.randn(20, 128)
    torch.testing.assert_close(packed(x), cached(x))
    assert cached.weight_bytes() == packed.weight_bytes() + 128 * 32
    assert cached.weight_bytes(include_cache=False) == packed.weight_bytes()


def test_w4_memory_ratio_on_a_dit_b_sized_weight():
    lin = nn.Linear(768, 3072)
    fp32 = 4 * (768 * 3072 + 3072)
    for layer in (W4A8Linear.from_linear(lin, group_size=128), W4A16Linear.from_linear(lin, group_size=128),
                  W4A16Linear.from_linear(lin, group_size=64)):
        assert layer.qweight.dtype == torch.uint8 and layer.qweight.numel() == 768 * 3072 // 2
        assert fp32 / layer.weight_bytes() >= 3.5
    assert fp32 / W4A8Linear.from_linear(lin, group_size=128).weight_bytes() > 7


def test_input_features_not_a_multiple_of_the_group():
    lin = _linear(100, 12)
    x = torch.randn(5, 100)
    with torch.no_grad():
        ref = lin(x)
        for q in (W4A8Linear.from_linear(lin, group_size=64), W4A16Linear.from_linear(lin, group_size=64)):
            assert q.k_padded == 128 and q.dequantized_weight().shape == (12, 100)
            assert (q(x) - ref).norm() / ref.norm() < 0.1
    with pytest.raises(ValueError):
        W4A16Linear(10, 4, group_size=3)


@pytest.mark.parametrize("scheme", ["w4a8", "w4a16"])
def test_w4_tiny_dit(scheme):
    torch.manual_seed(0)
    model = DiT(get_preset("shapes-tiny")).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    calib = collect_calibration(model, FlowMatching(), torch.arange(2), steps=3)
    qmodel, report = quantize_model(model, scheme, calib=calib, group_size=64)
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([200.0, 800.0]), torch.tensor([0, 5])
    with torch.no_grad():
        ref, out = model(x, t, y), qmodel(x, t, y)
    assert (out - ref).norm() / ref.norm() < 0.05
    b = report["bytes"]
    assert b["quantized_layers_fp32"] / b["quantized_layers"] >= 3.5
    calls = kernel_calls(qmodel)
    if scheme == "w4a8":
        assert calls["int_mm"] == len(report["quantized"]) and report["kernels"]["blocks.0.mlp.fc1"].startswith("int_mm")
    else:
        assert calls["dequant_fp32"] == len(report["quantized"]) and "simulated" in report["kernels"]["blocks.0.mlp.fc1"]
    with pytest.raises(ValueError, match="timestep"):
        quantize_model(model, scheme, calib=calib, timestep_groups=2, alpha=0.5)
