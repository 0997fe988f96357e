"""The DiT network: closed-form embeddings, adaLN-Zero init, architecture switches, RoPE,
non-square grids and token layout, compute count, input validation, configs and presets."""

import json

import pytest
import torch

from ditkit.config import PRESETS, DiTConfig, get_preset
from ditkit.models import DiT
from ditkit.models.dit import macs_per_forward
from ditkit.models.layers import TimestepEmbedder, apply_rope, grid_positions, rope_tables, sincos_2d

torch.set_num_threads(1)

TINY = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def batch(cfg: DiTConfig = TINY, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.hw
    x = torch.randn(n, cfg.in_channels, h, w, generator=g)
    t = torch.tensor([1.0, 250.0, 999.0, 500.0])[:n]
    y = torch.tensor([0, 5, 10, 3])[:n]
    return x, t, y


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise so that no branch is closed (zero-init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return model


# ----------------------------------------------------------------------------- closed forms


def test_pos_embed_check_values():
    pe = sincos_2d(1152, grid_positions(16, 16))  # (256, 1152), float32
    assert pe.dtype == torch.float32 and pe.shape == (256, 1152)
    torch.testing.assert_close(pe[1, 0:2], torch.tensor([0.841471, 0.824051]), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[16, 0:2], torch.tensor([0.0, 0.0]), atol=1e-7, rtol=0)
    torch.testing.assert_close(pe[16, 576:578], torch.tensor([0.841471, 0.824051]), atol=1e-6, rtol=0)


def test_model_adds_the_sincos_table():
    model = DiT(TINY)
    ctx = model.token_context((4, 4), torch.device("cpu"))
    torch.testing.assert_close(ctx.pos_embed[0], sincos_2d(32, grid_positions(4, 4)), rtol=0, atol=0)
    x, _, _ = batch()
    tokens, _ = model.embed(x)
    torch.testing.assert_close(tokens, model.x_embedder(x) + ctx.pos_embed)


def test_timestep_features_check_values():
    emb = TimestepEmbedder.timestep_features(torch.tensor([1.0]), 256)[0]
    assert emb.shape == (256,)
    expected = {0: 0.540302, 1: 0.597375, 127: 1.0, 128: 0.841471, 255: 1.0746e-4}
    for i, v in expected.items():
        assert emb[i].item() == pytest.approx(v, rel=1e-4, abs=1e-9), (i, emb[i])


def test_output_is_exactly_zero_at_init():
    for cfg in flag_configs().values():
        model = DiT(cfg)
        x, t, y = batch(cfg)
        with torch.no_grad():
            out = model(x, t, y)
        assert out.shape == (3, cfg.out_channels, *cfg.hw)
        assert torch.count_nonzero(out) == 0


# ----------------------------------------------------------------------------- architecture switches


def flag_configs() -> dict[str, DiTConfig]:
    return {
        "base": TINY,
        "use_rope": TINY.replace(use_rope=True),
        "qk_norm": TINY.replace(qk_norm=True),
        "rmsnorm": TINY.replace(norm_type="rmsnorm"),
        "swiglu": TINY.replace(mlp_type="swiglu"),
        "mixffn": TINY.replace(mlp_type="mixffn"),
        "no_abs_pos": TINY.replace(use_abs_pos=False),
    }


def _block_keys(model: DiT) -> set[str]:
    return set(model.state_dict())


FLAGS = ["use_rope", "qk_norm", "rmsnorm", "swiglu", "mixffn", "no_abs_pos"]


@pytest.mark.parametrize("flag", FLAGS)
def test_architecture_flag_changes_the_parameters_it_names(flag):
    base, model = DiT(TINY), DiT(flag_configs()[flag])
    base_keys, keys = _block_keys(base), _block_keys(model)
    d, depth = TINY.hidden_size, TINY.depth
    if flag in ("use_rope", "no_abs_pos"):
        assert keys == base_keys  # positions are computed tables, not parameters
    elif flag == "qk_norm":
        extra = {f"blocks.{i}.attn.{n}_norm.weight" for i in range(depth) for n in "qk"}
        assert keys == base_keys | extra
        assert model.blocks[0].attn.q_norm.weight.shape == (TINY.head_dim,)
    elif flag == "rmsnorm":
        extra = {f"blocks.{i}.norm{j}.weight" for i in range(depth) for j in (1, 2)} | {"final_layer.norm_final.weight"}
        assert keys == base_keys | extra
    elif flag == "swiglu":
        mlp = {k for k in base_keys if k.startswith("blocks.") and ".mlp." in k}
        hidden = int(2 * 4 * d / 3)
        assert keys - base_keys == {f"blocks.{i}.mlp.{n}.{p}" for i in range(depth) for n in ("w12", "w3")
                                    for p in ("weight", "bias")}
        assert base_keys - keys == mlp
        assert model.blocks[0].mlp.w12.weight.shape == (2 * hidden, d)
        assert model.blocks[0].mlp.w3.weight.shape == (d, hidden)
    elif flag == "mixffn":
        extra = {f"blocks.{i}.mlp.dwconv.{p}" for i in range(depth) for p in ("weight", "bias")}
        assert keys == base_keys | extra
        assert model.blocks[0].mlp.dwconv.weight.shape == (4 * d, 1, 3, 3)  # depthwise


@pytest.mark.parametrize("flag", FLAGS)
def test_architecture_flag_changes_the_forward(flag):
    base, model = randomize(DiT(TINY)), DiT(flag_configs()[flag])
    # same shared weights (new ones at their init), different network -> different output
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith("blocks.") and ".mlp." in k for k in unexpected)
    if flag == "mixffn":
        for block in model.blocks:  # a zero-centred kernel would silence the MLP: make the conv count
            torch.nn.init.normal_(block.mlp.dwconv.weight, std=0.5)
    x, t, y = batch()
    base.eval(), model.eval()
    with torch.no_grad():
        out_base, out = base(x, t, y), model(x, t, y)
    assert out.shape == out_base.shape
    assert torch.isfinite(out).all()
    assert (out - out_base).abs().max() > 1e-3
    if flag == "no_abs_pos":
        assert model.token_context((4, 4), torch.device("cpu")).pos_embed is None
    if flag == "use_rope":
        assert model.token_context((4, 4), torch.device("cpu")).rope is not None
        assert base.token_context((4, 4), torch.device("cpu")).rope is None


@pytest.mark.parametrize("flag", ["base", "use_rope", "qk_norm", "rmsnorm", "swiglu", "mixffn", "no_abs_pos"])
def test_architecture_flag_trains_one_step(flag):
    torch.manual_seed(0)
    cfg = flag_configs()[flag]
    model = DiT(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, y = batch(cfg)
    target = torch.randn(3, cfg.out_channels, *cfg.hw, generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # the second step reaches the blocks (adaLN-Zero opens after the first)
        loss = (model(x, t, y) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(after["final_layer.linear.weight"], before["final_layer.linear.weight"])
    assert not torch.equal(after["blocks.0.adaLN_modulation.1.weight"], before["blocks.0.adaLN_modulation.1.weight"])


def test_mixffn_mixes_only_the_3x3_neighbourhood():
    from ditkit.models.layers import MixFFN

    torch.manual_seed(0)
    mlp = MixFFN(8, 16)
    x = torch.randn(1, 5 * 6, 8, requires_grad=True)  # a 5x6 grid, row-major
    mlp(x, (5, 6))[0, 2 * 6 + 3].sum().backward()  # the output token at row 2, col 3
    touched = (x.grad[0].abs().sum(-1) > 0).view(5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[1:4, 2:5] = True
    assert torch.equal(touched, expected)
    with pytest.raises(ValueError, match="full 2D token grid"):
        mlp(x.detach()[:, :20], (5, 6))  # a token subset (what RAS would pass)


# ----------------------------------------------------------------------------- RoPE


def test_rope_layout_row_then_column():
    hd = 16
    pos = torch.tensor([[3, 5]])  # row 3, col 5
    cos, sin = rope_tables(hd, pos)
    d = hd // 2  # dims per axis
    freqs = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    row = (3 * freqs).repeat_interleave(2)
    col = (5 * freqs).repeat_interleave(2)
    torch.testing.assert_close(cos[0], torch.cat([row, col]).cos().float())
    torch.testing.assert_close(sin[0], torch.cat([row, col]).sin().float())


def test_rope_scores_depend_only_on_relative_offsets():
    hd, grid = 16, (4, 5)
    pos = grid_positions(*grid)  # (20, 2)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, pos.shape[0], hd, generator=g)  # (N, H, T, hd) each

    def scores(p):
        cos, sin = rope_tables(hd, p)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)  # (1, 1, T, T)

    s = scores(pos)
    # shifting every position by the same offset leaves all scores unchanged
    torch.testing.assert_close(scores(pos + torch.tensor([3, 7])), s, atol=1e-4, rtol=1e-4)
    assert (s - q @ k.transpose(-1, -2)).abs().max() > 1e-2  # ... and the rotation does something
    # the same q and k vectors at every token: the score is a function of (row offset, col offset)
    qc, kc = q[..., :1, :].expand_as(q), k[..., :1, :].expand_as(k)
    cos, sin = rope_tables(hd, pos)
    sc = (apply_rope(qc, cos, sin) @ apply_rope(kc, cos, sin).transpose(-1, -2))[0, 0]
    by_offset: dict[tuple[int, int], float] = {}
    for i in range(pos.shape[0]):
        for j in range(pos.shape[0]):
            off = tuple((pos[i] - pos[j]).tolist())
            ref = by_offset.setdefault(off, sc[i, j].item())
            assert abs(sc[i, j].item() - ref) <= 1e-4 * max(1.0, abs(ref)), off
    # rotations preserve norms
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


# ----------------------------------------------------------------------------- grids and layout


def test_non_square_input():
    cfg = TINY.replace(input_size=(16, 24))
    model = randomize(DiT(cfg)).eval()
    x, t, y = batch(cfg)
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == (3, cfg.out_channels, 16, 24)
    assert torch.isfinite(out).all()
    ctx = model.token_context((8, 12), torch.device("cpu"))
    assert ctx.pos_embed.shape == (1, 96, 32)
    pe = ctx.pos_embed[0]
    # token 1 is (row 0, col 1): the first half encodes the column; token 12 is (row 1, col 0)
    assert abs(pe[1, 0].item() - 0.841471) < 1e-6 and abs(pe[1, 16].item()) < 1e-7
    assert abs(pe[12, 0].item()) < 1e-7 and abs(pe[12, 16].item() - 0.841471) < 1e-6
    # a square model runs on other grids too (positions are computed per call)
    sq = randomize(DiT(TINY)).eval()
    with torch.no_grad():
        assert sq(x, t, y).shape == (3, 8, 16, 24)


def test_patchify_and_unpatchify_are_row_major():
    cfg = TINY.replace(input_size=(8, 12), learn_sigma=False)
    model = DiT(cfg)
    p, c, h, w = 2, 4, 4, 6
    # patch (r, col) is filled with the value r * w + col + 1 in channel 0
    ids = torch.arange(h * w, dtype=torch.float32).reshape(h, w) + 1
    x = torch.zeros(1, c, 8, 12)
    x[0, 0] = ids.repeat_interleave(p, 0).repeat_interleave(p, 1)
    with torch.no_grad():
        model.x_embedder.proj.weight.zero_()
        model.x_embedder.proj.weight[0, 0] = 1.0  # output channel 0 = sum of the patch's channel-0 pixels
        model.x_embedder.proj.bias.zero_()
        tokens = model.x_embedder(x)  # (1, T, D)
    torch.testing.assert_close(tokens[0, :, 0], (torch.arange(h * w) + 1).float() * p * p)
    # unpatchify inverts a row-major patchify whose features are ordered (p_row, p_col, channel)
    x = torch.randn(2, c, 8, 12)
    tok = torch.zeros(2, h * w, p * p * c)
    for r in range(h):
        for col in range(w):
            patch = x[:, :, r * p:(r + 1) * p, col * p:(col + 1) * p]  # (N, C, p, p)
            tok[:, r * w + col] = patch.permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(model.unpatchify(tok, (h, w)), x, rtol=0, atol=0)


def test_bad_input_shapes_raise():
    model = DiT(TINY)
    t, y = torch.zeros(1), torch.zeros(1, dtype=torch.long)
    for shape in [(1, 3, 8, 8), (1, 4, 7, 8), (1, 4, 8, 9), (4, 8, 8), (1, 1, 4, 8, 8)]:
        with pytest.raises(ValueError):
            model(torch.zeros(shape), t, y)
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(1, 4, 8, 8), t)


# ----------------------------------------------------------------------------- compute, configs, presets


def test_macs_of_dit_xl2():
    macs = macs_per_forward(PRESETS["DiT-XL/2"])
    assert abs(macs - 118.6e9) <= 0.1e9
    assert macs_per_forward(PRESETS["DiT-XL/2"], batch=2) == 2 * macs
    d, t = 1152, 256
    assert abs(28 * (12 * d * d * t + 2 * t * t * d) - 118.4e9) < 0.05e9  # blocks-only check (REFERENCE §1)


def test_config_round_trip_and_unknown_keys():
    for conf in [TINY, TINY.replace(input_size=(16, 24), use_rope=True, norm_type="rmsnorm"), PRESETS["DiT-XL/2"]]:
        d = json.loads(json.dumps(conf.to_dict()))
        assert DiTConfig.from_dict(d) == conf
    with pytest.raises(ValueError, match="unknown DiTConfig keys: bogus"):
        DiTConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        TINY.replace(norm_type="batchnorm")
    with pytest.raises(ValueError):
        TINY.replace(mlp_type="relu")
    with pytest.raises(ValueError):
        TINY.replace(input_size=9)
    with pytest.raises(ValueError):
        TINY.replace(num_heads=3)


def test_presets():
    sizes = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    for name, (depth, d, heads) in sizes.items():
        for p in (2, 4, 8):
            conf = get_preset(f"DiT-{name}/{p}")
            assert (conf.depth, conf.hidden_size, conf.num_heads, conf.patch_size) == (depth, d, heads, p)
            assert (conf.input_size, conf.in_channels, conf.num_classes, conf.learn_sigma) == (32, 4, 1000, True)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("DiT-XXL/2")
    counts = {"DiT-L/2": 458_102_816, "DiT-B/2": 130_512_416, "DiT-S/2": 32_963_360}  # incl. pos_embed
    for name, n in counts.items():
        with torch.device("meta"):
            model = DiT(PRESETS[name])
        assert model.num_parameters() + PRESETS[name].num_tokens * PRESETS[name].hidden_size == n, name


@pytest.mark.parametrize("arch", ["cross", "mmdit"])
def test_text_dits_take_mixffn_on_the_image_grid(arch):
    """Mix-FFN in a text DiT convolves the image tokens over their grid; MMDiT's text stream keeps a
    plain MLP (text tokens have no grid)."""
    from ditkit.config import TextDiTConfig
    from ditkit.models.text_dit import build_model

    cfg = TextDiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                        learn_sigma=False, mlp_type="mixffn", arch=arch, text_dim=16)
    model = randomize(build_model(cfg))
    assert type(model.blocks[0].mlp).__name__ == "MixFFN"
    if arch == "mmdit":
        assert type(model.blocks[0].mlp_context).__name__ == "Mlp"
    x, t = torch.randn(2, 4, 8, 8), torch.rand(2) * 1000
    text, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    assert model(x, t, text, mask).shape == (2, 4, 8, 8)


def test_training_after_an_inference_mode_forward():
    """Position tables cached by a forward under inference_mode must not break a later backward
    (a quantizer calibrates under inference_mode, then VQ fine-tunes the same model)."""
    cfg = TINY.replace(use_rope=True)
    model = randomize(DiT(cfg))
    x, t, y = batch(cfg)
    with torch.inference_mode():
        model(x, t, y)
    model(x, t, y).pow(2).mean().backward()
    assert model.final_layer.linear.weight.grad is not None
