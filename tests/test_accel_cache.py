"""ditkit.accel cache policies: Taylor order 0 is FORA, forecasts, schedules and MAC counts,
no state leaking between generations, composition with guidance, cache memory, TeaCache fitting,
and the errors for unsupported combinations and bad settings."""

import dataclasses

import pytest
import torch
from accel_tiny import ABS, NULL, ROPE, inputs, run, tiny_dit

import ditkit
from ditkit import accel
from ditkit.accel.forecast import TaylorFeature
from ditkit.accel.steps import GenerationClock, Step, periodic
from ditkit.accel.trunk import View, mlp_macs_per_token
from ditkit.diffusion.guidance import cfg

LOSSY = [
    accel.FORAConfig(interval=3),
    accel.FORAConfig(interval=2, warmup=2, granularity="trunk"),
    accel.TaylorSeerConfig(interval=3, order=2),
    accel.TaylorSeerConfig(interval=3, order=1, granularity="trunk"),
    accel.DeltaDiTConfig(interval=3, num_blocks=2),
    accel.FirstBlockCacheConfig(threshold=0.5),
    accel.TeaCacheConfig(threshold=0.3),
    accel.GatedTaylorConfig(threshold=0.5),
]
IDS = [c.describe() for c in LOSSY]


def block_macs(cfg, n: int, tokens: int, modulation: bool = True) -> int:
    """MACs of one block (attention, MLP and, optionally, its adaLN modulation) for n samples."""
    d = cfg.hidden_size
    branches = n * (tokens * (4 * d * d + mlp_macs_per_token(cfg)) + 2 * tokens * tokens * d)
    return branches + (n * 6 * d * d if modulation else 0)


# ----------------------------------------------------------------------------- TaylorSeer vs FORA


@pytest.mark.parametrize("granularity", ["branch", "trunk"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_taylor_order_zero_is_fora_exactly(granularity, sampler):
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fora = run(accel.accelerate(model, accel.FORAConfig(interval=3, warmup=1, granularity=granularity)),
               noise, labels, sampler=sampler)
    taylor = run(accel.accelerate(model, accel.TaylorSeerConfig(interval=3, warmup=1, order=0,
                                                                 granularity=granularity)),
                 noise, labels, sampler=sampler)
    assert torch.equal(taylor, fora)
    base = run(model, noise, labels, sampler=sampler)
    assert not torch.equal(fora, base)  # it did reuse something


def test_taylor_feature_forecasts():
    view = View()
    a, b = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    for order in (1, 2, 3):  # a linear feature is forecast exactly from order 1 on
        f = TaylorFeature(order)
        for k in (0, 3, 6, 9):
            f.update(view, a + b * k, k)
        assert len(f.derivs) == min(order, 3) + 1  # one new order per refresh
        for k in (10, 11, 13):
            torch.testing.assert_close(f.forecast(view, k), a + b * k, rtol=1e-5, atol=1e-5)
    f = TaylorFeature(0)  # order 0 returns the cached value itself
    f.update(view, a, 0)
    assert f.forecast(view, 5) is a


def test_taylor_feature_refreshes_only_the_rows_in_view():
    a, b = torch.randn(1, 4, 2), torch.randn(1, 4, 2)
    f = TaylorFeature(1)
    f.update(View(), a, 0)
    f.update(View(), a + b, 1)
    sub = View(torch.tensor([[1, 3]]))
    f.update(sub, (a + 3 * b)[:, [1, 3]], 3)  # tokens 1 and 3 refreshed at call 3, tokens 0 and 2 still at call 1
    torch.testing.assert_close(f.forecast(View(), 4), a + 4 * b)  # every token still on its own line
    assert f.last[0].tolist() == [1.0, 3.0, 1.0, 3.0]


def test_schedules():
    full = [periodic(Step(k, 50, 0.0), interval=4, warmup=2) for k in range(50)]
    assert sum(full) == 2 + 12  # TaylorSeer on 50 steps with N=4: 2 warm-up + 12 periodic full steps
    assert all(periodic(Step(k, None, 0.0), 1) for k in range(10))


def test_fora_counts_full_calls_exactly():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, accel.FORAConfig(interval=3))
    run(fast, noise, labels, steps=10)  # full calls 0, 3, 6, 9; 6 reuse calls skip every branch
    skipped = 6 * ROPE.depth * block_macs(ROPE, 2, ROPE.num_tokens, modulation=False)  # gates still computed
    assert fast.stats.macs == fast.stats.dense_macs - skipped


def test_delta_dit_caches_rear_then_front_blocks():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, accel.DeltaDiTConfig(interval=100, num_blocks=2, boundary_step=3, warmup=0))
    run(fast, noise, labels, steps=8)  # full at 0 and at the phase switch 3; 6 calls skip 2 blocks
    assert fast.stats.macs == fast.stats.dense_macs - 6 * 2 * block_macs(ROPE, 2, ROPE.num_tokens)
    rear = run(accel.accelerate(model, accel.DeltaDiTConfig(interval=2, num_blocks=1, boundary_step=100)), noise, labels)
    front = run(accel.accelerate(model, accel.DeltaDiTConfig(interval=2, num_blocks=1, boundary_step=0)), noise, labels)
    assert not torch.equal(rear, front)


