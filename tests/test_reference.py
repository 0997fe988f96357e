"""Reference DiT checkpoints: parity with an independent oracle of the reference forward, the
3-channel guided forward, file formats, refusal of unsafe pickles, key/shape errors, config inference.

The oracle below is written from the documented formulas (docs/reference.md §1) and runs directly on
the reference-layout tensors, in float64 (except the timestep features, which the reference
computes in float32).
"""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ditkit.config import PRESETS, DiTConfig
from ditkit.diffusion.guidance import cfg
from ditkit.io.checkpoint import CheckpointError
from ditkit.models import DiT
from ditkit.models.reference import infer_config, to_reference_state_dict

torch.set_num_threads(1)

# tiny reference model: depth 2, D 64, 4 heads, p 2, C 4, 8x8 latents (T = 16), 10 classes, learned sigma
DEPTH, D, HEADS, P, C, SIDE, CLASSES = 2, 64, 4, 2, 4, 8, 10
C_OUT = 2 * C


# ----------------------------------------------------------------------------- a reference-layout file


def sincos_table(dim: int, grid: int) -> np.ndarray:
    """pe[k = i*G + j] = [sin(j w), cos(j w), sin(i w), cos(i w)], w_d = 10000^(-d/(dim/4)); float64."""
    q = dim // 4
    omega = 10000.0 ** (-np.arange(q) / q)
    pe = np.zeros((grid * grid, dim))
    for i in range(grid):
        for j in range(grid):
            pe[i * grid + j] = np.concatenate(
                [np.sin(j * omega), np.cos(j * omega), np.sin(i * omega), np.cos(i * omega)]
            )
    return pe


