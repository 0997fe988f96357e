"""ditkit -> diffusers forward parity (`ditkit.interop.parity`, the key map of `ditkit.interop.diffusers_dit`) and
the forward benchmark's command line, benchmarks/forward.py."""

import json

import pytest
import torch
from bench_script import run_benchmark

from ditkit.config import DiTConfig
from ditkit.interop.diffusers_dit import diffusers_config, to_diffusers_state_dict
from ditkit.interop.parity import build_diffusers, embedder_parameters, randomize_zero_init
from ditkit.io.checkpoint import CheckpointError
from ditkit.models.dit import DiT

TINY = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=3, num_heads=2, num_classes=10)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return randomize_zero_init(DiT(TINY), seed).eval()


def _inputs(t_values):
    g = torch.Generator().manual_seed(1)
    n = len(t_values)
    x = torch.randn(n, TINY.in_channels, *TINY.hw, generator=g)
    y = torch.randint(0, TINY.num_classes, (n,), generator=g)
    return x, torch.tensor(t_values), y


def _both(model, dmodel, t_values):
    x, t, y = _inputs(t_values)
    with torch.inference_mode():
        return model(x, t, y), dmodel(x, timestep=t, class_labels=y, return_dict=False)[0]


def test_key_map_covers_every_diffusers_parameter():
    pytest.importorskip("diffusers")
    from diffusers import DiTTransformer2DModel

    model = _tiny_model()
    sd = model.state_dict()
    mapped = to_diffusers_state_dict(sd, TINY.depth)
    dmodel = DiTTransformer2DModel(**diffusers_config(TINY, allow_numerics_change=True))
    expected = dmodel.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == v.shape for k, v in expected.items())
    # every diffusers parameter (not only state-dict entry) receives a ditkit tensor
    assert {name for name, _ in dmodel.named_parameters()} <= set(mapped)

    d = TINY.hidden_size
    qkv = sd["blocks.1.attn.qkv.weight"]  # rows [q; k; v]
    assert torch.equal(mapped["transformer_blocks.1.attn1.to_k.weight"], qkv[d : 2 * d])
    assert torch.equal(mapped["transformer_blocks.1.attn1.to_v.bias"], sd["blocks.1.attn.qkv.bias"][2 * d :])
    for i in range(TINY.depth):  # embedders duplicated into every block
        assert torch.equal(
            mapped[f"transformer_blocks.{i}.norm1.emb.class_embedder.embedding_table.weight"],
            sd["y_embedder.embedding_table.weight"],
        )
    n_diffusers = sum(p.numel() for p in dmodel.parameters())
    assert n_diffusers == model.num_parameters() + (TINY.depth - 1) * embedder_parameters(model)


def test_unmappable_config_and_key_are_rejected():
    with pytest.raises(ValueError, match="qk_norm"):
        diffusers_config(TINY.replace(qk_norm=True), allow_numerics_change=True)
    with pytest.raises(CheckpointError, match="q_norm"):
        to_diffusers_state_dict({"blocks.0.attn.q_norm.weight": torch.ones(16)}, 1)


def test_mapped_model_is_exact_where_numerics_agree():
    """At t = 0 the timestep-frequency divisor does not matter (cos 0 = 1, sin 0 = 0), and the export
    carries the pre-MLP eps 1e-6 over as diffusers' norm_eps: the two must agree to float rounding."""
    pytest.importorskip("diffusers")
    model = _tiny_model()
    dmodel = build_diffusers(model)
    assert dmodel.config.norm_eps == 1e-6
    a, b = _both(model, dmodel, [0, 0, 0, 0])
    assert a.abs().max() > 0.1  # not the vacuous all-zero adaLN-Zero init
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_mapped_model_is_close_with_diffusers_defaults():
    """diffusers as shipped (norm_eps 1e-5, frequencies / 127): close at small t, where the frequency
    difference is at most ~3e-3 per feature (docs/reference.md §4); measured ~2e-6 here, tolerance 1e-4."""
    pytest.importorskip("diffusers")
    model = _tiny_model()
    dmodel = build_diffusers(model, norm_eps=1e-5)
    a, b = _both(model, dmodel, [0, 1, 2, 3])
    assert a.abs().max() > 0.1
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_cli_runs_and_writes_json(tmp_path):
    """The benchmark's small case is the reference architecture (mappable; 32x32x3, patch 4, D=256, depth 8,
    4 heads): it runs, prints its table and sanity line and writes every timing."""
    pytest.importorskip("diffusers")
    out = tmp_path / "bench.json"
    done = run_benchmark("forward", "--presets", "shapes-small-ref", "--batch", "1", "--repeats", "2", "--warmup", "0",
                         "--json", out)
    assert done.returncode == 0, done.stderr
    assert "| shapes-small-ref | 1 | float32 | " in done.stdout and "sanity: max|ditkit - diffusers|" in done.stdout
    r = json.loads(out.read_text())["results"][0]
    assert r["ratio"] > 0 and len(r["times_ditkit_ms"]) == len(r["times_diffusers_ms"]) == 2
    assert r["max_abs_diff_t0"] < 1e-3
    ref = DiTConfig(input_size=32, patch_size=4, in_channels=3, hidden_size=256, depth=8, num_heads=4, num_classes=10,
                    learn_sigma=False)
    assert r["params_ditkit"] == DiT(ref).num_parameters()


def test_cli_rejects_unmappable_preset():
    pytest.importorskip("diffusers")
    done = run_benchmark("forward", "--presets", "shapes-small")  # RoPE + QK-norm: no diffusers equivalent
    assert done.returncode == 2 and "use_rope" in done.stderr


def test_cli_without_diffusers_exits_2(tmp_path):
    (tmp_path / "diffusers.py").write_text("raise ImportError('diffusers is not installed')\n")
    done = run_benchmark("forward", "--presets", "shapes-tiny", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2
    assert "pip install ditkit[bench]" in done.stdout
