"""ditkit.accel identity settings: every method's neutral knob reproduces the baseline bit for bit
(flow Euler/Heun, Gaussian DDIM, with and without guidance), the trunk driver matches the model's
own blocks, and dense calls count exactly the model's MACs."""

import dataclasses

import pytest
import torch
from accel_tiny import ABS, NULL, ROPE, inputs, run, tiny_dit

import ditkit
from ditkit import accel
from ditkit.diffusion.guidance import cfg
from ditkit.models.dit import macs_per_forward

IDENTITY = [
    accel.FORAConfig(interval=1),
    accel.FORAConfig(interval=1, granularity="trunk"),
    accel.TaylorSeerConfig(interval=1, order=3),
    accel.TaylorSeerConfig(interval=1, granularity="trunk"),
    accel.DeltaDiTConfig(interval=1),
    accel.FirstBlockCacheConfig(threshold=0.0),
    accel.TeaCacheConfig(threshold=0.0, coefficients=(-5.0, 1.0)),  # negative poly: the guard still holds
    accel.GatedTaylorConfig(threshold=0.0),
    accel.RASConfig(sample_ratio=1.0, start=1),
]
IDS = [c.describe() for c in IDENTITY]

CASES = [  # (model config, sampler, gaussian)
    (ROPE, "euler", False),
    (ROPE, "heun", False),
    (ABS, "ddim", True),
]


@pytest.mark.parametrize("config", IDENTITY, ids=IDS)
@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_identity_setting_is_the_baseline_bit_for_bit(config, case):
    model_cfg, sampler, gaussian = case
    model = tiny_dit(model_cfg)
    noise, labels = inputs(model_cfg)
    base = run(model, noise, labels, sampler=sampler, gaussian=gaussian, steps=6)
    fast = accel.accelerate(model, config)
    out = run(fast, noise, labels, sampler=sampler, gaussian=gaussian, steps=6)
    assert torch.equal(out, base)
    assert fast.stats.macs == fast.stats.dense_macs


@pytest.mark.parametrize("config", IDENTITY, ids=IDS)
def test_identity_under_guidance_with_an_interval(config):
    """Guidance runs N rows outside its interval and 2N inside: two streams, still the baseline."""
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, config)
    base = run(cfg(model, 3.0, null_label=NULL, interval=(0.0, 600.0)), noise, labels)
    out = run(cfg(fast, 3.0, null_label=NULL, interval=(0.0, 600.0)), noise, labels)
    assert torch.equal(out, base)


def test_plain_wrapper_through_the_pipeline_sample_api():
    model = tiny_dit(ROPE)
    labels = torch.tensor([0, 1, 2])
    base = ditkit.sample(model, labels, process=ditkit.FlowMatching(), steps=5, cfg_scale=2.0, batch_size=2)
    fast = accel.accelerate(model, accel.TaylorSeerConfig(interval=1), accel.RASConfig(sample_ratio=1.0))
    out = ditkit.sample(fast, labels, process=ditkit.FlowMatching(), steps=5, cfg_scale=2.0, batch_size=2)
    assert torch.equal(out, base)
    assert fast.stats.generations == 2  # one per batch, detected from t


def test_trunk_block_and_branches_match_the_model():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE, n=3)
    t = torch.tensor([900.0, 500.0, 10.0])
    tokens, ctx = model.embed(noise)
    c = model.condition(t, labels)
    trunk = accel.Trunk(model, tokens, c, ctx, accel.trunk.MacCounter())
    for i, block in enumerate(model.blocks):
        assert torch.equal(trunk.block(i, tokens), block(tokens, c, ctx))
        mod = block.modulation(c)
        assert torch.equal(trunk.gate(i, "attn") * trunk.attn_pre(i, tokens), block.attn_branch(tokens, mod, ctx))
        assert torch.equal(trunk.gate(i, "mlp") * trunk.mlp_pre(i, tokens), block.mlp_branch(tokens, mod))


def test_dense_calls_count_the_models_macs():
    for model_cfg in (ROPE, ABS):
        model = tiny_dit(model_cfg)
        noise, labels = inputs(model_cfg, n=3)
        fast = accel.accelerate(model)
        fast(noise, torch.full((3,), 500.0), labels)
        assert fast.stats.macs == fast.stats.dense_macs == macs_per_forward(model_cfg, 3)
        assert fast.stats.flops == 2 * fast.stats.macs and fast.stats.peak_cache_bytes == 0


def test_pipeline_generate_with_an_accelerated_model(tiny_model_dir):
    pipe = ditkit.load_pipeline(tiny_model_dir)
    base = pipe.generate(["circle", "star"], steps=4)
    fast_pipe = dataclasses.replace(pipe, model=accel.accelerate(pipe.model, accel.FirstBlockCacheConfig(0.0)))
    assert torch.equal(fast_pipe.generate(["circle", "star"], steps=4), base)
    assert fast_pipe.config is pipe.config and fast_pipe.model.stats.calls == 4