def reference_state_dict(seed: int = 0, depth=DEPTH, d=D, p=P, c=C, side=SIDE, classes=CLASSES) -> dict:
    """Random weights in the documented reference layout (docs/reference.md §2); every weight nonzero."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, fan_in=None):
        fan_in = fan_in or shape[-1]
        return torch.randn(*shape, generator=g) / math.sqrt(fan_in)

    def b(n):
        return 0.1 * torch.randn(n, generator=g)

    t = (side // p) ** 2
    c_out = 2 * c
    sd = {
        "pos_embed": torch.from_numpy(sincos_table(d, side // p)).float().unsqueeze(0),  # (1, T, D)
        "x_embedder.proj.weight": w(d, c, p, p, fan_in=c * p * p),
        "x_embedder.proj.bias": b(d),
        "t_embedder.mlp.0.weight": w(d, 256),
        "t_embedder.mlp.0.bias": b(d),
        "t_embedder.mlp.2.weight": w(d, d),
        "t_embedder.mlp.2.bias": b(d),
        "y_embedder.embedding_table.weight": torch.randn(classes + 1, d, generator=g),
    }
    assert sd["pos_embed"].shape == (1, t, d)
    for i in range(depth):
        sd |= {
            f"blocks.{i}.attn.qkv.weight": w(3 * d, d),
            f"blocks.{i}.attn.qkv.bias": b(3 * d),
            f"blocks.{i}.attn.proj.weight": w(d, d),
            f"blocks.{i}.attn.proj.bias": b(d),
            f"blocks.{i}.mlp.fc1.weight": w(4 * d, d),
            f"blocks.{i}.mlp.fc1.bias": b(4 * d),
            f"blocks.{i}.mlp.fc2.weight": w(d, 4 * d),
            f"blocks.{i}.mlp.fc2.bias": b(d),
            f"blocks.{i}.adaLN_modulation.1.weight": 0.5 * w(6 * d, d),
            f"blocks.{i}.adaLN_modulation.1.bias": b(6 * d),
        }
    sd |= {
        "final_layer.adaLN_modulation.1.weight": 0.5 * w(2 * d, d),
        "final_layer.adaLN_modulation.1.bias": b(2 * d),
        "final_layer.linear.weight": w(p * p * c_out, d),
        "final_layer.linear.bias": b(p * p * c_out),
    }
    return sd


# ----------------------------------------------------------------------------- the oracle


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].double().T + sd[f"{name}.bias"].double()


def _layer_norm(x, eps=1e-6):  # no affine, biased variance
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x):
    return x / (1 + torch.exp(-x))


def _attention(x, sd, name, heads):
    n, t, d = x.shape
    hd = d // heads
    qkv = _linear(x, sd, f"{name}.qkv").reshape(n, t, 3, heads, hd)  # rows [q; k; v], head-contiguous
    q, k, v = (qkv[:, :, j].permute(0, 2, 1, 3) for j in range(3))  # (N, H, T, hd)
    scores = q @ k.transpose(-1, -2) * hd**-0.5  # (N, H, T, T)
    scores = scores - scores.amax(-1, keepdim=True)
    attn = scores.exp() / scores.exp().sum(-1, keepdim=True)
    out = (attn @ v).permute(0, 2, 1, 3).reshape(n, t, d)  # (N, T, D)
    return _linear(out, sd, f"{name}.proj")


def oracle_forward(sd, x, t, y, heads=HEADS):
    """Reference DiT forward from the documented formulas, on reference-layout tensors (float64)."""
    d, c, p, _ = sd["x_embedder.proj.weight"].shape
    n, _, hgt, wid = x.shape
    h, w = hgt // p, wid // p
    x = x.double()
    # patch embed as a matmul over row-major patches, flattened (C, p, p) like the conv weight
    patches = x.reshape(n, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(n, h * w, c * p * p)
    tokens = patches @ sd["x_embedder.proj.weight"].double().reshape(d, -1).T + sd["x_embedder.proj.bias"].double()
    tokens = tokens + sd["pos_embed"].double()  # (N, T, D)
    # timestep features in float32 as the reference: [cos(t f), sin(t f)], f_i = exp(-ln(1e4) i / 128)
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[:, None] * freqs[None]
    feats = torch.cat([torch.cos(args), torch.sin(args)], dim=1).double()  # (N, 256)
    t_emb = _linear(_silu(_linear(feats, sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    c_vec = t_emb + sd["y_embedder.embedding_table.weight"].double()[y]  # (N, D)
    i = 0
    while f"blocks.{i}.attn.qkv.weight" in sd:
        mods = _linear(_silu(c_vec), sd, f"blocks.{i}.adaLN_modulation.1").chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        a = _attention(_modulate(_layer_norm(tokens), shift_msa, scale_msa), sd, f"blocks.{i}.attn", heads)
        tokens = tokens + gate_msa[:, None] * a
        m = _modulate(_layer_norm(tokens), shift_mlp, scale_mlp)
        m = _linear(_gelu_tanh(_linear(m, sd, f"blocks.{i}.mlp.fc1")), sd, f"blocks.{i}.mlp.fc2")
        tokens = tokens + gate_mlp[:, None] * m
        i += 1
    shift, scale = _linear(_silu(c_vec), sd, "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    out = _linear(_modulate(_layer_norm(tokens), shift, scale), sd, "final_layer.linear")  # (N, T, p*p*C_out)
    c_out = out.shape[-1] // (p * p)
    out = out.reshape(n, h, w, p, p, c_out).permute(0, 5, 1, 3, 2, 4)  # (N, C_out, h, p, w, p)
    return out.reshape(n, c_out, h * p, w * p)


def oracle_forward_with_cfg(sd, x, t, y, scale):
    """The reference's 3-channel guided forward on a doubled batch (first half is used)."""
    half = x[: len(x) // 2]
    out = oracle_forward(sd, torch.cat([half, half]), t, y)
    eps, rest = out[:, :3], out[:, 3:]
    cond_eps, uncond_eps = eps.chunk(2, dim=0)
    half_eps = uncond_eps + scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


def load(source, **overrides):
    """DiT.from_reference for the tiny model, whose (depth, D) is no DiT size: heads are given."""
    return DiT.from_reference(source, **{"num_heads": HEADS, **overrides})


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def inputs(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, SIDE, SIDE, generator=g)
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])[:n]
    y = torch.tensor([0, 3, 9, 10])[:n]  # 10 = the null label
    return x, t, y


# ----------------------------------------------------------------------------- parity


def test_oracle_pos_embed_matches_documented_check_values():
    pe = sincos_table(1152, 16)
    np.testing.assert_allclose(pe[1, 0:2], [0.841471, 0.824051], atol=1e-6)
    np.testing.assert_allclose(pe[16, 0:2], [0, 0], atol=1e-12)
    np.testing.assert_allclose(pe[16, 576:578], [0.841471, 0.824051], atol=1e-6)


def test_forward_matches_oracle():
    sd = reference_state_dict()
    model = load(sd)
    assert not model.training
    x, t, y = inputs()
    with torch.no_grad():
        ours = model(x, t, y)
    ref = oracle_forward(sd, x, t, y)
    assert ours.shape == ref.shape == (4, C_OUT, SIDE, SIDE)
    assert ref.abs().mean() > 0.1  # a nontrivial output
    assert rel_err(ours, ref) <= 1e-5


