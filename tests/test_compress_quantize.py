"""quantize_model on a tiny DiT: accuracy, original untouched, report, mixed precision, sampling with CFG."""

import pytest
import torch
from torch import nn

import ditkit
from ditkit import DiT, FlowMatching, get_preset
from ditkit.compress import Int8Linear, collect_calibration, kernel_calls, quantize_model
from ditkit.compress.calibrate import timestep_bounds

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(one_thread):
    torch.manual_seed(0)
    model = DiT(get_preset("shapes-tiny")).eval()
    for p in model.parameters():  # random non-zero weights (no adaLN-Zero)
        nn.init.normal_(p, std=0.05)
    return model


@pytest.fixture(scope="module")
def calib(tiny):
    return collect_calibration(tiny, FlowMatching(), torch.arange(4), steps=4, cfg_scale=2.0)


def _inputs(n=3):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 32, 32, generator=g), torch.tensor([100.0, 500.0, 900.0][:n]), torch.arange(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_w8a8_close_to_fp32_and_original_untouched(tiny, calib):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    x, t, y = _inputs()
    with torch.no_grad():
        ref = tiny(x, t, y)
    qmodel, report = quantize_model(tiny, "w8a8", calib=calib)
    with torch.no_grad():
        out = qmodel(x, t, y)
    assert _rel(out, ref) < 1e-2
    assert kernel_calls(qmodel)["int_mm"] == len(report["quantized"]) and kernel_calls(qmodel)["fallback_float_mm"] == 0
    # the input model is untouched: same weights, plain Linears only
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())
    assert not any(isinstance(m, Int8Linear) for m in tiny.modules())