def test_gated_taylor_accepts_only_after_its_history():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, accel.GatedTaylorConfig(threshold=1e9, min_full=3))
    run(fast, noise, labels, steps=8)  # calls 0-2 full, then every call accepts: blocks 1..L-1 skipped
    assert fast.stats.macs == fast.stats.dense_macs - 5 * (ROPE.depth - 1) * block_macs(ROPE, 2, ROPE.num_tokens)


def test_thresholds_trade_compute_monotonically():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    for make in (lambda th: accel.TeaCacheConfig(threshold=th), lambda th: accel.FirstBlockCacheConfig(threshold=th)):
        macs = []
        for th in (0.0, 0.05, 0.2, 1.0, 10.0):
            fast = accel.accelerate(model, make(th))
            run(fast, noise, labels, steps=10)
            macs.append(fast.stats.macs)
        assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0]


def test_begin_announces_the_last_call():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    fast = accel.accelerate(model, accel.FirstBlockCacheConfig(threshold=1e9))
    run(fast, noise, labels, steps=6)
    skipping = fast.stats.macs
    fast.reset_stats()
    fast.begin(accel.calls_per_generation("euler", 6))
    run(fast, noise, labels, steps=6)
    assert fast.stats.macs == skipping + (ROPE.depth - 1) * block_macs(ROPE, 2, ROPE.num_tokens)


# ----------------------------------------------------------------------------- generations


@pytest.mark.parametrize("config", LOSSY, ids=IDS)
def test_no_state_leaks_between_generations(config):
    model = tiny_dit(ROPE)
    noise_a, labels_a = inputs(ROPE, seed=1)
    noise_b, labels_b = inputs(ROPE, seed=2)
    fast = accel.accelerate(model, config, accel.RASConfig(sample_ratio=0.5, start=2))
    run(fast, noise_a, labels_a)
    after_a = run(fast, noise_b, labels_b)  # new generation detected from t alone
    fresh = run(accel.accelerate(model, config, accel.RASConfig(sample_ratio=0.5, start=2)), noise_b, labels_b)
    assert torch.equal(after_a, fresh)
    assert fast.stats.generations == 2
    run(fast, noise_a, labels_a, sampler="heun")
    assert torch.equal(run(fast, noise_b, labels_b), fresh)  # after a Heun run too


def test_pipeline_batches_are_separate_generations():
    model = tiny_dit(ROPE)
    labels = torch.tensor([0, 3])
    config = accel.TaylorSeerConfig(interval=2, order=1)
    kwargs = dict(process=ditkit.FlowMatching(), steps=6, cfg_scale=2.0)
    both = ditkit.sample(accel.accelerate(model, config), labels, batch_size=1, **kwargs)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for i in range(2):  # each batch equals a fresh wrapper on that sample alone
        alone = ditkit.sample(accel.accelerate(model, config), labels[i:i + 1], noise=noise[i:i + 1], seed=i,
                              batch_size=1, **kwargs)
        assert torch.equal(both[i:i + 1], alone)


def test_generation_clock():
    clock = GenerationClock()
    heun = [1000.0, 800.0, 800.0, 600.0, 600.0, 400.0]
    assert [clock.tick(torch.tensor([t])) for t in heun] == [True] + [False] * 5
    assert clock.tick(torch.tensor([1000.0])) and clock.index == 0  # back to the start
    clock.reset()
    sit = [0.0, 0.25, 0.5]  # SiT convention: t grows along sampling
    assert [clock.tick(t) for t in sit] == [True, False, False]
    assert clock.tick(0.1)  # a step against the direction starts a new generation


# ----------------------------------------------------------------------------- guidance, memory