def test_three_channel_guided_forward_matches_reference_cfg():
    sd = reference_state_dict(seed=2)
    model = load(sd)
    x, t, y = inputs(n=3)
    y = torch.tensor([1, 4, 7])
    null = torch.full_like(y, CLASSES)
    ref = oracle_forward_with_cfg(sd, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), 4.0)
    with torch.no_grad():
        ours = cfg(model, 4.0, null_label=CLASSES, channels=3)(x, t, y=y)
    assert ours.shape == (3, C_OUT, SIDE, SIDE)
    assert rel_err(ours, ref[:3]) <= 1e-5  # the kept (conditional) half of the reference
    # and it is really guided on 3 channels only: channel 3 and the variance come from the cond pass
    with torch.no_grad():
        cond = model(x, t, y)
    assert not torch.allclose(ours[:, :3], cond[:, :3], atol=1e-3)
    torch.testing.assert_close(ours[:, 3:], cond[:, 3:])


def test_round_trip_through_reference_layout():
    sd = reference_state_dict(seed=3)
    model = load(sd)
    back = to_reference_state_dict(model)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert torch.allclose(back[k], v, rtol=0, atol=1e-7) if k == "pos_embed" else torch.equal(back[k], v), k
    # the model owns copies: changing the caller's dict does not change the model
    sd["final_layer.linear.bias"].add_(1.0)
    assert not torch.equal(model.final_layer.linear.bias, sd["final_layer.linear.bias"])


# ----------------------------------------------------------------------------- files


def test_load_plain_pt_and_safetensors(tmp_path: Path):
    sd = reference_state_dict(seed=4)
    x, t, y = inputs()
    ref = oracle_forward(sd, x, t, y)
    torch.save(sd, tmp_path / "plain.pt")
    save_file(sd, str(tmp_path / "plain.safetensors"))
    for name in ("plain.pt", "plain.safetensors"):
        model = load(tmp_path / name)
        with torch.no_grad():
            assert rel_err(model(x, t, y), ref) <= 1e-5, name
    assert load(str(tmp_path / "plain.pt")).config.depth == DEPTH  # str paths too


def test_training_checkpoint_takes_ema_and_args(tmp_path: Path):
    ema = reference_state_dict(seed=5)
    raw = reference_state_dict(seed=6)
    args = argparse.Namespace(model="DiT-S/2", image_size=64, num_classes=CLASSES, results_dir="results")
    ckpt = {"model": raw, "ema": ema, "opt": {"state": {}, "param_groups": []}, "args": args}
    torch.save(ckpt, tmp_path / "0000100.pt")
    # weights of this tiny model do not fit DiT-S/2: args.model is cross-checked against the shapes
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load(tmp_path / "0000100.pt")
    ckpt["args"] = argparse.Namespace(model="DiT-Tiny/2", image_size=64, num_classes=CLASSES)  # not a preset name
    torch.save(ckpt, tmp_path / "0000200.pt")
    model = load(tmp_path / "0000200.pt")
    torch.testing.assert_close(model.final_layer.linear.weight, ema["final_layer.linear.weight"], rtol=0, atol=0)
    assert model.config.num_classes == CLASSES and model.config.class_dropout_prob == 0.1


def test_training_checkpoint_args_give_the_config(tmp_path: Path):
    with torch.device("meta"):
        small = DiT(PRESETS["DiT-S/2"].replace(num_classes=5, input_size=8))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sd = {k: torch.randn(v.shape) * 0.02 for k, v in to_reference_state_dict(small).items()}
    sd.pop("pos_embed")  # as if exported without it: input size then comes from args.image_size / 8
    args = argparse.Namespace(model="DiT-S/2", image_size=64, num_classes=5)
    torch.save({"model": sd, "ema": sd, "opt": {}, "args": args}, tmp_path / "s2.pt")
    model = DiT.from_reference(tmp_path / "s2.pt")
    assert model.config == PRESETS["DiT-S/2"].replace(num_classes=5, input_size=8)


