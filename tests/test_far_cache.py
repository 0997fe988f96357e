"""Far-field cached sparse attention: the exact split, the reuse between refreshes, the schedule, the pipeline hook."""

import pytest
import torch
import torch.nn.functional as F

from ditkit.accel.far_cache import FarCachedAttention, RefreshSchedule, merge
from ditkit.config import DiTConfig
from ditkit.diffusion.flow import FlowConfig, FlowMatching
from ditkit.models.video_attention import Pattern, SparsePlan, VideoAttention

GRID = (4, 4, 6)  # 96 tokens, 24 per frame
FRAME_LOCAL = Pattern("sta", tile=(1, 4, 6), window=(1, 1, 1))  # a frame's tokens attend to their frame only


def qkv(seed=0, heads=2, t=96):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, t, 8, generator=g) for _ in range(3)]


@pytest.mark.parametrize("backend", ["flex", "dense"])
def test_a_refresh_call_is_dense_attention_and_local_calls_reuse_the_far_part(backend):
    plan = SparsePlan({0: [FRAME_LOCAL, Pattern("diagonal", 30)]})
    core = FarCachedAttention(plan, backend=backend, block_size=24)
    q, k, v = qkv()
    torch.testing.assert_close(core(q, k, v, layer=0, grid=GRID), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)
    q2, k2, v2 = qkv(seed=1)
    core.refresh = False
    reused = core(q2, k2, v2, layer=0, grid=GRID)
    assert not torch.allclose(reused, F.scaled_dot_product_attention(q2, k2, v2), atol=1e-3)
    # by hand: fresh local part, the far part of the first call
    local = VideoAttention(plan, backend="dense")._setup(0, GRID, "all", 2, "cpu")[1][0]  # (H, T, T) mask

    def part(q, k, v, m):
        s = (q @ k.transpose(-1, -2) * 8 ** -0.5).masked_fill(~m, float("-inf"))
        return s.softmax(-1) @ v, s.logsumexp(-1)

    want = merge(*part(q2, k2, v2, local), *part(q, k, v, ~local))
    torch.testing.assert_close(reused, want, atol=1e-5, rtol=1e-5)
    core.refresh = True
    torch.testing.assert_close(core(q2, k2, v2, layer=0, grid=GRID), F.scaled_dot_product_attention(q2, k2, v2),
                               atol=1e-5, rtol=1e-5)


def test_layers_without_a_pattern_and_a_new_batch_shape_compute_everything():
    core = FarCachedAttention(SparsePlan({0: [FRAME_LOCAL] * 2}), backend="dense")
    q, k, v = qkv()
    assert torch.equal(core(q, k, v, layer=1, grid=GRID), F.scaled_dot_product_attention(q, k, v))
    core(q, k, v, layer=0, grid=GRID)
    core.refresh = False
    q1, k1, v1 = (x[:1] for x in qkv(seed=2))  # another batch size: nothing kept fits, so it refreshes
    torch.testing.assert_close(core(q1, k1, v1, layer=0, grid=GRID), F.scaled_dot_product_attention(q1, k1, v1),
                               atol=1e-5, rtol=1e-5)


def test_unsupported_plans_are_refused():
    with pytest.raises(ValueError, match="skip"):
        FarCachedAttention(SparsePlan({0: [Pattern("skip"), FRAME_LOCAL]}))
    with pytest.raises(ValueError, match="sparse plan"):
        FarCachedAttention(SparsePlan({}))
    with pytest.raises(ValueError, match="every"):
        RefreshSchedule(every=0)
    with pytest.raises(ValueError, match="dense_above"):
        RefreshSchedule(dense_above=1.5)


def test_the_schedule_refreshes_early_every_n_and_on_a_new_trajectory():
    process = FlowMatching(FlowConfig())
    core = FarCachedAttention(SparsePlan({0: [FRAME_LOCAL]}), RefreshSchedule(dense_above=0.8, every=3))
    seen = []
    fn = core.wrap_model_fn(lambda x, t: seen.append(core.refresh) or x, process)
    levels = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    for s in levels + levels[:3]:  # a second trajectory starts noisier than the last call
        fn(torch.zeros(1), process.network_time(torch.tensor([[0.0, s]])))  # (N, F): the noisiest frame decides
    assert seen == [True, True, False, False, True, False, False, True, True, True, False]
    assert core.calls == {"refresh": 6, "local": 5}
    sit = FlowMatching(FlowConfig(sit_time=True))
    torch.testing.assert_close(sit.process_time(sit.network_time(torch.tensor([0.3]))), torch.tensor([0.3]))


@pytest.fixture
def tiny_video_pipeline():
    from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
    from ditkit.models.video_dit import VideoDiT
    from ditkit.pipelines import VideoPipeline
    from ditkit.shapes.prompts import video_vocabulary
    from ditkit.train.video import VideoTrainConfig

    trunk = DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                      learn_sigma=False, use_rope=True)
    model = VideoDiT(VideoTrainConfig(frames=4, text_dim=16, cross_attention=True).video_model(trunk)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # away from the zero-initialised output
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    encoder = WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), video_vocabulary())
    return VideoPipeline(model, FlowMatching(), encoder)


@torch.no_grad()
def test_pipeline_generate_takes_the_core_and_its_schedule(tiny_video_pipeline):
    pipe = tiny_video_pipeline
    local = Pattern("sta", tile=(1, 4, 4), window=(1, 1, 1))  # 4 frames of 4x4 tokens
    plan = SparsePlan({i: [local] * pipe.config.dit.num_heads for i in range(pipe.config.dit.depth)})
    dense = pipe.generate(["a red circle moving left"], steps=6, latents=True)
    every_call = FarCachedAttention(plan, RefreshSchedule(dense_above=0.0, every=1), backend="dense")
    torch.testing.assert_close(pipe.generate(["a red circle moving left"], steps=6, latents=True, attention=every_call),
                               dense, atol=1e-4, rtol=1e-4)
    core = FarCachedAttention(plan, RefreshSchedule(dense_above=0.7, every=2), backend="dense")
    cached = pipe.generate(["a red circle moving left"], steps=6, latents=True, attention=core)
    assert core.calls["local"] > 0 and not torch.allclose(cached, dense, atol=1e-4)
    assert pipe.model.attention_core is None  # restored after the call