@pytest.mark.parametrize("config", LOSSY, ids=IDS)
def test_composes_with_guidance_and_saves_compute(config):
    model = tiny_dit(ABS)
    noise, labels = inputs(ABS)
    base = run(cfg(model, 4.0, null_label=NULL, channels=3), noise, labels, sampler="ddim", gaussian=True, steps=10)
    fast = accel.accelerate(model, config)
    out = run(cfg(fast, 4.0, null_label=NULL, channels=3), noise, labels, sampler="ddim", gaussian=True, steps=10)
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert (out - base).abs().max() < 0.5 * base.abs().max()
    assert fast.stats.macs < fast.stats.dense_macs
    assert fast.stats.peak_cache_bytes > 0


def test_cache_memory_is_reported():
    model = tiny_dit(ROPE)
    noise, labels = inputs(ROPE)
    n, t, d = 2, ROPE.num_tokens, ROPE.hidden_size
    per_feature = n * t * d * 4 + n * t * 4  # the cached feature and its per-token refresh step (float32)
    branch = accel.accelerate(model, accel.FORAConfig(interval=2))
    run(branch, noise, labels)
    assert branch.stats.peak_cache_bytes == 2 * ROPE.depth * per_feature
    trunk = accel.accelerate(model, accel.FORAConfig(interval=2, granularity="trunk"))
    run(trunk, noise, labels)
    assert trunk.stats.peak_cache_bytes == per_feature
    assert trunk.cache_bytes() == per_feature
    trunk.reset()
    assert trunk.cache_bytes() == 0


# ----------------------------------------------------------------------------- TeaCache fit


def test_fit_teacache(tmp_path):
    model = tiny_dit(ROPE)
    fit = accel.fit_teacache(model, torch.tensor([0, 1]), process=ditkit.FlowMatching(), steps=8, seeds=(0, 1),
                             degree=2, cfg_scale=2.0)
    assert len(fit.coefficients) == 3 and fit.num_pairs == 2 * 7 and fit.r2 <= 1.0
    assert fit.x_range[0] <= fit.x_range[1]
    fit.save(tmp_path / "teacache.json")
    loaded = accel.TeaCacheFit.load(tmp_path / "teacache.json")
    assert loaded == fit
    fast = accel.accelerate(model, loaded.config(threshold=0.5))
    noise, labels = inputs(ROPE)
    run(fast, noise, labels)
    with pytest.raises(ValueError, match="calibration pairs"):
        accel.fit_teacache(model, torch.tensor([0]), process=ditkit.FlowMatching(), steps=3, degree=4)


# ----------------------------------------------------------------------------- errors


def test_unsupported_combinations_raise():
    model = tiny_dit(ROPE)
    with pytest.raises(ValueError, match="FORA \\+ TeaCache"):
        accel.accelerate(model, accel.FORAConfig(), accel.TeaCacheConfig())
    with pytest.raises(ValueError, match="RAS given twice"):
        accel.accelerate(model, accel.RASConfig(), accel.RASConfig())
    fast = accel.accelerate(model, accel.FORAConfig())
    with pytest.raises(ValueError, match="already accelerated"):
        accel.accelerate(fast, accel.RASConfig())
    with pytest.raises(ValueError, match="cfg_reuse"):
        accel.accelerate(model, "TeaCache")
    with pytest.raises(ValueError, match="ditkit DiT"):
        accel.accelerate(torch.nn.Linear(2, 2), accel.FORAConfig())
    with pytest.raises(ValueError, match="num_blocks"):
        accel.accelerate(model, accel.DeltaDiTConfig(num_blocks=ROPE.depth + 1))


@pytest.mark.parametrize("make", [
    lambda: accel.FORAConfig(interval=0),
    lambda: accel.FORAConfig(granularity="layer"),
    lambda: accel.TaylorSeerConfig(order=-1),
    lambda: accel.FirstBlockCacheConfig(threshold=-0.1),
    lambda: accel.TeaCacheConfig(coefficients=()),
    lambda: accel.GatedTaylorConfig(min_full=0),
    lambda: accel.RASConfig(sample_ratio=0.0),
    lambda: accel.RASConfig(start=0),
    lambda: accel.RASConfig(metric="mean"),
])
def test_bad_settings_raise(make):
    with pytest.raises(ValueError):
        make()


def test_configs_are_frozen_and_describe_themselves():
    config = accel.TaylorSeerConfig(interval=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.interval = 2
    assert config.describe() == "TaylorSeer(interval=5)"
    assert accel.accelerate(tiny_dit(ROPE), config, accel.RASConfig()).describe().startswith("TaylorSeer(interval=5) + RAS(")
