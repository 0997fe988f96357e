"""Diffusion forcing: per-frame noise training, the staggered schedule, rollouts vs chunk-by-chunk."""

import pytest
import torch

from ditkit.config import DiTConfig
from ditkit.diffusion.flow import FlowConfig, FlowMatching
from ditkit.diffusion.forcing import (
    ForcingConfig,
    block_times,
    chunked_sample,
    forcing_loss,
    forcing_sample,
    motion_weights,
    rollout,
    sample_frame_times,
    step_matrix,
)
from ditkit.diffusion.samplers import euler_sample
from ditkit.models.video_dit import VideoDiT, VideoDiTConfig

pytestmark = pytest.mark.usefixtures("one_thread")
PROCESS = FlowMatching(FlowConfig(time_sampling="uniform"))


def tiny_video(frames=4) -> VideoDiT:
    cfg = DiTConfig(input_size=8, patch_size=4, in_channels=2, hidden_size=32, depth=2, num_heads=2, num_classes=3,
                    learn_sigma=False, use_rope=True)
    model = VideoDiT(VideoDiTConfig(dit=cfg, num_frames=frames)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def point_mass(target: torch.Tensor):
    """The exact velocity field when every frame's data is one known value: v = (x - x*) / s."""
    def model_fn(x, t):
        s = (t / 1000.0).view(*t.shape, 1, 1, 1)
        return torch.where(s > 0, (x - target) / s.clamp_min(1e-12), torch.zeros_like(x))
    return model_fn


@pytest.mark.parametrize("blocks,steps,ar,ctx", [(4, 5, 0, 0), (5, 6, 2, 0), (6, 4, 3, 2), (3, 7, 1, 1)])
def test_step_matrix_is_staggered_and_complete(blocks, steps, ar, ctx):
    m = step_matrix(blocks, steps, ar, ctx)
    assert m.shape == (steps + ar * (blocks - ctx - 1) + 1, blocks)
    assert (m[0, ctx:] == 0).all() and (m[:, :ctx] == steps).all() and (m[-1] == steps).all()
    assert (m[:, 1:] <= m[:, :-1]).all()  # noise never decreases along the frames
    step = m[1:] - m[:-1]
    assert ((step == 0) | (step == 1)).all()  # one grid step at a time, never back
    assert (step.sum(0)[ctx:] == steps).all()
    assert (step[:, ctx:].sum(1) > 0).all()  # every iteration moves something
    if ar == 0:
        assert (m[:, ctx:] == m[:, ctx:ctx + 1]).all()
    else:
        started = (m[:, ctx:] > 0).int().argmax(0)  # iteration at which each block leaves pure noise
        assert (started.diff() == ar).all()
    with pytest.raises(ValueError):
        step_matrix(3, 4, -1)


def test_synchronous_schedule_is_the_euler_sampler():
    model = tiny_video()
    y = torch.tensor([1, 2])
    noise = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = euler_sample(model, noise, PROCESS, steps=5, shift=2.0, model_kwargs={"y": y})
    out = forcing_sample(model, noise, PROCESS, steps=5, shift=2.0, ar_step=0, model_kwargs={"y": y})
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    staggered = forcing_sample(model, noise, PROCESS, steps=5, shift=2.0, ar_step=1, model_kwargs={"y": y})
    assert not torch.allclose(staggered, ref, atol=1e-3)


@pytest.mark.parametrize("ar,block_frames,n_ctx", [(0, 1, 0), (2, 1, 0), (1, 2, 2), (3, 1, 1), (1, 2, 1), (0, 2, 3)])
def test_every_frame_lands_on_its_data_under_any_schedule(ar, block_frames, n_ctx):
    g = torch.Generator().manual_seed(2)
    new_frames = 4 - n_ctx % block_frames  # context + window fill whole blocks
    target = torch.randn(1, n_ctx + new_frames, 1, 2, 2, generator=g)
    calls = []

    def model_fn(x, t):
        calls.append(t.clone())
        return point_mass(target)(x, t)

    context = target[:, :n_ctx] if n_ctx else None
    out = forcing_sample(model_fn, torch.randn(1, new_frames, 1, 2, 2, generator=g), PROCESS, steps=6, shift=3.0,
                         ar_step=ar, block_frames=block_frames, context=context)
    torch.testing.assert_close(out, target[:, n_ctx:], atol=1e-5, rtol=1e-5)
    t = torch.stack(calls)[:, 0]  # (iterations, Fc+F)
    whole = n_ctx // block_frames * block_frames  # context frames in blocks of their own
    assert (t[:, 1:] >= t[:, :-1]).all() and (t[:, :whole] == 0).all()  # noise non-decreasing along frames
    pairs = t.reshape(t.shape[0], -1, block_frames)  # (iterations, blocks, block_frames)
    assert (pairs == pairs[..., :1]).all()  # one time per block, a shared block timed by its generated frames
    if n_ctx % block_frames:
        assert (t[:-1, whole] > 0).all()
    blocks = (n_ctx + new_frames) // block_frames - n_ctx // block_frames  # generated blocks
    assert len(calls) == 6 + ar * (blocks - 1)


def test_rollout_carries_context_and_chunks_do_not():
    def copy_first(x, t):
        """Denoises every frame towards the window's first frame (its context in later windows)."""
        s = (t / 1000.0).view(*t.shape, 1, 1, 1)
        return torch.where(s > 0, (x - x[:, :1]) / s.clamp_min(1e-12), torch.zeros_like(x))

    g = torch.Generator().manual_seed(3)
    long = rollout(copy_first, PROCESS, (2, 1, 2, 2), total_frames=16, window=4, overlap=1, steps=4, ar_step=1,
                   generator=g)
    assert long.shape == (2, 16, 1, 2, 2)
    torch.testing.assert_close(long, long[:, :1].expand_as(long))  # one frame, carried through 5 windows
    chunks = chunked_sample(copy_first, PROCESS, (2, 1, 2, 2), total_frames=16, window=4, steps=4, generator=g)
    assert chunks.shape == (2, 16, 1, 2, 2)
    jumps = (chunks[:, 1:] - chunks[:, :-1]).abs().flatten(2).amax(2)  # (N, 15)
    border = torch.zeros(15, dtype=torch.bool)
    border[3::4] = True
    assert (jumps[:, border] > 1e-3).all() and (jumps[:, ~border] < 1e-5).all()  # breaks at every chunk border only


def test_rollout_window_count_and_first_context():
    calls = []
    g = torch.Generator().manual_seed(4)
    target = torch.randn(1, 1, 1, 2, 2, generator=g)

    def model_fn(x, t):
        calls.append(x.shape[1])
        return point_mass(target.expand(1, x.shape[1], 1, 2, 2))(x, t)

    first = torch.full((1, 1, 1, 2, 2), 0.5)
    out = rollout(model_fn, PROCESS, (1, 1, 2, 2), total_frames=10, window=4, overlap=2, steps=3, first_context=first,
                  context_noise=0.1, generator=g)
    assert out.shape == (1, 10, 1, 2, 2) and torch.equal(out[:, :1], first)
    assert len(calls) == 4 * 3 and set(calls) == {4}  # 1 + ceil((10 - 4) / 2) windows of 3 model calls each
    with pytest.raises(ValueError, match="overlap"):
        rollout(model_fn, PROCESS, (1, 1, 2, 2), total_frames=10, window=4, overlap=4, steps=3)


def test_frame_times_sampling_options():
    g = torch.Generator().manual_seed(5)
    shared = sample_frame_times(PROCESS, 64, 6, ForcingConfig(per_frame_prob=0.0), generator=g)
    assert (shared == shared[:, :1]).all()
    own = sample_frame_times(PROCESS, 64, 6, ForcingConfig(block_frames=2, sort_frames=True), generator=g)
    assert (own[:, ::2] == own[:, 1::2]).all() and (own.diff(dim=1) >= 0).all() and (own[:, 0] != own[:, -1]).any()
    ctx = sample_frame_times(PROCESS, 200, 4, ForcingConfig(context_prob=1.0), generator=g)
    zeros = (ctx == 0).sum(1)
    assert (zeros >= 1).all() and (zeros <= 3).all() and set(zeros.tolist()) == {1, 2, 3}
    assert all((row[: int(z)] == 0).all() for row, z in zip(ctx, zeros))  # a prefix
    ctx2 = sample_frame_times(PROCESS, 400, 6, ForcingConfig(block_frames=2, context_prob=1.0), generator=g)
    zeros = (ctx2 == 0).sum(1)
    assert set(zeros.tolist()) == {1, 2, 3, 4, 5}  # prefixes end inside temporal patches too
    noisy = ctx2.masked_fill(ctx2 == 0, float("nan")).reshape(400, 3, 2)  # (N, blocks, 2)
    both = ~noisy.isnan().any(2)
    assert (noisy[..., 0] == noisy[..., 1])[both].all()  # the noisy frames of a patch share its time
    assert torch.equal(block_times(torch.tensor([[0.0, 0.7, 0.2, 0.2]]), 2), torch.tensor([[0.7, 0.7, 0.2, 0.2]]))
    with pytest.raises(ValueError):
        ForcingConfig(per_frame_prob=1.5)


def test_frame_replacement_inside_a_temporal_patch():
    """A clean first frame sharing a temporal patch with noisy ones (image-to-video at pt = 2): the model is fed
    the patch's time, the frame is fed clean and is out of the loss, so only the generated frames are learnt."""
    cfg = DiTConfig(input_size=8, patch_size=4, in_channels=2, hidden_size=32, depth=2, num_heads=2, num_classes=3,
                    learn_sigma=False, use_rope=True)
    model = VideoDiT(VideoDiTConfig(dit=cfg, num_frames=4, temporal_patch=2))
    x0, noise = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 4, 2, 8, 8)
    s = torch.tensor([[0.0, 0.6, 0.3, 0.3], [0.0, 0.0, 0.0, 0.8]])
    seen = {}

    def spy(x, t, **kw):
        seen["x"], seen["t"] = x, t
        return model(x, t, **kw)

    loss = forcing_loss(PROCESS, spy, x0, ForcingConfig(block_frames=2), {"y": torch.tensor([0, 1])}, noise=noise, s=s)
    assert torch.equal(seen["x"][0, 0], x0[0, 0]) and torch.equal(seen["x"][1, :3], x0[1, :3])
    torch.testing.assert_close(seen["t"], PROCESS.network_time(torch.tensor([[0.6, 0.6, 0.3, 0.3],
                                                                             [0.0, 0.0, 0.8, 0.8]])))
    loss.sum().backward()
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    wrong_on_ctx = lambda x, t: torch.cat([x0[:, :1] * 0 + 9.0, (noise - x0)[:, 1:]], dim=1)
    assert forcing_loss(PROCESS, wrong_on_ctx, x0, ForcingConfig(block_frames=2), noise=noise, s=s).abs().max() < 1e-10


