"""Video DiT: 3D patches, 3D RoPE, per-frame timesteps, factorized attention, image -> video init."""

import pytest
import torch
import torch.nn.functional as F

from ditkit.config import DiTConfig
from ditkit.models.dit import DiT
from ditkit.models.layers import apply_rope, grid_positions, rope_tables
from ditkit.models.video_dit import (
    VideoDiT,
    VideoDiTBlock,
    VideoDiTConfig,
    rope_frequencies,
    rope_tables_3d,
)
from ditkit.models.video_init import init_from_image, init_from_video

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> DiTConfig:
    base = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                num_classes=5, learn_sigma=False, use_rope=True, qk_norm=True)
    base.update(kw)
    return DiTConfig(**base)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give every parameter a random value (zero-initialised branches would hide bugs); eval mode (no label drop)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("attention", ["full", "factorized"])
@pytest.mark.parametrize("pt", [1, 2])
def test_shapes_and_backward(attention, pt):
    cfg = VideoDiTConfig(dit=tiny(), num_frames=4, temporal_patch=pt, attention=attention)
    model = VideoDiT(cfg)
    perturb(model)
    x = torch.randn(2, 4, 3, 8, 8)
    out = model(x, torch.tensor([10.0, 500.0]), torch.tensor([0, 3]))
    assert out.shape == (2, 4, 3, 8, 8)
    out.square().mean().backward()
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("use_rope,use_abs_pos,mlp_type",
                         [(True, True, "gelu"), (True, False, "gelu"), (False, True, "gelu"), (True, True, "mixffn")])
def test_one_frame_clip_is_the_image_model(use_rope, use_abs_pos, mlp_type):
    image = DiT(tiny(use_rope=use_rope, use_abs_pos=use_abs_pos, mlp_type=mlp_type))
    perturb(image)
    video = init_from_image(VideoDiT(VideoDiTConfig(dit=image.config, num_frames=1)), image.state_dict()).eval()
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([1.0, 400.0, 999.0]), torch.tensor([0, 2, 4])
    ref = image(x, t, y)
    out = video(x.unsqueeze(1), t, y)  # (N, 1, C, H, W)
    torch.testing.assert_close(out[:, 0], ref, atol=1e-5, rtol=1e-5)
    out_vec = video(x.unsqueeze(1), t[:, None], y)  # per-frame t of one frame
    torch.testing.assert_close(out_vec[:, 0], ref, atol=1e-5, rtol=1e-5)


def test_mixffn_convolves_within_each_frame():
    """With attention only in space, a Mix-FFN video model is the image model applied frame by frame."""
    image = DiT(tiny(mlp_type="mixffn", depth=1))
    perturb(image)
    cfg = VideoDiTConfig(dit=image.config, num_frames=3, attention="factorized")  # depth 1: one space block
    video = init_from_image(VideoDiT(cfg), image.state_dict()).eval()
    x, t, y = torch.randn(2, 3, 3, 8, 8), torch.tensor([5.0, 700.0]), torch.tensor([1, 4])
    out = video(x, t, y)  # (N, F, C, H, W)
    for f in range(3):
        torch.testing.assert_close(out[:, f], image(x[:, f], t, y), atol=1e-5, rtol=1e-5)


def test_inflated_temporal_patch_repeats_the_image():
    image = DiT(tiny())
    perturb(image)
    video = init_from_image(VideoDiT(VideoDiTConfig(dit=image.config, num_frames=2, temporal_patch=2)), image.state_dict()).eval()
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 700.0]), torch.tensor([1, 1])
    out = video(torch.stack([x, x], dim=1), t, y)  # a still two-frame clip is one token frame
    ref = image(x, t, y)
    torch.testing.assert_close(out[:, 0], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 1], ref, atol=1e-5, rtol=1e-5)


def test_init_from_image_rejects_other_shapes():
    image = DiT(tiny(hidden_size=64))
    video = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=2))
    with pytest.raises(ValueError, match="does not fit"):
        init_from_image(video, image.state_dict()).eval()
    with pytest.raises(ValueError, match="lacks"):
        init_from_image(video, {"x_embedder.proj.bias": torch.zeros(32)})


def test_frame_embedding_starts_as_a_no_op_and_tells_the_frames_apart():
    """A still clip's frames are treated alike without ``frame_embed`` (RoPE is relative) and told apart with it."""
    base = VideoDiT(VideoDiTConfig(dit=tiny(use_abs_pos=False), num_frames=3))
    perturb(base)
    fe = VideoDiT(VideoDiTConfig(dit=tiny(use_abs_pos=False), num_frames=3, frame_embed=True))
    left = init_from_video(fe, base.state_dict())
    assert left == ["frame_embedder.weight"] and fe.frame_embedder.weight.abs().sum() == 0
    fe.eval()
    x = torch.randn(2, 3, 8, 8).unsqueeze(1).repeat(1, 3, 1, 1, 1)  # (N, F, C, H, W), a still clip
    t, y = torch.tensor([5.0, 600.0]), torch.tensor([0, 3])
    out = fe(x, t, y)
    torch.testing.assert_close(out, base(x, t, y))  # zero-initialised: the model it started from
    with torch.no_grad():
        fe.frame_embedder.weight.normal_(0, 0.2)
    out = fe(x, t, y)
    assert (out[:, 1] - out[:, 2]).abs().max() > 1e-3  # frames 1 and 2 now differ
    with pytest.raises(ValueError, match="lacks"):
        init_from_video(fe, {k: v for k, v in base.state_dict().items() if k != "x_embedder.proj.bias"})
    with pytest.raises(ValueError, match="does not fit"):
        init_from_video(fe, {**base.state_dict(), "x_embedder.proj.bias": torch.zeros(5)})


