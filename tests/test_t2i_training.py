"""Text-to-image training: a tiny text model trains on the shapes captions with caption dropout,
resumes exactly, exports a model folder (with its word encoder) that loads and generates from
prompts, also through `ditkit generate --prompt`; a class-conditional model folder can start it."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from resume_check import straight_and_resumed

from ditkit import FlowMatching, save_pipeline
from ditkit.cli import main
from ditkit.config import DiTConfig, TextDiTConfig
from ditkit.io.checkpoint import load_tensors
from ditkit.models.dit import DiT
from ditkit.models.text_dit import build_model
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.pipelines import SamplingDefaults, load_pipeline
from ditkit.shapes.data import ShapesDataset
from ditkit.shapes.prompts import shapes_vocabulary
from ditkit.train.export import export_run
from ditkit.train.presets import get_train_preset
from ditkit.train.trainer import TrainConfig, Trainer

MODEL = TextDiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                      learn_sigma=False, arch="cross", text_dim=16, caption_dropout_prob=0.25)
TRAIN = TrainConfig(model=MODEL, steps=4, batch_size=8, lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=2,
                    ema_decay=0.9, seed=3, text_encoder=WordEncoderConfig(dim=16, depth=1, num_heads=2))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def make_trainer(out_dir, dataset=None, **changes) -> Trainer:
    cfg = dataclasses.replace(TRAIN, **changes)
    return Trainer(cfg, out_dir, dataset=dataset or ShapesDataset(64, image_size=16), log=lambda *a: None,
                   progress=False)


def test_text_training_resumes_exactly(tmp_path: Path):
    straight, _ = straight_and_resumed(make_trainer, tmp_path)
    a = straight.model.state_dict()
    assert any(k.startswith("encoder.") for k in a) and any(k.startswith("dit.") for k in a)
    first = load_tensors(Path(tmp_path / "a") / "checkpoints" / "step_0000002" / "ema.safetensors")
    assert not torch.equal(first["encoder.token_embedding.weight"], a["encoder.token_embedding.weight"])  # it learns
    saved = TrainConfig.from_dict(json.loads((tmp_path / "a" / "train_config.json").read_text()))
    assert saved == straight.cfg and isinstance(saved.model, TextDiTConfig)


def test_captions_are_dropped_to_the_empty_prompt(tmp_path: Path):
    trainer = make_trainer(tmp_path / "r", model=dataclasses.replace(MODEL, caption_dropout_prob=0.5), batch_size=16)
    seen = []
    tokenize = trainer.model.encoder.tokenize
    trainer.model.encoder.tokenize = lambda prompts, **kw: (seen.extend(prompts), tokenize(prompts, **kw))[1]
    _, captions, _, _, drop = trainer._batch(0)
    trainer.train_step()
    assert len(seen) == 16 and 3 <= seen.count("") <= 13
    assert [p == "" for p in seen] == drop.bool().tolist()
    assert all(p == c for p, c in zip(seen, captions) if p)
    assert all(c.startswith("a ") and c.endswith(" background") for c in captions)


@pytest.mark.parametrize("arch", ["cross", "mmdit"])
def test_export_loads_and_generates_from_prompts(arch, tmp_path: Path):
    run = tmp_path / "run"
    make_trainer(run, model=dataclasses.replace(MODEL, arch=arch), steps=2).run()
    export_run(run, tmp_path / "model", defaults=SamplingDefaults(steps=2, cfg_scale=3.0))
    assert (tmp_path / "model" / "text_encoder" / "vocab.json").is_file()
    pipe = load_pipeline(tmp_path / "model")
    assert pipe.class_names == [] and pipe.text_encoder is not None
    images = pipe.generate(prompts=["a small red triangle on a green background", "a large blue star on a white background"])
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    # the exported encoder is the run's EMA encoder
    ema = load_tensors(run / "checkpoints" / "step_0000002" / "ema.safetensors")
    torch.testing.assert_close(pipe.text_encoder.token_embedding.weight, ema["encoder.token_embedding.weight"])
    if arch == "cross":  # the CLI: repeatable and |-separated prompts, one line on bad use
        out = tmp_path / "grid.png"
        rc = main(["generate", "--model", str(tmp_path / "model"), "--prompt", "a small red circle on a blue background|"
                   "a large green star on a black background", "--prompt", "a medium white heart on a red background",
                   "--n-per-class", "2", "--steps", "2", "--out", str(out), "--no-progress"])
        assert rc == 0 and out.is_file()
        assert main(["generate", "--model", str(tmp_path / "model"), "--out", str(out), "--no-progress"]) == 2
        # without --model, prompts go to the bundled text-to-image model, assets/shapes-t2i
        import shutil

        shutil.copytree(tmp_path / "model", tmp_path / "assets" / "shapes-t2i")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DITKIT_ASSETS", str(tmp_path / "assets"))
            assert main(["generate", "--prompt", "a small red circle on a blue background", "--n-per-class", "1",
                         "--steps", "1", "--out", str(tmp_path / "default.png"), "--no-progress"]) == 0


def test_cli_refuses_prompts_for_a_class_model(tiny_model_dir, tmp_path, capsys):
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompt", "a red circle", "--out", str(tmp_path / "x.png")])
    assert rc == 2 and "class-conditional" in capsys.readouterr().err


def test_start_from_a_class_conditional_model(tmp_path: Path):
    torch.manual_seed(0)
    trunk = {f.name: getattr(MODEL, f.name) for f in dataclasses.fields(DiTConfig)
             if f.name not in ("num_classes", "class_dropout_prob")}
    dit = DiT(DiTConfig(**{**trunk, "num_classes": 10, "class_dropout_prob": 0.1}))
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    save_pipeline(tmp_path / "class", dit, FlowMatching())
    trainer = make_trainer(tmp_path / "run", init_from=str(tmp_path / "class"), steps=1)
    trainer._init_from_class_model()
    got = trainer.model.dit.state_dict()
    for k in ("x_embedder.proj.weight", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "final_layer.linear.weight"):
        assert torch.equal(got[k], dit.state_dict()[k]), k
        assert torch.equal(trainer.ema.dit.state_dict()[k], dit.state_dict()[k]), k
    with pytest.raises(ValueError, match="class-conditional"):
        make_trainer(tmp_path / "bad", model=DiTConfig(**{**trunk, "num_classes": 10}), init_from=str(tmp_path / "class"))


def test_text_models_need_captions(tmp_path: Path):
    class NoCaptions(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3, 16, 16), 0

    with pytest.raises(ValueError, match="captions"):
        make_trainer(tmp_path / "r", dataset=NoCaptions())


def test_shapes_t2i_preset_takes_a_step(tmp_path: Path):
    cfg = dataclasses.replace(get_train_preset("shapes-t2i"), steps=1, batch_size=4, ckpt_every=1, warmup_steps=1)
    result = Trainer(cfg, tmp_path / "run", log=lambda *a: None, progress=False).run()
    assert result["done"]
    log = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[-1])
    assert log["step"] == 1 and log["loss"] == log["loss"]  # finite, not NaN


def test_eval_of_a_text_model_uses_held_out_captions_and_checks_colours(tmp_path: Path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL, input_size=32, patch_size=8)
    enc = WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), shapes_vocabulary())
    save_pipeline(tmp_path / "m", build_model(cfg), FlowMatching(), text_encoder=enc,
                  defaults=SamplingDefaults(steps=1, cfg_scale=2.0))
    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", str(tmp_path / "m"), "--num-samples", "10", "--reference-samples", "10",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 10 and len(result["per_class_accuracy"]) == 10
    assert set(result["colors"]) == {"foreground", "background", "both", "n"} and result["colors"]["n"] == 10


def test_bundled_text_to_image_model_loads_and_draws(tmp_path: Path):
    """assets/shapes-t2i: a cross-attention text DiT with its word encoder and autoencoder, fp16 on disk."""
    from ditkit.assets import default_text_model_dir

    pipe = load_pipeline(default_text_model_dir())
    assert isinstance(pipe.config, TextDiTConfig) and pipe.text_encoder is not None and pipe.codec is not None
    assert pipe.info["weights_dtype"] == "float16" and pipe.defaults.cfg_scale == 4.0
    size = sum(f.stat().st_size for f in default_text_model_dir().rglob("*") if f.is_file())
    assert size <= 25 * 2**20
    images = pipe.generate(prompts=["a large red star on a white background"], steps=2)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