def test_forcing_loss_matches_the_clip_loss_and_masks_context():
    model = tiny_video()
    x0 = torch.randn(3, 4, 2, 8, 8)
    noise = torch.randn(3, 4, 2, 8, 8)
    s = torch.tensor([0.3, 0.6, 0.9])
    y = torch.tensor([0, 1, 2])
    ref = PROCESS.training_loss(model, x0, {"y": y}, noise=noise, s=s)
    got = forcing_loss(PROCESS, model, x0, model_kwargs={"y": y}, noise=noise, s=s[:, None].expand(3, 4))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    perfect = forcing_loss(PROCESS, lambda x, t: noise - x0, x0, noise=noise, s=torch.rand(3, 4))
    assert perfect.abs().max() < 1e-10
    s_ctx = torch.tensor([[0.0, 0.5, 0.5, 0.5]] * 3)
    wrong_on_ctx = lambda x, t: torch.cat([x0[:, :1] * 0 + 9.0, (noise - x0)[:, 1:]], dim=1)
    assert forcing_loss(PROCESS, wrong_on_ctx, x0, noise=noise, s=s_ctx).abs().max() < 1e-10
    loss = forcing_loss(PROCESS, model, x0, ForcingConfig(context_prob=0.5), {"y": y},
                        generator=torch.Generator().manual_seed(0))
    loss.mean().backward()
    assert loss.shape == (3,) and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_context_noise_feeds_the_context_noised_and_keeps_it_out_of_the_loss():
    x0, noise = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 4, 2, 8, 8)
    s = torch.tensor([[0.0, 0.0, 0.5, 0.7], [0.0, 0.4, 0.4, 0.4]])
    level = torch.tensor([0.1, 0.2])
    seen = {}

    def spy(x, t):
        seen["x"], seen["t"] = x, t
        return noise - x0  # exact on every frame: any loss left would come from the context frames

    loss = forcing_loss(PROCESS, spy, x0, noise=noise, s=s, context_level=level)
    assert loss.abs().max() < 1e-10
    fed = torch.where(s == 0, level[:, None], s)  # (N, F)
    torch.testing.assert_close(seen["t"], PROCESS.network_time(fed))
    torch.testing.assert_close(seen["x"][0, 0], 0.9 * x0[0, 0] + 0.1 * noise[0, 0])
    torch.testing.assert_close(seen["x"][1, 2], 0.6 * x0[1, 2] + 0.4 * noise[1, 2])
    # drawn from U(0, context_noise) when not given; only the context frames move
    forcing_loss(PROCESS, spy, x0, ForcingConfig(context_noise=0.3), noise=noise, s=s,
                 generator=torch.Generator().manual_seed(0))
    got = PROCESS.network_time(fed)  # placeholders for the non-context frames
    assert torch.equal(seen["t"][s > 0], got[s > 0])
    drawn = seen["t"][s == 0]
    assert (drawn > PROCESS.network_time(torch.zeros(1))).all() and (drawn < PROCESS.network_time(torch.full((1,), 0.3))).all()
    with pytest.raises(ValueError, match="context_noise"):
        ForcingConfig(context_noise=1.0)


