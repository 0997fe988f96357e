"""diffusers DiTTransformer2DModel <-> ditkit DiT: key table, numerics options, forward parity, round trip, errors.

Tolerances: an imported diffusers model must reproduce diffusers' forward to 1e-5 (max abs, outputs of
order 1); the round trip ditkit -> diffusers -> ditkit must be bit-exact (torch.equal on every tensor).
"""

import json
import sys

import pytest
import torch

from ditkit import DiT, DiTConfig
from ditkit.interop.diffusers_dit import (
    config_from_diffusers,
    diffusers_config,
    diffusers_key_table,
    from_diffusers_model,
    to_diffusers_model,
    to_diffusers_state_dict,
)
from ditkit.interop.diffusers_folder import LAYOUT_VERSION, WEIGHTS_NAME, export_diffusers, import_diffusers
from ditkit.io.checkpoint import CheckpointError, load_tensors
from ditkit.models.layers import TimestepEmbedder

TINY = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
DIFFUSERS_NUMERICS = {"timestep_freq_shift": 1, "mlp_norm_eps": 1e-5}


pytestmark = pytest.mark.usefixtures("one_thread")


def _random(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (the adaLN-Zero zeros would make parity checks vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim > 1 else 0.05))
    return model.eval()


def _inputs(cfg=TINY, n=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, cfg.in_channels, *cfg.hw, generator=g)
    t = torch.tensor([0, 1, 250, 999][:n])
    y = torch.tensor([0, 3, 9, cfg.num_classes][:n])  # the last is the null (guidance) class
    return x, t, y


