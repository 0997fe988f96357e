"""Region-adaptive sampling: positions follow the selected tokens, the K/V cache keeps dropped tokens
visible, selection by metric with a working starvation guard, MAC counts, and RAS combined with
every cache policy and with guidance."""

import pytest
import torch
from accel_tiny import ABS, NULL, ROPE, inputs, run, tiny_dit

from ditkit import accel
from ditkit.accel.ras import RASState, token_metric
from ditkit.accel.steps import Step
from ditkit.accel.trunk import MacCounter, Trunk, View, mlp_macs_per_token
from ditkit.diffusion.guidance import cfg


def dense_then_subset(model, idx):
    """Run the trunk densely (recording K/V), then on the token subset ``idx`` (N, K) of the same input."""
    noise, labels = inputs(model.config, n=idx.shape[0])
    tokens, ctx = model.embed(noise)
    c = model.condition(torch.tensor([700.0, 300.0])[: idx.shape[0]], labels)
    state = RASState(accel.RASConfig(), model)
    dense = Trunk(model, tokens, c, ctx, MacCounter(), View(), state._record_hook).run(tokens)
    state.view = View(idx)
    rope = None if ctx.rope is None else tuple(tab[idx].unsqueeze(1) for tab in ctx.rope)
    trunk = Trunk(model, tokens, c, ctx, MacCounter(), state.view, state._sparse_hook, rope)
    return dense, trunk.run(trunk.x), state, (tokens, c, ctx)


@pytest.mark.parametrize("model_cfg", [ROPE, ABS], ids=["rope", "abs-pos"])
def test_positions_follow_the_selected_tokens(model_cfg):
    """All tokens in a different order per sample: the same outputs, permuted (RoPE / sin-cos follow)."""
    model = tiny_dit(model_cfg)
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(model_cfg.num_tokens, generator=g) for _ in range(2)])  # (2, T)
    dense, permuted, _, _ = dense_then_subset(model, idx)
    torch.testing.assert_close(permuted, View(idx).take(dense), rtol=1e-5, atol=1e-5)


def test_ras_refuses_mixffn_models():
    model = tiny_dit(ROPE.replace(mlp_type="mixffn"))
    with pytest.raises(ValueError, match="unsupported combination: RAS computes token subsets"):
        accel.accelerate(model, accel.RASConfig())
    accel.accelerate(model, accel.FORAConfig(interval=2))  # caching works on whole grids: allowed


def test_kv_cache_keeps_dropped_tokens_visible():
    """With unchanged inputs a subset attends over the cached K/V of the others: exactly the dense values."""
    model = tiny_dit(ROPE)
    idx = torch.tensor([[0, 3, 4, 9, 15], [1, 2, 7, 8, 12]])  # different tokens per sample
    dense, subset, state, (tokens, c, ctx) = dense_then_subset(model, idx)
    torch.testing.assert_close(subset, View(idx).take(dense), rtol=1e-5, atol=1e-5)
    # the cache of block 0 is the K/V a fresh dense attention computes
    captured = {}

    def capture(k, v):
        captured["kv"] = (k, v)
        return k, v

    block = model.blocks[0]
    mod = block.modulation(c)
    from ditkit.models.layers import modulate
    block.attn(modulate(block.norm1(tokens), mod[0], mod[1]), rope=ctx.rope, kv_hook=capture)
    for cached, fresh in zip(state.kv[0], captured["kv"]):
        torch.testing.assert_close(cached, fresh, rtol=1e-6, atol=1e-6)


def test_all_tokens_through_the_sparse_path_is_the_baseline():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    base = run(model, noise, labels)
    fast = accel.accelerate(model, accel.RASConfig(sample_ratio=0.999, start=1))  # K = T, via the K/V cache
    torch.testing.assert_close(run(fast, noise, labels), base, rtol=1e-5, atol=1e-5)


def fake_state(metric: torch.Tensor, cfg: accel.RASConfig, depth: int = 3) -> RASState:
    model = tiny_dit(ROPE)
    state = RASState(cfg, model)
    state.out = torch.zeros(*metric.shape, 12)
    state.metric, state.drops = metric, torch.zeros_like(metric)
    state.kv = [(torch.zeros(1), torch.zeros(1))] * depth
    return state


