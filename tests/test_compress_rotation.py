"""Block Hadamard rotation (LRQ-DiT / QuaRot): orthogonality, invariance, less quantization error, files."""

import pytest
import torch
from torch import nn

from ditkit import DiT, FlowMatching, get_preset
from ditkit.compress import Int8Linear, W4A8Linear, quantize_model, save_quantized
from ditkit.compress.rotation import block_size_for, hadamard_matrix, rotate
from ditkit.pipelines import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hadamard_is_orthogonal_and_symmetric():
    for b in (1, 2, 8, 64):
        h = hadamard_matrix(b)
        torch.testing.assert_close(h @ h, torch.eye(b), atol=1e-6, rtol=0)
        assert torch.equal(h, h.t())
    with pytest.raises(ValueError):
        hadamard_matrix(12)
    assert [block_size_for(k, 256) for k in (768, 3072, 64, 100, 7)] == [256, 256, 64, 4, 1]


def test_rotation_leaves_the_product_unchanged():
    torch.manual_seed(0)
    x, w, h = torch.randn(5, 96), torch.randn(7, 96), hadamard_matrix(32)
    torch.testing.assert_close(rotate(x, h) @ rotate(w, h).t(), x @ w.t(), atol=1e-4, rtol=1e-4)


def test_rotation_tames_an_outlier_channel():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    x = torch.randn(200, 128)
    x[:, 7] *= 50.0
    with torch.no_grad():
        ref = lin(x)
        w = lin.weight
        plain, rot = Int8Linear.from_linear(lin), Int8Linear.from_linear(lin, rotate=128)
        assert (rot.dequantized_weight() - w).norm() / w.norm() < 0.01  # the rotation is undone exactly
        assert (rot(x) - ref).norm() < 0.6 * (plain(x) - ref).norm()
        # W4A8: 4-bit weight error dominates here, and rotating this uniform-random weight makes it
        # Gaussian (harder for 4 bits), so only correctness is asserted
        rot4 = W4A8Linear.from_linear(lin, group_size=64, rotate=128)
        assert (rot4.dequantized_weight() - w).norm() / w.norm() < 0.15
        assert (rot4(x) - ref).norm() / ref.norm() < 0.15
    with pytest.raises(ValueError, match="power of two"):
        Int8Linear(96, 8, rotate=64)


def test_rotated_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DiT(get_preset("shapes-tiny")).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([100.0, 700.0]), torch.tensor([1, 2])
    with torch.no_grad():
        ref = model(x, t, y)
    qmodel, report = quantize_model(model, "w8a8", rotate=256)
    assert report["rotate"] == 256 and qmodel.get_submodule("blocks.0.mlp.fc2").rotate == 256  # K = 256
    assert qmodel.get_submodule("blocks.0.attn.qkv").rotate == 64  # K = 64
    save_quantized(tmp_path / "q", qmodel, FlowMatching())
    with torch.no_grad():
        out = qmodel(x, t, y)
        assert torch.equal(load_quantized(tmp_path / "q").model(x, t, y), out)
    assert (out - ref).norm() / ref.norm() < 1e-2
    with pytest.raises(ValueError, match="rotate"):
        quantize_model(model, "w8a8", rotate=48)
