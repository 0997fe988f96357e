"""Guidance-aware savings: cfg_reuse with every=1 is cfg bit for bit (all channels, the 3-channel
variant, intervals), reuse halves the unconditional passes, state resets between generations, and
it stacks on top of accelerated models and the sample API."""

import pytest
import torch
from accel_tiny import ABS, NULL, ROPE, inputs, run, tiny_dit

import ditkit
from ditkit import accel
from ditkit.diffusion.guidance import cfg
from ditkit.models.dit import macs_per_forward


@pytest.mark.parametrize("kwargs", [{}, {"channels": 3}, {"interval": (0.0, 600.0)}], ids=["all", "3ch", "interval"])
@pytest.mark.parametrize("mode", ["delta", "uncond"])
def test_every_one_is_cfg_bit_for_bit(kwargs, mode):
    model = tiny_dit(ABS)
    noise, labels = inputs(ABS)
    base = run(cfg(model, 3.0, null_label=NULL, **kwargs), noise, labels, sampler="ddim", gaussian=True)
    out = run(accel.cfg_reuse(model, 3.0, null_label=NULL, every=1, mode=mode, **kwargs), noise, labels,
              sampler="ddim", gaussian=True)
    assert torch.equal(out, base)


@pytest.mark.parametrize("mode", ["delta", "uncond"])
def test_reuse_halves_the_unconditional_passes(mode):
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    base = run(cfg(model, 3.0, null_label=NULL), noise, labels, steps=8)
    inner = accel.accelerate(model)  # counts the rows the model actually runs
    guided = accel.cfg_reuse(inner, 3.0, null_label=NULL, every=2, mode=mode)
    out = run(guided, noise, labels, steps=8)
    assert guided.uncond_passes == 4 and guided.reused == 4
    assert inner.stats.macs == 4 * macs_per_forward(ROPE, 4) + 4 * macs_per_forward(ROPE, 2)  # 3/4 of cfg's rows
    assert not torch.equal(out, base) and (out - base).abs().max() < 0.2 * base.abs().max()
    assert guided.cache_bytes() > 0


def test_no_state_leaks_between_generations():
    model = tiny_dit(ROPE)
    noise_a, labels_a = inputs(ROPE, seed=1)
    noise_b, labels_b = inputs(ROPE, seed=2)
    guided = accel.cfg_reuse(accel.accelerate(model, accel.FORAConfig(interval=2)), 3.0, null_label=NULL, every=3)
    run(guided, noise_a, labels_a)
    after_a = run(guided, noise_b, labels_b)
    fresh = accel.cfg_reuse(accel.accelerate(model, accel.FORAConfig(interval=2)), 3.0, null_label=NULL, every=3)
    assert torch.equal(after_a, run(fresh, noise_b, labels_b))


def test_stacks_on_accelerated_models_through_the_sample_api():
    model = tiny_dit(ROPE)
    labels = torch.tensor([1, 2, 3])
    kwargs = dict(process=ditkit.FlowMatching(), sampler="heun", steps=4, batch_size=2)
    base = ditkit.sample(model, labels, cfg_scale=2.5, **kwargs)
    fast = accel.accelerate(model, accel.TeaCacheConfig(0.0), accel.RASConfig(sample_ratio=1.0))
    same = ditkit.sample(fast, labels, cfg_scale=1.0, model_wrapper=lambda m: accel.cfg_reuse(m, 2.5, null_label=NULL,
                                                                                               every=1), **kwargs)
    assert torch.equal(same, base)
    fast = accel.accelerate(model, accel.TaylorSeerConfig(interval=2, order=1), accel.RASConfig(sample_ratio=0.5, start=2))
    out = ditkit.sample(fast, labels, cfg_scale=1.0, model_wrapper=lambda m: accel.cfg_reuse(m, 2.5, null_label=NULL),
                        **kwargs)
    assert torch.isfinite(out).all() and fast.stats.macs < fast.stats.dense_macs


def test_bad_settings_raise():
    model = tiny_dit(ROPE)
    for bad in ({"every": 0}, {"mode": "both"}, {"channels": 0}, {"interval": (5.0, 1.0)}):
        with pytest.raises(ValueError):
            accel.cfg_reuse(model, 2.0, null_label=NULL, **bad)
    noise, _ = inputs(ROPE)
    with pytest.raises(ValueError, match="labels"):
        accel.cfg_reuse(model, 2.0, null_label=NULL)(noise, torch.full((2,), 500.0))