def test_cross_attention_reads_the_caption_tokens():
    cfg = VideoDiTConfig(dit=tiny(), num_frames=2, text_dim=6)
    model = VideoDiT(cfg).eval()
    x, t, y = torch.randn(2, 2, 3, 8, 8), torch.tensor([5.0, 600.0]), torch.tensor([0, 3])
    text, mask = torch.randn(2, 4, 6), torch.tensor([[True] * 4, [True, True, False, False]])
    other = text.clone()
    other[:, 0] += 1.0
    torch.testing.assert_close(model(x, t, y, text=text, text_mask=mask), model(x, t, y, text=other, text_mask=mask))
    perturb(model)  # the zero output projections now read the text
    assert (model(x, t, y, text=text, text_mask=mask) - model(x, t, y, text=other, text_mask=mask)).abs().max() > 1e-3
    padded = text.clone()
    padded[1, 2:] = 9.0  # masked tokens are not read
    torch.testing.assert_close(model(x, t, y, text=padded, text_mask=mask), model(x, t, y, text=text, text_mask=mask))
    with pytest.raises(ValueError, match="text-conditioned"):
        model(x, t, y)
    with pytest.raises(ValueError, match="no token-level text"):
        VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=2))(x, t, y, text=text, text_mask=mask)
    left = init_from_video(VideoDiT(cfg), VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=2)).state_dict())
    assert "caption_projection.fc1.weight" in left and "blocks.1.cross_attn.proj.weight" in left


def test_frame_text_gives_each_frame_its_own_caption_term():
    """``frame_text`` starts as a no-op, then makes the conditioning differ per frame and per caption."""
    base = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=3, pooled_text_dim=6))
    perturb(base)
    ft = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=3, pooled_text_dim=6, frame_text=True)).eval()
    assert init_from_video(ft, base.state_dict()) == [f"frame_text_embedder.{i}.{p}" for i in (0, 2)
                                                      for p in ("bias", "weight")]
    x, t, y, pooled = torch.randn(2, 3, 3, 8, 8), torch.tensor([5.0, 600.0]), torch.tensor([0, 3]), torch.randn(2, 6)
    torch.testing.assert_close(ft(x, t, y, pooled_text=pooled), base(x, t, y, pooled_text=pooled))
    perturb(ft, seed=1)
    c = ft.condition(t, y, pooled, frames=3)  # (N, f, D)
    assert c.shape == (2, 3, 32) and (c[:, 1] - c[:, 2]).abs().max() > 1e-3
    other = ft.condition(t, y, pooled + 1.0, frames=3)
    assert ((other[:, 2] - other[:, 0]) - (c[:, 2] - c[:, 0])).abs().max() > 1e-3  # the frame term reads the caption
    torch.testing.assert_close(ft.condition(t[:, None].expand(2, 3), y, pooled), c)  # per-frame t: same c
    with pytest.raises(ValueError, match="frames"):
        ft.condition(t, y, pooled)
    with pytest.raises(ValueError, match="pooled_text_dim"):
        VideoDiTConfig(dit=tiny(), frame_text=True)


@pytest.mark.parametrize("attention", ["full", "factorized"])
def test_constant_frame_times_equal_clip_time(attention):
    model = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=4, attention=attention))
    perturb(model)
    x, y = torch.randn(2, 4, 3, 8, 8), torch.tensor([0, 1])
    t = torch.tensor([250.0, 800.0])
    torch.testing.assert_close(model(x, t[:, None].expand(2, 4), y), model(x, t, y), atol=1e-5, rtol=1e-5)
    t_vec = torch.tensor([[0.0, 300.0, 600.0, 900.0]] * 2)
    assert not torch.allclose(model(x, t_vec, y), model(x, t, y), atol=1e-3)


def test_per_frame_time_modulates_only_its_frame():
    block = VideoDiTBlock(tiny(), 0, axes="space")
    perturb(block)
    model = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=2))
    ctx = model.token_context((2, 4, 4), "cpu")
    x = torch.randn(1, 32, 32)  # two frames of 16 tokens
    c = torch.randn(1, 2, 32)  # (N, f, D)
    both = block(x, c, ctx)
    ctx1 = model.token_context((1, 4, 4), "cpu")
    for j in range(2):
        alone = block(x[:, 16 * j:16 * (j + 1)], c[:, j], ctx1)
        torch.testing.assert_close(both[:, 16 * j:16 * (j + 1)], alone, atol=1e-5, rtol=1e-5)