def test_report_and_default_keep_fp(tiny, calib):
    qmodel, report = quantize_model(tiny, "w8a8", calib=calib)
    assert report["quantized"] == [f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert all(("adaLN_modulation" in n or "final_layer" in n or "t_embedder" in n) for n in report["kept_fp"])
    for n in report["quantized"]:
        assert isinstance(qmodel.get_submodule(n), Int8Linear)
        assert report["kernels"][n].startswith("int_mm")
    for n in report["kept_fp"]:
        assert type(qmodel.get_submodule(n)) is nn.Linear
    b = report["bytes"]
    assert b["quantized_layers"] < 0.3 * b["quantized_layers_fp32"] and b["model_quantized"] < b["model_fp32"]
    assert set(report["sensitivity"]) == set(report["quantized"]) and report["alpha"] == 0.5


def test_mixed_precision_keeps_the_most_sensitive(tiny, calib):
    _, full = quantize_model(tiny, "w8a8", calib=calib)
    qmodel, report = quantize_model(tiny, "w8a8", calib=calib, keep_sensitive=2)
    sens = full["sensitivity"]
    top2 = sorted(sens, key=lambda n: -sens[n])[:2]
    assert report["kept_by_sensitivity"] == top2
    for n in top2:
        assert type(qmodel.get_submodule(n)) is nn.Linear and n not in report["quantized"]
    # keeping layers in float brings the output closer to fp32
    x, t, y = _inputs()
    with torch.no_grad():
        ref = tiny(x, t, y)
        qfull, _ = quantize_model(tiny, "w8a8", calib=calib, sensitivity=False)
        assert _rel(qmodel(x, t, y), ref) <= _rel(qfull(x, t, y), ref)


def test_calibration_free_and_timestep_groups(tiny, calib):
    x, t, y = _inputs()
    with torch.no_grad():
        ref = tiny(x, t, y)
        q0, r0 = quantize_model(tiny, "w8a8")  # dynamic per-token scales need no calibration
        assert r0["alpha"] is None and r0["sensitivity"] == {}
        assert _rel(q0(x, t, y), ref) < 1e-2
        qg, rg = quantize_model(tiny, "w8a8", calib=calib, timestep_groups=2)
        assert len(rg["timestep_bounds"]) == 1
        assert _rel(qg(x, t, y), ref) < 1e-2  # a batch spanning both groups
    assert qg.get_submodule("blocks.0.attn.qkv").qweight.shape[0] == 2
    assert timestep_bounds(calib, 1).numel() == 0


def test_bad_arguments_raise(tiny, calib):
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        quantize_model(tiny, "w3a3")
    with pytest.raises(ValueError, match="calib"):
        quantize_model(tiny, "w8a8", keep_sensitive=1)
    with pytest.raises(ValueError, match="timestep"):
        quantize_model(tiny, "w8a8", calib=calib, alpha=None, timestep_groups=2)


def test_w8a8_model_samples_with_cfg(tiny, calib):
    qmodel, _ = quantize_model(tiny, "w8a8", calib=calib, timestep_groups=2)
    kw = {"process": FlowMatching(), "steps": 3, "cfg_scale": 2.0, "seed": 5}
    ref = ditkit.sample(tiny, torch.tensor([1, 7]), **kw)
    out = ditkit.sample(qmodel, torch.tensor([1, 7]), **kw)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert _rel(out, ref) < 2e-2
    assert kernel_calls(qmodel)["int_mm"] > 0


def test_overrides_give_layers_another_scheme(tiny, calib):
    from ditkit.compress.int8 import Int8WeightOnlyLinear

    qmodel, report = quantize_model(tiny, "w8a8", calib=calib, overrides={"adaLN_modulation": "w8a16"})
    ada = [n for n in report["quantized"] if "adaLN_modulation" in n]
    assert len(ada) == 3 and all(report["schemes"][n] == "w8a16" for n in ada)
    assert all(isinstance(qmodel.get_submodule(n), Int8WeightOnlyLinear) for n in ada)
    assert "simulated" in report["kernels"][ada[0]]
    assert not any("t_embedder" in n for n in report["quantized"])  # kept by the default keep_fp
    qall, rall = quantize_model(tiny, "w8a8", keep_fp=())  # everything but the timestep MLP's first layer
    assert "t_embedder.mlp.2" in rall["quantized"] and "t_embedder.mlp.0" in rall["kept_fp"]
    with torch.no_grad():
        assert _rel(qall(*_inputs()), tiny(*_inputs())) < 5e-2
    x, t, y = _inputs()
    with torch.no_grad():
        assert _rel(qmodel(x, t, y), tiny(x, t, y)) < 2e-2
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        quantize_model(tiny, "w8a8", overrides={"final_layer": "int3"})


def test_w8a8_composes_with_accel_caching(tiny, calib):
    from ditkit import accel

    qmodel, _ = quantize_model(tiny, "w8a8", calib=calib, timestep_groups=2)
    kw = {"process": FlowMatching(), "steps": 6, "cfg_scale": 2.0, "seed": 1}
    plain = ditkit.sample(qmodel, torch.tensor([2, 3]), **kw)
    calls_plain = kernel_calls(qmodel)["int_mm"]
    fast = accel.accelerate(qmodel, accel.TaylorSeerConfig(interval=2, order=1, warmup=2))
    out = ditkit.sample(fast, torch.tensor([2, 3]), **kw)
    assert torch.isfinite(out).all() and _rel(out, plain) < 0.2
    assert 0 < kernel_calls(qmodel)["int_mm"] - calls_plain < calls_plain  # cached steps skip int8 matmuls


def test_sensitivity_subset_is_evenly_strided(calib):
    from ditkit.compress.calibrate import calibration_batches, subsample_rows

    batches = calibration_batches(calib, max_batch=8)
    total = sum(b[0].shape[0] for b in batches)
    sub = subsample_rows(batches, 5, max_batch=2)
    assert [b[0].shape[0] for b in sub] == [2, 2, 1]
    x_all = torch.cat([b[0] for b in batches])
    x_sub = torch.cat([b[0] for b in sub])
    assert torch.equal(x_sub[0], x_all[0]) and torch.equal(x_sub[-1], x_all[total - 1])
    assert subsample_rows(batches, total + 1) == batches