def test_selection_by_metric_and_the_starvation_guard():
    t = 16
    metric = torch.linspace(1.0, 2.0, t).repeat(2, 1)  # (2, T): token 15 is the most active
    ctx = tiny_dit(ROPE).token_context((4, 4), torch.device("cpu"))
    for focus, kept in (("high", [12, 13, 14, 15]), ("low", [0, 1, 2, 3])):
        plain = fake_state(metric, accel.RASConfig(sample_ratio=0.25, start=1, starvation_scale=0.0, focus=focus))
        for k in range(1, 6):
            view, _, rope = plain.plan(Step(k, None, 0.0), ctx, t)
            assert view.idx[0].tolist() == kept and rope[0].shape == (2, 1, 4, ROPE.head_dim)
        guarded = fake_state(metric, accel.RASConfig(sample_ratio=0.25, start=1, starvation_scale=1.0, focus=focus))
        seen = set()
        for k in range(1, 13):
            seen.update(guarded.plan(Step(k, None, 0.0), ctx, t)[0].idx[0].tolist())
        assert seen == set(range(t))  # nobody starves
        assert guarded.drops.sum(dim=1).tolist() == [12 * 12.0] * 2
    outside = fake_state(metric, accel.RASConfig(sample_ratio=0.25, start=2, end=5, reset_steps=(3,)))
    assert [outside.plan(Step(k, None, 0.0), ctx, t)[0].full for k in range(8)] == [
        True, True, False, True, False, False, True, True]


def test_token_metric_layout():
    out = torch.zeros(1, 3, 4, 4)
    out[0, :, 0:2, 2:4] = torch.tensor([1.0, -1.0, 0.0])[:, None, None]  # only the top-right 2x2 patch varies
    assert token_metric(out, 2).tolist() == [[0.0, torch.tensor([1.0, -1.0, 0.0]).std(correction=0).item(), 0.0, 0.0]]
    assert token_metric(out, 2, "l2norm")[0, 1].item() == pytest.approx(2**0.5)


def test_sparse_calls_count_fewer_macs():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, accel.RASConfig(sample_ratio=0.5, start=2))
    run(fast, noise, labels, steps=8)  # calls 2..7 compute 8 of 16 tokens, attending over all 16 keys
    n, t, k, d = 2, 16, 8, ROPE.hidden_size
    per_block = lambda rows, keys: n * (rows * (4 * d * d + mlp_macs_per_token(ROPE)) + 2 * rows * keys * d)
    final = n * d * ROPE.patch_size**2 * ROPE.out_channels
    saved = 6 * (ROPE.depth * (per_block(t, t) - per_block(k, t)) + (t - k) * final)
    assert fast.stats.macs == fast.stats.dense_macs - saved
    assert fast.stats.peak_cache_bytes >= 2 * ROPE.depth * n * t * d * 4  # the K/V cache


@pytest.mark.parametrize("config", [
    accel.FORAConfig(interval=1), accel.FORAConfig(interval=1, granularity="trunk"),
    accel.TaylorSeerConfig(interval=1), accel.DeltaDiTConfig(interval=1), accel.FirstBlockCacheConfig(0.0),
    accel.TeaCacheConfig(0.0), accel.GatedTaylorConfig(0.0),
], ids=lambda c: c.describe())
def test_identity_cache_on_top_of_ras_is_ras(config):
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    ras = accel.RASConfig(sample_ratio=0.5, start=2)
    assert torch.equal(run(accel.accelerate(model, config, ras), noise, labels),
                       run(accel.accelerate(model, ras), noise, labels))


@pytest.mark.parametrize("config", [
    accel.FORAConfig(interval=2), accel.TaylorSeerConfig(interval=2, order=1), accel.DeltaDiTConfig(interval=2),
    accel.FirstBlockCacheConfig(0.5), accel.TeaCacheConfig(0.3), accel.GatedTaylorConfig(0.5),
], ids=lambda c: c.describe())
def test_ras_with_each_cache_policy_and_guidance(config):
    model = tiny_dit(ABS)
    noise, labels = inputs(ABS)
    ras = accel.RASConfig(sample_ratio=0.5, start=2)
    ras_alone = accel.accelerate(model, ras)
    run(cfg(ras_alone, 3.0, null_label=NULL), noise, labels, sampler="ddim", gaussian=True)
    both = accel.accelerate(model, config, ras)
    out = run(cfg(both, 3.0, null_label=NULL), noise, labels, sampler="ddim", gaussian=True)
    assert torch.isfinite(out).all()
    assert both.stats.macs < ras_alone.stats.macs < ras_alone.stats.dense_macs