def test_pt2_needs_equal_times_within_a_patch():
    model = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=4, temporal_patch=2))
    x, y = torch.randn(1, 4, 3, 8, 8), torch.tensor([0])
    model(x, torch.tensor([[5.0, 5.0, 9.0, 9.0]]), y)
    with pytest.raises(ValueError, match="equal within"):
        model(x, torch.tensor([[5.0, 6.0, 9.0, 9.0]]), y)
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, torch.tensor([[5.0, 9.0]]), y)
    with pytest.raises(ValueError, match="expected clips"):
        model(torch.randn(1, 3, 3, 8, 8), torch.tensor([1.0]), y)


def test_factorized_blocks_mix_only_along_their_axes():
    model = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=3, attention="factorized"))
    perturb(model)
    space, time = model.blocks[0], model.blocks[1]
    assert (space.axes, time.axes) == ("space", "time")
    ctx = model.token_context((3, 4, 4), "cpu")
    c = torch.randn(1, 32)
    x = torch.randn(1, 48, 32)
    x2 = x.clone()
    x2[:, 0] += torch.randn(32)  # token (frame 0, row 0, col 0); not a constant, which LayerNorm removes
    changed_space = (space(x2, c, ctx) - space(x, c, ctx)).abs().amax(-1)[0] > 1e-6  # (T,)
    changed_time = (time(x2, c, ctx) - time(x, c, ctx)).abs().amax(-1)[0] > 1e-6
    pos = ctx.positions
    assert torch.equal(changed_space, pos[:, 0] == 0)  # the whole first frame, nothing else
    assert torch.equal(changed_time, (pos[:, 1] == 0) & (pos[:, 2] == 0))  # that location in every frame


@pytest.mark.parametrize("layout", ["image", "axial"])
def test_rope_3d_is_relative(layout):
    cfg = VideoDiTConfig(dit=tiny(hidden_size=64, num_heads=2), rope_layout=layout, temporal_rope_pairs=2)
    omega = rope_frequencies(cfg)
    assert omega.shape == (16, 3) and (omega[:, 0] > 0).any() and (omega[:, 1] > 0).any() and (omega[:, 2] > 0).any()
    pos = torch.tensor([[0, 1, 2], [3, 0, 1], [2, 3, 3], [5, 4, 6]])
    shift = torch.tensor([[4, 2, 1]])
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 4, 32, generator=g), torch.randn(1, 1, 4, 32, generator=g)

    def scores(p):
        cos, sin = rope_tables_3d(omega, p)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores(pos), scores(pos + shift), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores(pos), scores(pos * torch.tensor([[2, 1, 1]])), atol=1e-3)  # frame gaps matter


def test_image_layout_frame0_tables_equal_the_image_tables():
    cfg = VideoDiTConfig(dit=tiny(hidden_size=64), rope_layout="image")
    pos3 = grid_positions(1, 4, 4)
    cos3, sin3 = rope_tables_3d(rope_frequencies(cfg), pos3)
    cos2, sin2 = rope_tables(cfg.dit.head_dim, grid_positions(4, 4), cfg.dit.rope_theta)
    assert torch.equal(cos3, cos2) and torch.equal(sin3, sin2)


def test_attention_core_hook_sees_layer_grid_axes():
    model = VideoDiT(VideoDiTConfig(dit=tiny(), num_frames=2, attention="factorized"))
    perturb(model)
    x, t, y = torch.randn(1, 2, 3, 8, 8), torch.tensor([100.0]), torch.tensor([2])
    ref = model(x, t, y)
    calls = []

    def core(q, k, v, *, layer, grid, axes):
        calls.append((layer, grid, axes, tuple(q.shape)))
        return F.scaled_dot_product_attention(q, k, v)

    model.attention_core = core
    torch.testing.assert_close(model(x, t, y), ref)
    assert calls == [(0, (1, 4, 4), "space", (2, 2, 16, 16)), (1, (2, 1, 1), "time", (16, 2, 2, 16))]


def test_text_hook_starts_as_a_no_op_and_config_round_trips():
    cfg = VideoDiTConfig(dit=tiny(), num_frames=2, pooled_text_dim=7, rope_layout="axial", rope_dims=(4, 6, 6))
    assert VideoDiTConfig.from_dict(cfg.to_dict()) == cfg
    model = VideoDiT(cfg)
    perturb(model.blocks)
    x, t, y = torch.randn(1, 2, 3, 8, 8), torch.tensor([10.0]), torch.tensor([1])
    torch.testing.assert_close(model(x, t, y, pooled_text=torch.randn(1, 7)), model(x, t, y))
    with pytest.raises(ValueError, match="unknown VideoDiTConfig"):
        VideoDiTConfig.from_dict({"frames": 3})
    with pytest.raises(ValueError, match="rope_dims"):
        VideoDiTConfig(dit=tiny(), rope_layout="axial", rope_dims=(4, 4, 4))
    with pytest.raises(ValueError, match="attention"):
        VideoDiTConfig(dit=tiny(), attention="sparse")