class Payload:
    """An arbitrary class: unpickling it would run code; a weights-only loader must refuse."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    Path(path).write_text("code ran")
    return path


def test_refuses_pickles_with_arbitrary_classes(tmp_path: Path):
    marker = tmp_path / "pwned"
    sd = reference_state_dict()
    sd["evil"] = Payload(str(marker))
    torch.save(sd, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_bad_sources(tmp_path: Path):
    with pytest.raises(CheckpointError, match="missing checkpoint file"):
        load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a named tensor"):
        load({**reference_state_dict(), "step": 3})


# ----------------------------------------------------------------------------- key and shape errors


def test_missing_and_unexpected_keys():
    sd = reference_state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.1\.mlp\.fc2\.bias"):
        load(sd)
    sd = reference_state_dict()
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(D // HEADS)
    with pytest.raises(CheckpointError, match=r"unexpected key.*blocks\.0\.attn\.q_norm\.weight"):
        load(sd)
    sd = reference_state_dict()
    del sd["x_embedder.proj.weight"]
    with pytest.raises(CheckpointError, match="x_embedder.proj.weight"):
        load(sd)


def test_shape_mismatch_names_key_and_both_shapes():
    sd = reference_state_dict()
    sd["blocks.1.attn.proj.weight"] = torch.zeros(D, D + 1)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.proj\.weight.*\(64, 65\).*\(64, 64\)"):
        load(sd)
    with pytest.raises(CheckpointError, match=r"y_embedder\.embedding_table\.weight.*\(11, 64\).*\(13, 64\)"):
        load(reference_state_dict(), num_classes=12)


def test_pos_embed_is_checked_then_dropped():
    sd = reference_state_dict()
    model = load(sd)
    assert "pos_embed" not in dict(model.named_parameters()) and "pos_embed" not in model.state_dict()
    bad = reference_state_dict()
    bad["pos_embed"] = bad["pos_embed"] + 1e-3
    with pytest.raises(CheckpointError, match="positional table differs"):
        load(bad)
    swapped = reference_state_dict()  # rows and columns swapped (a (h, w) vs (w, h) layout mistake)
    pe = swapped["pos_embed"].reshape(1, 4, 4, D).transpose(1, 2).reshape(1, 16, D)
    swapped["pos_embed"] = pe
    with pytest.raises(CheckpointError, match="positional table differs"):
        load(swapped)
    swapped["pos_embed"] = torch.zeros(1, 16, D + 4)
    with pytest.raises(CheckpointError, match=r"pos_embed.*\(1, 16, 68\).*\(1, 16, 64\)"):
        load(swapped)


# ----------------------------------------------------------------------------- config inference


def test_config_inference_from_shapes():
    sd = reference_state_dict()
    with pytest.raises(CheckpointError, match="num_heads"):  # (depth 2, D 64) is no DiT size
        DiT.from_reference(sd)
    conf = infer_config(sd, num_heads=HEADS)
    assert conf == DiTConfig(input_size=SIDE, patch_size=P, in_channels=C, hidden_size=D, depth=DEPTH,
                             num_heads=HEADS, num_classes=CLASSES, learn_sigma=True)
    sd["final_layer.linear.weight"] = sd["final_layer.linear.weight"][: P * P * C]
    sd["final_layer.linear.bias"] = sd["final_layer.linear.bias"][: P * P * C]
    assert infer_config(sd, num_heads=HEADS).learn_sigma is False
    sd["final_layer.linear.bias"] = sd["final_layer.linear.bias"][:5]
    sd["final_layer.linear.weight"] = sd["final_layer.linear.weight"][:5]
    with pytest.raises(CheckpointError, match="final_layer.linear.weight has 5 outputs"):
        infer_config(sd, num_heads=HEADS)
    # an exact number of classes (no null row) means no label dropout
    assert infer_config(reference_state_dict(), num_heads=HEADS, num_classes=11).class_dropout_prob == 0.0
    with pytest.raises(ValueError, match="not the reference architecture"):
        infer_config(reference_state_dict(), num_heads=HEADS, use_rope=True)


@pytest.mark.parametrize("name", ["DiT-XL/2", "DiT-L/4", "DiT-B/8", "DiT-S/2"])
def test_config_inference_for_presets(name):
    with torch.device("meta"):  # shapes only, no memory
        model = DiT(PRESETS[name])
    assert infer_config(to_reference_state_dict(model)) == PRESETS[name]


def test_xl2_parameter_count_and_keys():
    with torch.device("meta"):
        model = DiT(PRESETS["DiT-XL/2"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 674_834_720
    ref = to_reference_state_dict(model)
    assert len(ref) == 292
    assert ref["pos_embed"].shape == (1, 256, 1152)
    assert sum(v.numel() for v in ref.values()) == 675_129_632


def test_export_refuses_non_reference_models():
    with pytest.raises(ValueError, match="not a reference-architecture"):
        to_reference_state_dict(DiT(DiTConfig(input_size=8, hidden_size=32, depth=1, num_heads=2, use_rope=True)))
    with pytest.raises(ValueError, match="square"):
        to_reference_state_dict(DiT(DiTConfig(input_size=(8, 12), hidden_size=32, depth=1, num_heads=2)))