def test_rollout_builds_later_windows_from_context_fn():
    made, used = [], []

    def base(x, t):
        used.append("base")
        return torch.zeros_like(x)

    def context_fn(noise):
        made.append(tuple(noise.shape))

        def fn(x, t):
            used.append("context")
            return torch.zeros_like(x)

        return fn

    g = torch.Generator().manual_seed(6)
    out = rollout(base, PROCESS, (2, 1, 2, 2), total_frames=10, window=4, overlap=2, steps=2, generator=g,
                  context_fn=context_fn)
    assert out.shape == (2, 10, 1, 2, 2)
    assert made == [(2, 2, 1, 2, 2)] * 3  # one per later window, shaped like its context
    assert used == ["base"] * 2 + ["context"] * 6  # the first window (no context) keeps the plain function


def test_motion_weights_favour_what_moves_and_keep_the_loss_scale():
    still = torch.randn(2, 1, 3, 6, 6).expand(2, 4, 3, 6, 6)  # no change over the clip
    assert torch.allclose(motion_weights(still, 3.0), torch.ones(2, 4, 1, 6, 6))
    clip = torch.zeros(1, 4, 3, 6, 6)
    for f in range(4):  # a bright square moving right, one column per frame
        clip[0, f, :, 1:3, f:f + 2] = 1.0
    w = motion_weights(clip, 2.0)
    assert w.shape == (1, 4, 1, 6, 6)
    torch.testing.assert_close(w.mean(dim=(1, 3, 4)), torch.ones(1, 1))
    assert w[0, 0, 0, 1, 0] > 2 * w[0, 0, 0, 4, 4]  # where the square is in frame 0, against the still background
    assert torch.allclose(w[0, :, 0, 4:], w[0, 0, 0, 5, 5].expand(4, 2, 6))  # the background is uniform
    assert torch.allclose(motion_weights(clip, 0.0), torch.ones_like(w))
    with pytest.raises(ValueError, match="motion_weight"):
        ForcingConfig(motion_weight=-1.0)