def _diffusers_model(out_channels=8, norm_eps=1e-5, tie=True, seed=0):
    """A random DiTTransformer2DModel as diffusers makes it; ``tie`` copies block 0's embedders into every
    block, as diffusers' conversion script does (a freshly initialised one has independent copies)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    d = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                        out_channels=out_channels, num_layers=2, sample_size=8, patch_size=2,
                                        num_embeds_ada_norm=10, norm_eps=norm_eps)
    _random(d, seed)
    if tie:
        sd = d.state_dict()
        with torch.no_grad():
            for k, v in sd.items():
                if ".norm1.emb." in k and not k.startswith("transformer_blocks.0."):
                    v.copy_(sd["transformer_blocks.0." + k.split(".", 2)[2]])
    return d


def _diffusers_forward(d, x, t, y):
    with torch.inference_mode():
        return d(x, timestep=t, class_labels=y, return_dict=False)[0]


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- numerics options


def test_numerics_options_default_to_the_reference():
    cfg = DiTConfig()
    assert cfg.timestep_freq_shift == 0 and cfg.mlp_norm_eps is None
    model = DiT(TINY)
    assert model.t_embedder.freq_shift == 0 and all(b.norm2.eps == 1e-6 for b in model.blocks)
    with pytest.raises(ValueError, match="timestep_freq_shift"):
        DiTConfig(timestep_freq_shift=128)


def test_numerics_options_reproduce_diffusers_components_exactly():
    diffusers = pytest.importorskip("diffusers")
    t = torch.tensor([0.0, 1.0, 250.0, 999.0])
    theirs = diffusers.models.embeddings.Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)(t)
    assert torch.equal(TimestepEmbedder.timestep_features(t, 256, freq_shift=1), theirs)
    assert not torch.allclose(TimestepEmbedder.timestep_features(t, 256), theirs, atol=1e-3)  # /128 vs /127
    model = DiT(TINY.replace(mlp_norm_eps=1e-5))
    assert all((b.norm1.eps, b.norm2.eps) == (1e-6, 1e-5) for b in model.blocks)
    assert model.final_layer.norm_final.eps == 1e-6


# ----------------------------------------------------------------------------- key table


def test_key_table_covers_ditkit_and_diffusers_state_dicts():
    model = DiT(TINY)
    table = diffusers_key_table(TINY.depth)
    assert sorted(ours for ours, _, _ in table) == sorted(model.state_dict())
    theirs = [k for _, _, keys in table for k in keys]
    assert len(theirs) == len(set(theirs))
    d = pytest.importorskip("diffusers").DiTTransformer2DModel(**diffusers_config(TINY, allow_numerics_change=True))
    expected = d.state_dict()
    assert set(theirs) == set(expected)
    mapped = to_diffusers_state_dict(_random(model).state_dict(), TINY.depth)
    assert all(mapped[k].shape == v.shape for k, v in expected.items())
    sd, dim = model.state_dict(), TINY.hidden_size
    assert torch.equal(mapped["transformer_blocks.1.attn1.to_k.weight"], sd["blocks.1.attn.qkv.weight"][dim:2 * dim])
    assert torch.equal(mapped["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"],
                       sd["y_embedder.embedding_table.weight"])


def test_unmappable_configs_and_keys_are_rejected():
    for change, word in [({"qk_norm": True}, "qk_norm"), ({"use_rope": True}, "use_rope"),
                         ({"input_size": (8, 16)}, "non-square"), ({"class_dropout_prob": 0.0}, "null row")]:
        with pytest.raises(ValueError, match=word):
            diffusers_config(TINY.replace(**change), allow_numerics_change=True)
    with pytest.raises(CheckpointError, match="q_norm"):
        to_diffusers_state_dict({"blocks.0.attn.q_norm.weight": torch.ones(16)}, 1)


def test_export_refuses_reference_numerics_unless_allowed(tmp_path):
    model = DiT(TINY)  # reference numerics: frequencies /128
    with pytest.raises(ValueError, match="allow_numerics_change.*") as e:
        export_diffusers(model, tmp_path / "d")
    assert "timestep_freq_shift" in str(e.value) and not (tmp_path / "d").exists()
    export_diffusers(model, tmp_path / "d", allow_numerics_change=True)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["norm_eps"] == 1e-6  # the pre-MLP eps is carried over exactly; only the divisor changes
    assert config_from_diffusers(config) == TINY.replace(timestep_freq_shift=1)


# ----------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize(("out_channels", "norm_eps"), [(8, 1e-5), (4, 1e-5), (8, 1e-6)])
def test_import_of_a_diffusers_made_model_matches_diffusers_forward_1e_5(tmp_path, out_channels, norm_eps):
    d = _diffusers_model(out_channels=out_channels, norm_eps=norm_eps)
    d.save_pretrained(tmp_path / "d")
    model = import_diffusers(tmp_path / "d")  # reads the two files, no diffusers involved
    cfg = model.config
    assert (cfg.timestep_freq_shift, cfg.learn_sigma) == (1, out_channels == 8)
    assert cfg.mlp_norm_eps == (None if norm_eps == 1e-6 else norm_eps)
    x, t, y = _inputs()
    with torch.inference_mode():
        ours = model(x, t, y)
    theirs = _diffusers_forward(d, x, t, y)
    assert theirs.abs().max() > 0.5
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    _assert_same_tensors(model, from_diffusers_model(d))  # the in-memory path reads the same


def test_reference_numerics_model_differs_from_diffusers_only_through_the_options():
    """A reference-numerics ditkit model and its diffusers export agree at t = 0 (the divisor does not matter
    there) and differ at large t; switching on timestep_freq_shift=1 closes the gap to 1e-5."""
    model = _random(DiT(TINY))
    d = to_diffusers_model(model, allow_numerics_change=True)
    x, t, y = _inputs()
    with torch.inference_mode():
        ours = model(x, t, y)
    theirs = _diffusers_forward(d, x, t, y)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-5)
    assert (ours[3] - theirs[3]).abs().max() > 1e-2
    shifted = DiT(TINY.replace(timestep_freq_shift=1))
    shifted.load_state_dict(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(shifted.eval()(x, t, y), theirs, rtol=0, atol=1e-5)


def test_export_writes_diffusers_own_save_pretrained_layout(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    model = _random(DiT(TINY.replace(**DIFFUSERS_NUMERICS)))
    export_diffusers(model, tmp_path / "ours", extra={"note": "kept"})
    loaded = diffusers.DiTTransformer2DModel.from_pretrained(tmp_path / "ours")
    loaded.save_pretrained(tmp_path / "theirs")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(p.name for p in (tmp_path / "theirs").iterdir())
    ours_cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    theirs_cfg = json.loads((tmp_path / "theirs" / "config.json").read_text())
    theirs_cfg.pop("_name_or_path")  # diffusers records where it loaded from
    # "_ditkit" is a private key: diffusers does not pass it to __init__, and even keeps it on re-save
    assert ours_cfg.pop("_ditkit") == theirs_cfg.pop("_ditkit") == {"note": "kept"}
    assert ours_cfg == theirs_cfg
    a, b = load_tensors(tmp_path / "ours" / WEIGHTS_NAME), load_tensors(tmp_path / "theirs" / WEIGHTS_NAME)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, t, y = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(model(x, t, y), _diffusers_forward(loaded, x, t, y), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("numerics", [DIFFUSERS_NUMERICS, {"timestep_freq_shift": 1}])
def test_round_trip_ditkit_diffusers_ditkit_is_bit_exact(tmp_path, numerics):
    model = _random(DiT(TINY.replace(**numerics)))
    export_diffusers(model, tmp_path / "d")
    back = import_diffusers(tmp_path / "d")
    assert back.config == model.config
    _assert_same_tensors(model, back)


def test_round_trip_of_a_reference_model_keeps_every_tensor(tmp_path):
    model = _random(DiT(TINY.replace(learn_sigma=False)))
    export_diffusers(model, tmp_path / "d", allow_numerics_change=True)
    back = import_diffusers(tmp_path / "d")
    _assert_same_tensors(model, back)
    assert back.config == model.config.replace(timestep_freq_shift=1)  # what diffusers computes


def test_round_trip_through_diffusers_in_memory_is_bit_exact():
    model = _random(DiT(TINY.replace(**DIFFUSERS_NUMERICS)))
    _assert_same_tensors(model, from_diffusers_model(to_diffusers_model(model)))


def test_pipeline_root_and_sharded_weights_are_read(tmp_path):
    model = _random(DiT(TINY.replace(**DIFFUSERS_NUMERICS)))
    root = tmp_path / "pipe"
    export_diffusers(model, root / "transformer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    _assert_same_tensors(model, import_diffusers(root))

    from safetensors.torch import save_file

    folder = root / "transformer"
    sd = load_tensors(folder / WEIGHTS_NAME)
    keys = sorted(sd)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(folder / name))
    (folder / WEIGHTS_NAME).unlink()
    (folder / (WEIGHTS_NAME + ".index.json")).write_text(
        json.dumps({"weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    _assert_same_tensors(model, import_diffusers(folder))


# ----------------------------------------------------------------------------- errors


def _exported(tmp_path):
    model = _random(DiT(TINY.replace(**DIFFUSERS_NUMERICS)))
    return export_diffusers(model, tmp_path / "d")


def _rewrite_weights(folder, edit):
    from safetensors.torch import save_file

    sd = load_tensors(folder / WEIGHTS_NAME)
    edit(sd)
    save_file(sd, str(folder / WEIGHTS_NAME))


def test_differing_embedder_copies_are_refused(tmp_path):
    folder = _exported(tmp_path)

    def nudge(sd):
        sd["transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias"][0] += 1e-3

    _rewrite_weights(folder, nudge)
    with pytest.raises(CheckpointError, match=r"embedder copies differ \(transformer_blocks\.1\.norm1\.emb\.timestep"):
        import_diffusers(folder)


def test_untied_diffusers_model_is_refused(tmp_path):
    d = _diffusers_model(tie=False)
    d.save_pretrained(tmp_path / "d")
    with pytest.raises(CheckpointError, match="embedder copies differ"):
        import_diffusers(tmp_path / "d")


def test_missing_unexpected_and_misshapen_keys_are_clear_errors(tmp_path):
    folder = _exported(tmp_path)
    _rewrite_weights(folder, lambda sd: sd.pop("transformer_blocks.1.ff.net.2.bias"))
    with pytest.raises(CheckpointError, match=r"missing key\(s\): transformer_blocks\.1\.ff\.net\.2\.bias"):
        import_diffusers(folder)

    folder = _exported(tmp_path)
    _rewrite_weights(folder, lambda sd: sd.update({"transformer_blocks.2.attn1.to_q.weight": torch.zeros(32, 32)}))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\).*transformer_blocks\.2\.attn1\.to_q\.weight"):
        import_diffusers(folder)

    folder = _exported(tmp_path)
    _rewrite_weights(folder, lambda sd: sd.update({"proj_out_2.bias": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match=r"shape mismatch for final_layer\.linear\.bias: file \(7,\), config needs \(32,\)"):
        import_diffusers(folder)

    folder = _exported(tmp_path)  # the config disagrees with the weights
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_embeds_ada_norm": 20}))
    with pytest.raises(CheckpointError, match="shape mismatch for y_embedder.embedding_table.weight"):
        import_diffusers(folder)


def test_unsupported_configs_and_non_folders_are_clear_errors(tmp_path):
    folder = _exported(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "activation_fn": "geglu"}))
    with pytest.raises(CheckpointError, match="activation_fn='geglu' is not supported"):
        import_diffusers(folder)
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="not a diffusers DiTTransformer2DModel folder"):
        import_diffusers(folder)
    with pytest.raises(CheckpointError, match="not a diffusers"):
        import_diffusers(tmp_path / "nothing-here")
    with pytest.raises(CheckpointError, match="out_channels=5"):
        config_from_diffusers({**config, "out_channels": 5})


def test_folders_are_read_and_written_without_diffusers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    model = _random(DiT(TINY.replace(**DIFFUSERS_NUMERICS)))
    export_diffusers(model, tmp_path / "d")
    assert json.loads((tmp_path / "d" / "config.json").read_text())["_diffusers_version"] == LAYOUT_VERSION
    _assert_same_tensors(model, import_diffusers(tmp_path / "d"))
