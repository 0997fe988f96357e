"""Text-conditioned DiTs: the PixArt-α-style cross-attention DiT and the SD3-style MMDiT.

Shapes, padding masks (padded or changed padding tokens leave the output unchanged), classifier-free
guidance with the empty prompt, determinism, model folders with their text encoder, and the start
from a class-conditional DiT."""

import dataclasses

import pytest
import torch

import ditkit
from ditkit.config import TextDiTConfig, config_from_dict, get_preset
from ditkit.diffusion.guidance import cfg as cfg_wrapper
from ditkit.models.cross_dit import CrossDiT
from ditkit.models.dit import DiT
from ditkit.models.mmdit import MMDiT
from ditkit.models.text_dit import TextToImage, build_model, init_from_class_dit
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.pipelines import SamplingDefaults, load_pipeline, save_pipeline
from ditkit.shapes.prompts import shapes_vocabulary

ARCHS = ["pixart-tiny", "mmdit-tiny"]


def _model(preset: str, seed: int = 0, **changes):
    torch.manual_seed(seed)
    model = build_model(get_preset(preset).replace(**changes))
    for p in model.parameters():  # open the zero-initialised gates so every path matters
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def _inputs(n=2, length=5, text_dim=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=g)
    t = torch.rand(n, generator=g) * 1000
    text = torch.randn(n, length, text_dim, generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[1, 3:] = False  # the second prompt is shorter
    return x, t, text, mask


@pytest.mark.parametrize("preset", ARCHS)
def test_shapes_and_types(preset):
    model = _model(preset)
    assert isinstance(model, CrossDiT if preset.startswith("pixart") else MMDiT)
    x, t, text, mask = _inputs()
    out = model(x, t, text, mask)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    learned = _model(preset, learn_sigma=True)
    assert learned(x, t, text, mask).shape == (2, 8, 8, 8)
    rect = _model(preset, input_size=(8, 12))  # non-square latents
    assert rect(torch.randn(2, 4, 8, 12), t, text, mask).shape == (2, 4, 8, 12)
    with pytest.raises(ValueError, match="text-conditioned"):
        model(x, t)
    with pytest.raises(ValueError, match="at least one unmasked"):
        model(x, t, text, torch.zeros_like(mask))


@pytest.mark.parametrize("preset", ARCHS)
def test_padding_tokens_do_not_change_the_output(preset):
    model = _model(preset)
    x, t, text, mask = _inputs()
    with torch.no_grad():
        ref = model(x, t, text, mask)
        garbage = text.clone()
        garbage[1, 3:] = 100 * torch.randn_like(garbage[1, 3:])  # masked tokens of prompt 2
        torch.testing.assert_close(model(x, t, garbage, mask), ref, atol=1e-5, rtol=1e-5)
        longer = torch.cat([text, torch.randn(2, 4, 16)], dim=1)  # 4 more padding tokens everywhere
        longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(model(x, t, longer, longer_mask), ref, atol=1e-5, rtol=1e-5)
        alone = model(x[1:], t[1:], text[1:, :3], mask[1:, :3])  # the short prompt unpadded, batch of one
        torch.testing.assert_close(alone, ref[1:], atol=1e-5, rtol=1e-5)
        real = text.clone()
        real[1, 1] += 1.0  # a real token does matter
        assert not torch.allclose(model(x, t, real, mask)[1], ref[1], atol=1e-4)


@pytest.mark.parametrize("preset", ARCHS)
def test_determinism_and_gradients_reach_the_text(preset):
    a, b = build_model(get_preset(preset)), build_model(get_preset(preset))
    torch.manual_seed(3)
    a = build_model(get_preset(preset))
    torch.manual_seed(3)
    b = build_model(get_preset(preset))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x, t, text, mask = _inputs()
    model = _model(preset)
    with torch.no_grad():
        assert torch.equal(model(x, t, text, mask), model(x, t, text, mask))
    text = text.clone().requires_grad_(True)
    model(x, t, text, mask).square().sum().backward()
    assert text.grad[0].abs().sum() > 0 and text.grad[1, 3:].abs().sum() == 0  # padding gets no gradient


def test_mmdit_last_block_drops_the_text_stream():
    model = _model("mmdit-tiny")
    last, first = model.blocks[-1], model.blocks[0]
    assert last.attn.proj_context is None and not hasattr(last, "mlp_context")
    assert last.adaLN_modulation_context[-1].out_features == 2 * 32
    assert first.attn.proj_context is not None and first.adaLN_modulation_context[-1].out_features == 6 * 32
    # every parameter is used (DDP requires it): one backward reaches all of them
    model(*_inputs()).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cross_dit_adaln_single_shares_one_timestep_mlp():
    model = _model("pixart-tiny")
    names = [n for n, _ in model.named_parameters()]
    assert not any("adaLN_modulation" in n for n in names)  # no per-block MLPs
    assert sum(n.endswith("scale_shift_table") for n in names) == model.config.depth + 1
    c = model.condition(torch.tensor([10.0, 900.0]))
    assert c.emb.shape == (2, 32) and c.mod.shape == (2, 6, 32)
    fresh = build_model(get_preset("pixart-tiny"))  # cross-attention starts closed
    assert all(b.cross_attn.proj.weight.abs().sum() == 0 for b in fresh.blocks)


@pytest.mark.parametrize("preset", ARCHS)
def test_guidance_with_the_empty_prompt(preset):
    model = _model(preset)
    enc = WordTextEncoder(WordEncoderConfig(dim=16, depth=1), shapes_vocabulary()).eval()
    x, t, _, _ = _inputs()
    with torch.no_grad():
        tokens, mask = enc.encode(["a small red triangle on a green background", "a blue star", ""])
        cond_t, cond_m, null_t, null_m = tokens[:2], mask[:2], tokens[2:], mask[2:]
        guided = cfg_wrapper(model, 3.0, null_cond={"text": null_t, "text_mask": null_m})
        out = guided(x, t, text=cond_t, text_mask=cond_m)
        cond = model(x, t, cond_t, cond_m)
        uncond = model(x, t, null_t.expand(2, -1, -1), null_m.expand(2, -1))
        torch.testing.assert_close(out, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
        assert torch.equal(cfg_wrapper(model, 1.0, null_cond={"text": null_t, "text_mask": null_m})(
            x, t, text=cond_t, text_mask=cond_m), cond)
    with pytest.raises(ValueError, match="exactly one"):
        cfg_wrapper(model, 2.0)


def test_configs_roundtrip_and_validate():
    for name in ("pixart-tiny", "mmdit-tiny", "shapes-t2i", "shapes-t2i-mmdit"):
        cfg = get_preset(name)
        assert isinstance(cfg, TextDiTConfig) and config_from_dict(cfg.to_dict()) == cfg
    assert type(config_from_dict(get_preset("shapes-tiny").to_dict())) is ditkit.DiTConfig
    big = get_preset("shapes-t2i")
    assert (big.input_size, big.patch_size, big.in_channels, big.hidden_size, big.depth) == (8, 1, 4, 192, 8)
    with pytest.raises(ValueError, match="arch"):
        get_preset("pixart-tiny").replace(arch="unet")
    with pytest.raises(ValueError, match="no classes"):
        get_preset("pixart-tiny").replace(num_classes=10)


@pytest.mark.parametrize("preset", ARCHS)
def test_model_folder_with_text_encoder(preset, tmp_path):
    model = _model(preset)
    torch.manual_seed(4)
    enc = WordTextEncoder(WordEncoderConfig(dim=16, depth=1), shapes_vocabulary()).eval()
    save_pipeline(tmp_path / "m", model, ditkit.FlowMatching(), text_encoder=enc,
                  defaults=SamplingDefaults(steps=3, cfg_scale=2.0))
    assert (tmp_path / "m" / "text_encoder" / "vocab.json").is_file()
    pipe = load_pipeline(tmp_path / "m")
    assert type(pipe.model) is type(model) and pipe.config == model.config
    prompts = ["a small red triangle on a green background", "a large blue star on a white background"]
    a = pipe.generate(prompts=prompts, seed=1, batch_size=2)
    b = pipe.generate(prompts=prompts, seed=1, batch_size=1)
    assert a.shape == (2, 4, 8, 8)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, pipe.generate(prompts=prompts, seed=1, cfg_scale=1.0))
    assert not torch.allclose(a[:1], pipe.generate(prompts=prompts[1:], seed=1))
    with pytest.raises(ValueError, match="pass prompts"):
        pipe.generate(["circle"])
    with pytest.raises(ValueError, match="text encoder"):
        save_pipeline(tmp_path / "n", model, ditkit.FlowMatching())
    class_pipe = ditkit.Pipeline(DiT(get_preset("shapes-tiny")), ditkit.FlowMatching())
    with pytest.raises(ValueError, match="class-conditional"):
        class_pipe.generate(prompts=["a red circle"])


@torch.no_grad()
def test_cross_dit_from_a_class_model_reproduces_its_null_class_at_t_ref():
    dit_cfg = dataclasses.replace(get_preset("shapes-latent-mix"), hidden_size=32, depth=2, num_heads=2)
    torch.manual_seed(5)
    dit = DiT(dit_cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    text_cfg = get_preset("shapes-t2i").replace(hidden_size=32, depth=2, num_heads=2, text_dim=16)
    model = build_model(text_cfg).eval()  # fresh: the cross-attention output starts at zero
    names = init_from_class_dit(model, dit, t_ref=500.0)
    assert "blocks.1.attn.qkv.weight" in names and "t_block.1.weight" in names
    x = torch.randn(2, 4, 8, 8)
    text, mask = torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    t = torch.full((2,), 500.0)
    null = torch.full((2,), dit_cfg.num_classes)
    torch.testing.assert_close(model(x, t, text, mask), dit(x, t, null), atol=1e-5, rtol=1e-4)
    mm = build_model(text_cfg.replace(arch="mmdit"))
    assert "blocks.0.attn.image.qkv.weight" in init_from_class_dit(mm, dit)
    torch.testing.assert_close(mm.blocks[1].mlp.fc1.weight, dit.blocks[1].mlp.fc1.weight)
    with pytest.raises(ValueError, match="patch_size"):
        init_from_class_dit(build_model(get_preset("pixart-tiny")), dit)


def test_text_to_image_module_checks_widths():
    with pytest.raises(ValueError, match="text_dim"):
        TextToImage(WordTextEncoder(WordEncoderConfig(dim=8, depth=1), shapes_vocabulary()),
                    build_model(get_preset("pixart-tiny")))