def test_forcing_loss_with_motion_weight_is_the_weighted_mse():
    model = tiny_video()
    x0, noise = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 4, 2, 8, 8)
    s = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.0, 0.7, 0.2, 0.9]])
    y = {"y": torch.tensor([0, 1])}
    loss = forcing_loss(PROCESS, model, x0, ForcingConfig(motion_weight=2.0), y, noise=noise, s=s)
    with torch.no_grad():
        v = model(s.view(2, 4, 1, 1, 1) * noise + (1 - s.view(2, 4, 1, 1, 1)) * x0, PROCESS.network_time(s), **y)
    sq = (v[:, :, :2] - (noise - x0)).pow(2) * motion_weights(x0, 2.0)  # (N, F, C, H, W)
    per_frame = sq.flatten(2).mean(2)  # (N, F)
    expected = torch.stack([per_frame[0].mean(), per_frame[1, 1:].mean()])  # clip 1's frame 0 is context
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    plain = forcing_loss(PROCESS, model, x0, ForcingConfig(), y, noise=noise, s=s)
    assert not torch.allclose(loss, plain)
    still = x0[:, :1].expand(2, 4, 2, 8, 8)
    torch.testing.assert_close(forcing_loss(PROCESS, model, still, ForcingConfig(motion_weight=2.0), y, noise=noise, s=s),
                               forcing_loss(PROCESS, model, still, ForcingConfig(), y, noise=noise, s=s))
