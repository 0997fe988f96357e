"""Sparse video attention patterns (flex vs dense), UltraViCo, FLOPs accounting and the offline pattern search."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from ditkit.accel.sparse_search import SearchConfig, default_candidates, head_errors, search_plan
from ditkit.config import DiTConfig
from ditkit.models.video_attention import (
    Pattern,
    SparsePlan,
    UltraViCoConfig,
    VideoAttention,
    attention_flops,
    dense_mask,
    head_mask_mod,
    make_layout,
    tile_order,
)
from ditkit.models.video_dit import VideoDiT, VideoDiTConfig

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = (4, 4, 6)  # (f, h, w) tokens: 96


def naive(p: Pattern, grid):
    """The pattern's definition written as plain loops over (frame, row, col)."""
    f, h, w = grid
    cells = list(itertools.product(range(f), range(h), range(w)))
    idx = {c: i for i, c in enumerate(cells)}
    out = torch.zeros(len(cells), len(cells), dtype=torch.bool)
    for (qc, kc) in itertools.product(cells, cells):
        i, j = idx[qc], idx[kc]
        if p.kind == "full":
            ok = True
        elif p.kind == "diagonal":
            ok = abs(i - j) <= p.width
        elif p.kind == "multi_diagonal":
            ok = abs(i % (h * w) - j % (h * w)) <= p.width
        elif p.kind == "stripe":
            ok = kc[0] < p.width
        else:  # sta
            ok = True
            for a in range(3):
                n_t = -(-grid[a] // p.tile[a])
                half = p.window[a] // 2
                centre = min(max(qc[a] // p.tile[a], min(half, n_t - 1)), max(n_t - 1 - half, 0))
                ok &= abs(centre - kc[a] // p.tile[a]) <= half
        out[i, j] = ok
    return out


PATTERNS = [Pattern("full"), Pattern("diagonal", 10), Pattern("multi_diagonal", 3), Pattern("stripe", 1),
            Pattern("sta", tile=(1, 2, 3), window=(3, 1, 1)), Pattern("sta", tile=(2, 2, 2), window=(1, 3, 3))]


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_masks_match_their_definitions(pattern):
    mask = dense_mask(head_mask_mod([pattern], make_layout(GRID)), 1, 96)[0]
    assert torch.equal(mask, naive(pattern, GRID))
    assert mask.any(1).all()  # no empty row
    tiled = make_layout(GRID, (2, 2, 3))  # the same mask in tile-major order
    mt = dense_mask(head_mask_mod([pattern], tiled), 1, 96)[0]
    order = tiled.order
    assert torch.equal(mt, mask[order][:, order])


def test_sta_window_covering_the_grid_is_dense_and_density_is_analytic():
    assert dense_mask(head_mask_mod([Pattern("sta", tile=(1, 2, 2), window=(7, 3, 5))], make_layout(GRID)), 1, 96).all()
    stripe = dense_mask(head_mask_mod([Pattern("stripe", 1)], make_layout(GRID)), 1, 96)
    assert stripe.float().mean() == pytest.approx(1 / 4)
    sta = dense_mask(head_mask_mod([Pattern("sta", tile=(1, 4, 6), window=(1, 1, 1))], make_layout(GRID)), 1, 96)
    assert sta.float().mean() == pytest.approx(1 / 4)  # each frame sees itself only


def test_tile_order_lists_tiles_contiguously():
    order = tile_order((2, 4, 4), (1, 2, 2))
    assert sorted(order.tolist()) == list(range(32))
    assert order[:4].tolist() == [0, 1, 4, 5]
    with pytest.raises(ValueError, match="does not split"):
        tile_order((2, 4, 4), (1, 3, 2))


def qkv(heads=3, t=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, t, 8, generator=g) for _ in range(3)]


def test_flex_equals_dense_for_a_mixed_head_plan():
    plan = SparsePlan({0: [Pattern("diagonal", 12), Pattern("sta", tile=(1, 2, 3), window=(3, 1, 1)), Pattern("skip")]},
                      tile=(1, 2, 3))
    q, k, v = qkv()
    flex = VideoAttention(plan, backend="flex", block_size=16)(q, k, v, layer=0, grid=GRID)
    dense = VideoAttention(plan, backend="dense")(q, k, v, layer=0, grid=GRID)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    assert (flex[:, 2] == 0).all() and not torch.allclose(flex[:, 0], F.scaled_dot_product_attention(q, k, v)[:, 0])
    untouched = VideoAttention(plan)(q, k, v, layer=1, grid=GRID)  # a layer the plan does not name
    assert torch.equal(untouched, F.scaled_dot_product_attention(q, k, v))


def test_ultravico_is_identity_inside_the_window_and_decays_beyond():
    q, k, v = qkv(heads=2)
    sdpa = F.scaled_dot_product_attention(q, k, v)
    inside = VideoAttention(ultravico=UltraViCoConfig(train_frames=4))(q, k, v, layer=0, grid=GRID)
    assert torch.equal(inside, sdpa)
    off = VideoAttention(ultravico=UltraViCoConfig(train_frames=2, alpha=1.0, mask_first_frame=False))
    assert torch.equal(off(q, k, v, layer=0, grid=GRID), sdpa)
    uv = UltraViCoConfig(train_frames=2, alpha=0.5)
    flex = VideoAttention(ultravico=uv, block_size=16)(q, k, v, layer=0, grid=GRID)
    dense = VideoAttention(ultravico=uv, backend="dense")(q, k, v, layer=0, grid=GRID)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    frame = make_layout(GRID).coords[:, 0]
    marker = (frame >= 2).float().view(1, 1, 96, 1).expand(2, 2, 96, 8)  # v = 1 on keys at frame >= W
    mass = VideoAttention(ultravico=uv, backend="dense")(q, k, marker, layer=0, grid=GRID)[..., 0]  # (N, H, T)
    base = F.scaled_dot_product_attention(q, k, marker)[..., 0]
    assert (mass[:, :, frame == 0] == 0).all()  # first-frame queries never see frames >= W
    assert not torch.allclose(mass, base, atol=1e-4)
    k_pos = k.abs() * 3  # all logits positive: every far key loses weight
    q_pos = q.abs()
    near = F.scaled_dot_product_attention(q_pos, k_pos, marker)[..., 0]
    decayed = VideoAttention(ultravico=UltraViCoConfig(2, 0.5, False), backend="dense")(q_pos, k_pos, marker, layer=0,
                                                                                        grid=GRID)[..., 0]
    assert (decayed[:, :, frame == 0] < near[:, :, frame == 0]).all()  # frame 0's far keys (frames 2, 3) lose mass


def test_flops_accounting():
    full = attention_flops([Pattern()] * 2, GRID, 8, block_size=16)
    assert full["dense"] == full["kept"] == full["block"] == 4 * 8 * 96 * 96 * 2
    skip = attention_flops([Pattern("skip"), Pattern()], GRID, 8, block_size=16)
    assert skip["kept"] == skip["block"] == full["dense"] / 2
    sta = [Pattern("sta", tile=(1, 2, 3), window=(1, 1, 1))]
    tiled = attention_flops(sta, GRID, 8, block_size=6, tile=(1, 2, 3))
    assert tiled["block"] == tiled["kept"] == tiled["dense"] / 16  # tile-major: kept tiles are whole blocks
    raster = attention_flops(sta, GRID, 8, block_size=6)
    assert raster["kept"] == tiled["kept"] and raster["block"] > raster["kept"]  # frame-major: blocks are ragged


def tiny_model(attention="full") -> VideoDiT:
    dit = DiTConfig(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=2, num_heads=2, num_classes=3,
                    learn_sigma=False, use_rope=True)
    model = VideoDiT(VideoDiTConfig(dit=dit, num_frames=4, attention=attention)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


@torch.no_grad()
def test_model_with_cores():
    model = tiny_model()
    x, t, y = torch.randn(1, 4, 2, 8, 8), torch.tensor([500.0]), torch.tensor([1])
    ref = model(x, t, y)
    full = VideoAttention(SparsePlan({0: [Pattern()] * 2, 1: [Pattern()] * 2}))
    assert torch.equal(model(x, t, y, attention=full), ref)  # an all-full plan is the baseline
    plan = SparsePlan({1: [Pattern("diagonal", 16), Pattern("sta", tile=(1, 2, 2), window=(1, 3, 3))]}, tile=(1, 2, 2))
    flex = model(x, t, y, attention=VideoAttention(plan, block_size=16))
    dense = model(x, t, y, attention=VideoAttention(plan, backend="dense"))
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(flex, ref, atol=1e-4)
    long = torch.randn(1, 8, 2, 8, 8)  # twice the training window
    plain = model(long, t, y)
    uv = model(long, t, y, attention=VideoAttention(ultravico=UltraViCoConfig(4)))
    assert not torch.allclose(uv, plain, atol=1e-4)


def test_search_respects_the_tolerance():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(1, 4, 2, 8, 8, generator=g), torch.tensor([s]), {"y": torch.tensor([0])}) for s in (900.0, 300.0)]
    cands = default_candidates((4, 4, 4))
    strict, rep0 = search_plan(model, calib, cands, SearchConfig(tolerance=0.0, block_size=16))
    assert all(p.kind == "full" for pats in strict.layers.values() for p in pats) and rep0["saved"] == 0.0
    loose, rep1 = search_plan(model, calib, cands, SearchConfig(tolerance=1.0, block_size=16))
    assert all(p.kind == "skip" for pats in loose.layers.values() for p in pats) and rep1["saved"] == 1.0
    mid, rep = search_plan(model, calib, cands, SearchConfig(tolerance=0.3, block_size=16))
    assert set(mid.layers) == {0, 1} and 0.0 < rep["saved"] < 1.0
    for heads in rep["layers"].values():
        assert all(err <= 0.3 for _, err, _ in heads)
    assert SparsePlan.from_dict(mid.to_dict()).layers == mid.layers
    with pytest.raises(ValueError, match="no full-attention"):
        search_plan(tiny_model("factorized"), calib, cands)


def test_head_errors_find_local_heads():
    """A head whose attention is sharply local is reproduced by a diagonal; a uniform head is not."""
    t = 96
    i = torch.arange(t, dtype=torch.float32)
    zero = torch.zeros(t, 5)
    local_q = torch.cat([torch.stack([2 * i, -i * i, -torch.ones(t)], -1), zero], -1) * 2.0  # q.k = -2 (i - j)^2
    local_k = torch.cat([torch.stack([i, torch.ones(t), i * i], -1), zero], -1)
    q = torch.stack([local_q, torch.zeros(t, 8)])[None]  # head 0 local, head 1 uniform, (1, 2, T, 8)
    k = torch.stack([local_k, local_k])[None]
    v = torch.randn(1, 2, t, 8, generator=torch.Generator().manual_seed(0))
    err = head_errors([(q, k, v)], Pattern("diagonal", 6), GRID)
    assert err[0] < 0.05 < err[1]


def test_flex_core_with_gradients_on_cpu_falls_back_to_dense():
    q, k, v = (x.requires_grad_() for x in qkv())
    plan = SparsePlan({0: [Pattern("diagonal", 12), Pattern("stripe", 1), Pattern("skip")]})
    out = VideoAttention(plan, block_size=16)(q, k, v, layer=0, grid=GRID)
    out.sum().backward()
    with torch.no_grad():
        ref = VideoAttention(plan, backend="dense")(q, k, v, layer=0, grid=GRID)
    torch.testing.assert_close(out.detach(), ref)
    assert q.grad is not None and q.grad[:, 2].abs().sum() == 0  # the skipped head passes no gradient


def test_a_compiled_kernel_that_disagrees_with_eager_flex_is_not_used():
    plan = SparsePlan({0: [Pattern("diagonal", 12), Pattern("stripe", 1), Pattern("full")]})
    core = VideoAttention(plan, block_size=16)
    calls = []

    def broken(q, k, v, **kw):  # stands in for a miscompiled kernel
        calls.append(1)
        return torch.zeros_like(q)

    core._flex = broken
    q, k, v = qkv()
    ref = VideoAttention(plan, backend="dense")(q, k, v, layer=0, grid=GRID)
    with pytest.warns(UserWarning, match="disagrees with eager flex"):
        first = core(q, k, v, layer=0, grid=GRID)
    second = core(q, k, v, layer=0, grid=GRID)
    torch.testing.assert_close(first, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, ref, atol=1e-5, rtol=1e-5)
    assert len(calls) == 1  # checked once, then never used for this mask
