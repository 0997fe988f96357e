"""Quantized model folders: exact round trip without re-calibration, packed tensors, file sizes, errors."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from torch import nn

from ditkit import DiT, FlowMatching, get_preset, load_pipeline, save_pipeline
from ditkit.compress import collect_calibration, kernel_calls, quantize_model
from ditkit.compress.files import KIND, save_quantized
from ditkit.io.checkpoint import CheckpointError
from ditkit.pipelines import load_quantized

SMALL_HEADS = {"adaLN_modulation": "w8a16", "final_layer": "w8a16"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    m = DiT(get_preset("shapes-tiny").replace(hidden_size=128)).eval()
    for p in m.parameters():
        nn.init.normal_(p, std=0.05)
    return m


@pytest.fixture(scope="module")
def calib(model):
    return collect_calibration(model, FlowMatching(), torch.arange(2), steps=3)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([200.0, 800.0]), torch.tensor([0, 5])


@pytest.mark.parametrize("scheme,kw", [
    ("w8a8", {"timestep_groups": 2}),
    ("w4a8", {"overrides": SMALL_HEADS}),
    ("w4a16", {}),
])
def test_round_trip_is_exact_and_needs_no_calibration(tmp_path, model, calib, scheme, kw):
    qmodel, _ = quantize_model(model, scheme, calib=calib, group_size=64, **kw)
    save_quantized(tmp_path / "q", qmodel, FlowMatching(), class_names=["a", "b"])
    assert sorted(os.listdir(tmp_path)) == ["q"]  # atomic: no temporary leftovers
    pipe = load_quantized(tmp_path / "q")
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(pipe.model(x, t, y), qmodel(x, t, y))
    if scheme != "w4a16":
        assert kernel_calls(pipe.model)["int_mm"] > 0
    info = json.loads((tmp_path / "q" / "config.json").read_text())
    assert info["kind"] == KIND and info["quantization"]["scheme"] == scheme
    assert set(info["quantization"]["layers"]) == {n for n, m in qmodel.named_modules() if hasattr(m, "calls")}
    assert pipe.class_names == ["a", "b"] and pipe.generate(["a"], steps=2).shape == (1, 3, 32, 32)


def test_packed_tensors_in_the_file(tmp_path, model):
    qmodel, _ = quantize_model(model, "w4a8", group_size=64)
    save_quantized(tmp_path / "q", qmodel, FlowMatching())
    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:
        qw = f.get_tensor("blocks.0.mlp.fc1.qweight")
        gs = f.get_tensor("blocks.0.mlp.fc1.group_scales")
        assert "blocks.0.mlp.fc1.weight" not in f.keys()
    assert qw.dtype == torch.uint8 and qw.shape == (512, 64)  # (N, K/2): two weights per byte
    assert gs.dtype == torch.int8 and gs.shape == (512, 2)


def test_file_sizes(tmp_path, model, calib):
    save_pipeline(tmp_path / "fp32", model, FlowMatching())
    fp32 = os.path.getsize(tmp_path / "fp32" / "model.safetensors")
    sizes = {}
    for name, scheme, kw in [("w8a8", "w8a8", {}), ("w4a8", "w4a8", {"overrides": SMALL_HEADS}),
                             ("w4a16", "w4a16", {"overrides": SMALL_HEADS})]:
        qmodel, report = quantize_model(model, scheme, calib=calib, group_size=64, **kw)
        save_quantized(tmp_path / name, qmodel, FlowMatching())
        sizes[name] = os.path.getsize(tmp_path / name / "model.safetensors")
        assert 0 <= sizes[name] - report["bytes"]["model_quantized"] < 16384  # file = resident tensors + header
    assert fp32 / sizes["w8a8"] > 1.5  # float adaLN / final layers kept (ViDiT-Q default)
    assert fp32 / sizes["w4a8"] >= 3.5 and fp32 / sizes["w4a16"] >= 3.5


def test_errors(tmp_path, model):
    with pytest.raises(ValueError, match="no quantized layers"):
        save_quantized(tmp_path / "x", model, FlowMatching())
    save_pipeline(tmp_path / "fp32", model, FlowMatching())
    with pytest.raises(CheckpointError, match="not a quantized"):
        load_quantized(tmp_path / "fp32")
    qmodel, _ = quantize_model(model, "w8a8")
    save_quantized(tmp_path / "q", qmodel, FlowMatching())
    assert isinstance(load_pipeline(tmp_path / "q").model.blocks[0].attn.qkv, type(qmodel.blocks[0].attn.qkv))
    cfg_path = tmp_path / "q" / "config.json"
    info = json.loads(cfg_path.read_text())
    info["quantization"]["layers"]["blocks.0.attn.qkv"]["type"] = "w2a2"
    cfg_path.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="w2a2"):
        load_quantized(tmp_path / "q")
    info["quantization"]["layers"]["blocks.0.attn.qkv"]["type"] = "w4a16"
    info["quantization"]["layers"]["blocks.0.attn.qkv"]["group_size"] = 64
    cfg_path.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="do not fit|config needs"):
        load_quantized(tmp_path / "q")
