"""ditkit convert: format detection, every direction between reference / diffusers / ditkit, model cards, CLI.

Every conversion must keep every tensor bit-exact (torch.equal); numerics changes are refused without the flag.
"""

import argparse
import json
import os

import pytest
import torch

from ditkit import DiT, DiTConfig, FlowMatching, GaussianConfig, GaussianDiffusion, load_pipeline, save_pipeline
from ditkit.cli.interop import register
from ditkit.interop import convert, detect_format, export_diffusers, write_model_card
from ditkit.interop.model_card import model_card
from ditkit.io.checkpoint import CheckpointError, load_tensors, load_torch_file
from ditkit.models.reference import to_reference_state_dict
from ditkit.pipelines import SamplingDefaults

REF = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
DIFFUSERS_NUMERICS = {"timestep_freq_shift": 1, "mlp_norm_eps": 1e-5}
CLASSES = [f"class-{i}" for i in range(10)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _random(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _ditkit_folder(path, cfg=REF, process=None, seed=0):
    model = _random(DiT(cfg), seed)
    save_pipeline(path, model, process or FlowMatching(), class_names=CLASSES,
                  defaults=SamplingDefaults(sampler="heun", steps=12, cfg_scale=2.5, shift=3.0),
                  extra={"training": {"steps": 7, "training_minutes": 0.1, "samples_seen": 70}})
    return model


def _reference_pt(path, cfg=REF, seed=0):
    model = _random(DiT(cfg), seed)
    torch.save(to_reference_state_dict(model), path)
    return model


# ----------------------------------------------------------------------------- detection


def test_detect_format(tmp_path):
    _ditkit_folder(tmp_path / "k")
    model = _random(DiT(REF.replace(**DIFFUSERS_NUMERICS)))
    export_diffusers(model, tmp_path / "pipe" / "transformer")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    _reference_pt(tmp_path / "ref.pt")
    assert detect_format(tmp_path / "k") == "ditkit"
    assert detect_format(tmp_path / "k" / "model.safetensors") == "ditkit"
    assert detect_format(tmp_path / "pipe") == "diffusers"
    assert detect_format(tmp_path / "pipe" / "transformer") == "diffusers"
    assert detect_format(tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.safetensors") == "diffusers"
    assert detect_format(tmp_path / "ref.pt") == "reference"
    with pytest.raises(CheckpointError, match="no such file"):
        detect_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a ditkit model folder"):
        detect_format(tmp_path / "empty")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        detect_format(tmp_path / "w.ckpt")


# ----------------------------------------------------------------------------- reference


def test_reference_pt_to_ditkit_keeps_every_tensor_and_writes_a_card(tmp_path):
    model = _reference_pt(tmp_path / "ref.pt")
    result = convert(tmp_path / "ref.pt", tmp_path / "out", to="ditkit", num_heads=2)
    assert result["source_format"] == "reference" and result["parameters"] == model.num_parameters()
    pipe = load_pipeline(tmp_path / "out")
    assert pipe.config == REF and _same_tensors(pipe.model.state_dict(), model.state_dict())
    assert isinstance(pipe.process, GaussianDiffusion) and pipe.process.config == GaussianConfig(learn_sigma=True)
    assert (pipe.defaults.sampler, pipe.defaults.steps, pipe.defaults.cfg_scale) == ("ddpm", 250, 4.0)
    assert pipe.info["provenance"]["source_format"] == "reference"
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| parameters | {model.num_parameters():,} |" in card
    assert "converted from a reference checkpoint" in card and "These are the reference DiT's numerics" in card


def test_reference_training_checkpoint_uses_the_ema_weights(tmp_path):
    ema = _random(DiT(REF), seed=1)
    raw = _random(DiT(REF), seed=2)
    torch.save({"model": to_reference_state_dict(raw), "ema": to_reference_state_dict(ema), "opt": {},
                "args": argparse.Namespace(model="tiny", image_size=64, num_classes=10)}, tmp_path / "0001000.pt")
    convert(tmp_path / "0001000.pt", tmp_path / "out", to="ditkit", num_heads=2)
    assert _same_tensors(load_pipeline(tmp_path / "out").model.state_dict(), ema.state_dict())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_reference_pt_is_read_without_executing_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x_embedder.proj.weight": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        convert(tmp_path / "evil.pt", tmp_path / "out", to="ditkit")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_ditkit_to_reference_and_back_is_bit_exact(tmp_path, suffix):
    model = _ditkit_folder(tmp_path / "k", process=GaussianDiffusion())
    dst = tmp_path / f"ref{suffix}"
    result = convert(tmp_path / "k", dst, to="reference")
    assert result["notes"] == []
    sd = load_tensors(dst) if suffix == ".safetensors" else load_torch_file(dst)  # weights-only readable
    assert "pos_embed" in sd and "blocks.1.attn.qkv.weight" in sd
    convert(dst, tmp_path / "back", to="ditkit", num_heads=2)
    assert _same_tensors(load_pipeline(tmp_path / "back").model.state_dict(), model.state_dict())


def test_reference_target_refuses_diffusers_numerics_unless_allowed(tmp_path):
    model = _ditkit_folder(tmp_path / "k", cfg=REF.replace(**DIFFUSERS_NUMERICS))
    with pytest.raises(ValueError, match="allow_numerics_change"):
        convert(tmp_path / "k", tmp_path / "ref.safetensors", to="reference")
    result = convert(tmp_path / "k", tmp_path / "ref.safetensors", to="reference", allow_numerics_change=True)
    assert any("own numerics" in n for n in result["notes"]) and any("flow matching" in n for n in result["notes"])
    back = convert(tmp_path / "ref.safetensors", tmp_path / "back", to="ditkit", num_heads=2)
    assert back["format"] == "ditkit"
    assert _same_tensors(load_pipeline(tmp_path / "back").model.state_dict(), model.state_dict())


# ----------------------------------------------------------------------------- diffusers


def test_ditkit_to_diffusers_to_ditkit_restores_everything(tmp_path):
    """A flow-matching model with reference numerics: the diffusers export needs the flag, notes say what
    changes, and converting back restores tensors, process, class names and sampling defaults."""
    model = _ditkit_folder(tmp_path / "k")
    with pytest.raises(ValueError, match="allow_numerics_change"):
        convert(tmp_path / "k", tmp_path / "d", to="diffusers")
    assert not (tmp_path / "d").exists()
    result = convert(tmp_path / "k", tmp_path / "d", to="diffusers", allow_numerics_change=True)
    assert detect_format(tmp_path / "d") == "diffusers"
    assert any("timestep_freq_shift" in n for n in result["notes"])
    card = (tmp_path / "d" / "README.md").read_text()
    assert "diffusers `DiTTransformer2DModel` folder" in card and "> **Note.** diffusers computes" in card
    assert "Flow matching" in card and "`heun`, 12 steps, guidance scale 2.5, shift 3.0" in card

    convert(tmp_path / "d", tmp_path / "back", to="ditkit")
    pipe = load_pipeline(tmp_path / "back")
    assert _same_tensors(pipe.model.state_dict(), model.state_dict())
    assert pipe.config == REF.replace(timestep_freq_shift=1)  # what the diffusers folder computes
    assert isinstance(pipe.process, FlowMatching) and pipe.class_names == CLASSES
    assert pipe.defaults == SamplingDefaults(sampler="heun", steps=12, cfg_scale=2.5, shift=3.0)


def test_diffusers_numerics_model_round_trips_exactly_including_config(tmp_path):
    model = _ditkit_folder(tmp_path / "k", cfg=REF.replace(**DIFFUSERS_NUMERICS), process=GaussianDiffusion())
    result = convert(tmp_path / "k", tmp_path / "d", to="diffusers", dtype=torch.float32)
    assert result["notes"] == []
    convert(tmp_path / "d", tmp_path / "back", to="ditkit")
    pipe = load_pipeline(tmp_path / "back")
    assert pipe.config == model.config and _same_tensors(pipe.model.state_dict(), model.state_dict())


def test_diffusers_made_folder_converts_with_its_scheduler(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    model = _random(DiT(REF.replace(**DIFFUSERS_NUMERICS)))
    root = tmp_path / "pipe"
    from ditkit.interop import to_diffusers_model

    to_diffusers_model(model).save_pretrained(root / "transformer")
    diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    convert(root, tmp_path / "k", to="ditkit")
    pipe = load_pipeline(tmp_path / "k")
    assert pipe.process.config == GaussianConfig(learn_sigma=True)
    assert (pipe.defaults.sampler, pipe.defaults.steps) == ("ddim", 50)
    assert _same_tensors(pipe.model.state_dict(), model.state_dict())

    diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(
        root / "scheduler")
    convert(root, tmp_path / "k2", to="ditkit")
    assert load_pipeline(tmp_path / "k2").process.config == GaussianConfig(schedule="cosine", prediction="v")

    diffusers.DDIMScheduler(beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    with pytest.raises(CheckpointError, match="scaled_linear.*no ditkit equivalent"):
        convert(root, tmp_path / "k3", to="ditkit")


def test_diffusers_folder_without_scheduler_gets_the_dit_process_with_a_note(tmp_path):
    model = _random(DiT(REF.replace(**DIFFUSERS_NUMERICS)))
    export_diffusers(model, tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(  # as a plain diffusers export would be: no "_ditkit"
        json.dumps({k: v for k, v in json.loads((tmp_path / "d" / "config.json").read_text()).items() if k != "_ditkit"}))
    result = convert(tmp_path / "d", tmp_path / "k", to="ditkit")
    assert any("no process" in n for n in result["notes"])
    assert "> **Note.** the diffusers folder states no process" in (tmp_path / "k" / "README.md").read_text()


# ----------------------------------------------------------------------------- destinations


def test_destinations_are_checked(tmp_path):
    _ditkit_folder(tmp_path / "k")
    with pytest.raises(ValueError, match="same path"):
        convert(tmp_path / "k", tmp_path / "k", to="ditkit", overwrite=True)
    with pytest.raises(ValueError, match="unknown target format"):
        convert(tmp_path / "k", tmp_path / "x", to="onnx")
    with pytest.raises(ValueError, match="single .pt/.pth/.safetensors file"):
        convert(tmp_path / "k", tmp_path / "ref-folder", to="reference")
    convert(tmp_path / "k", tmp_path / "copy", to="ditkit")
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        convert(tmp_path / "k", tmp_path / "copy", to="ditkit")
    convert(tmp_path / "k", tmp_path / "copy", to="ditkit", overwrite=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no model"):
        convert(tmp_path / "k", tmp_path / "docs", to="ditkit", overwrite=True)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- model card, CLI


def test_model_card_is_deterministic_and_states_numerics(tmp_path):
    info = {"config": REF.replace(**DIFFUSERS_NUMERICS).to_dict(), "process": {"type": "gaussian", "gaussian": {}},
            "sampling": {"sampler": "ddim", "steps": 50, "cfg_scale": 4.0, "shift": 1.0}, "class_names": CLASSES,
            "format": "diffusers", "provenance": {"name": "tiny", "source_format": "ditkit", "source": "a/b"},
            "notes": ["read me"]}
    path = write_model_card(tmp_path, info)
    text = path.read_text()
    assert path.name == "README.md" and text == model_card(info)
    assert text.startswith("---\nlibrary_name: ditkit\n") and "# tiny" in text and "> **Note.** read me" in text
    assert f"| parameters | {DiT(REF).num_parameters():,} |" in text
    assert "exp(-ln(1e4) i / 127)" in text and "diffusers' DiTTransformer2DModel numerics" in text
    for section in ("## Model", "## Process", "## Numerics", "## Provenance", "## Config"):
        assert section in text
    ref_text = model_card({"config": REF.to_dict()})
    assert "exp(-ln(1e4) i / 128)" in ref_text and "reference DiT's numerics" in ref_text
    assert "Not recorded" in ref_text


def test_cli_convert(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="ditkit")
    register(parser.add_subparsers(dest="command", required=True))
    _reference_pt(tmp_path / "ref.pt")
    args = parser.parse_args(["convert", str(tmp_path / "ref.pt"), str(tmp_path / "out"), "--to", "ditkit",
                              "--num-heads", "2", "--dtype", "float16"])
    args.func(args)
    assert "converted reference -> ditkit" in capsys.readouterr().out
    pipe_info = json.loads((tmp_path / "out" / "config.json").read_text())
    assert pipe_info["weights_dtype"] == "float16" and "command" in pipe_info["provenance"]
    args = parser.parse_args(["convert", str(tmp_path / "out"), str(tmp_path / "d"), "--to", "diffusers"])
    with pytest.raises(ValueError, match="--allow-numerics-change"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "a", "b", "--to", "onnx"])
