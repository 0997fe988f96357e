"""Vector quantization (VQ4DiT): k-means, code packing, 2-bit memory, soft assignments, zero-data calibration, files."""

import copy

import pytest
import torch
from torch import nn

from ditkit import DiT, FlowMatching, get_preset
from ditkit.compress import quantize_model, save_quantized
from ditkit.compress.vq import VQLinear, kmeans, pack_codes, unpack_codes
from ditkit.compress.vq_calibrate import SoftVQLinear, calibrate_vq
from ditkit.pipelines import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(one_thread):
    torch.manual_seed(0)
    m = DiT(get_preset("shapes-tiny")).eval()
    for p in m.parameters():
        nn.init.normal_(p, std=0.05)
    return m


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    pts = (centers[:, None] + 0.1 * torch.randn(4, 50, 2, generator=g)).reshape(-1, 2)
    cent, assign = kmeans(pts, 4, iters=10, seed=1)
    assert torch.cdist(centers, cent).min(1).values.max() < 0.2
    assert all(len(set(assign[i * 50:(i + 1) * 50].tolist())) == 1 for i in range(4))
    with pytest.raises(ValueError):
        kmeans(pts[:3], 4)


def test_code_packing_round_trip():
    g = torch.Generator().manual_seed(0)
    c12 = torch.randint(0, 4096, (3, 10), generator=g)
    p12 = pack_codes(c12, 12)
    assert p12.dtype == torch.uint8 and p12.shape == (3, 15) and torch.equal(unpack_codes(p12, 12), c12)
    c8 = torch.randint(0, 256, (3, 7), generator=g)
    assert torch.equal(unpack_codes(pack_codes(c8, 8), 8), c8)


def test_two_bit_memory_on_a_dit_b_sized_weight():
    fp32 = 4 * (768 * 768 + 768)
    vq2 = VQLinear(768, 768, codebook_size=256, dim=4)
    assert vq2.codes.shape == (768, 192) and vq2.codes.dtype == torch.uint8  # 8 bits per 4 weights
    assert fp32 / vq2.weight_bytes() >= 10
    vq3 = VQLinear(768, 3072, codebook_size=4096, dim=4)
    assert vq3.codes.shape == (3072, 288)  # 12 bits per 4 weights
    assert 4 * (768 * 3072 + 3072) / vq3.weight_bytes() >= 7
    torch.manual_seed(0)
    lin = nn.Linear(64, 256)  # 4096 sub-vectors: one per codeword, so 3-bit VQ is exact up to float16
    small = VQLinear.from_linear(lin, codebook_size=4096, dim=4, iters=1)
    assert small.bits == 12 and torch.allclose(small.dequantized_weight(), lin.weight, atol=2e-3)


def test_vq_layer_and_single_candidate_is_plain_vq():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    vq = VQLinear.from_linear(lin, codebook_size=64, dim=4, iters=10)
    w = lin.weight.detach()
    assert (vq.dequantized_weight() - w).norm() / w.norm() < 0.5
    soft = SoftVQLinear(vq, w, n_candidates=1)
    torch.testing.assert_close(soft.weight(), vq.dequantized_weight(), atol=1e-3, rtol=0)  # float16 codebook
    hard = soft.harden()
    assert torch.equal(hard.code_indices(), vq.code_indices())
    soft3 = SoftVQLinear(vq, w, n_candidates=3)
    assert soft3.cand.shape == (32 * 16, 3) and 0 <= float(soft3.ratio_loss().detach()) < 1


def test_zero_data_calibration_lowers_block_error(tiny):
    q, report = quantize_model(tiny, "vq2", kmeans_iters=8)
    # every quantized layer names its kernel, and each is a simulated (decode-to-float) one
    assert set(report["kernels"]) == set(report["quantized"]) != set()
    assert all("simulated" in k for k in report["kernels"].values())
    q2 = copy.deepcopy(q)
    rep = calibrate_vq(tiny, q2, samples=4, steps=15, n_candidates=2)
    assert len(rep["blocks"]) == 2
    assert all(b["loss_after"] < b["loss_before"] for b in rep["blocks"])
    assert all(isinstance(q2.get_submodule(n), VQLinear) for n in report["quantized"])


def test_vq_model_round_trip(tiny, tmp_path):
    q, report = quantize_model(tiny, "vq2", kmeans_iters=5)
    b = report["bytes"]
    assert b["quantized_layers_fp32"] / b["quantized_layers"] > 5  # tiny layers: the codebook weighs in
    save_quantized(tmp_path / "q", q, FlowMatching())
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([100.0, 700.0]), torch.tensor([1, 2])
    with torch.no_grad():
        out, ref = q(x, t, y), tiny(x, t, y)
        assert torch.equal(load_quantized(tmp_path / "q").model(x, t, y), out)
    assert (out - ref).norm() / ref.norm() < 0.1
