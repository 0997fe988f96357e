"""Latent diffusion: the shapes autoencoder (shapes, normalisation, files), a tiny latent training
run + export + generate, shape-mismatch errors, and the diffusers AutoencoderKL wrapper.

All models are tiny and untrained (widths 8, 32x32 images); the file takes a few seconds.
"""

import json

import pytest
import torch

from ditkit import FlowMatching, get_preset
from ditkit.io.checkpoint import CheckpointError
from ditkit.models.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    DiffusersVAE,
    LatentCodec,
    load_autoencoder,
    load_codec,
    save_autoencoder,
)
from ditkit.models.dit import DiT
from ditkit.pipelines import load_pipeline, save_pipeline
from ditkit.train.export import export_run
from ditkit.train.trainer import TrainConfig, Trainer

torch.set_num_threads(1)

TINY_AE = AutoencoderConfig(downsample=4, latent_channels=4, widths=(8, 8, 8), groups=4)
LATENT_DIT = get_preset("shapes-tiny").replace(input_size=8, patch_size=1, in_channels=4, hidden_size=32)


def tiny_ae(seed: int = 0, config: AutoencoderConfig = TINY_AE) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(config).eval()


@pytest.fixture
def ae_dir(tmp_path):
    path = tmp_path / "ae"
    save_autoencoder(path, tiny_ae())
    return path


def test_shapes_and_round_trip(tmp_path):
    ae = tiny_ae()
    assert isinstance(ae, LatentCodec) and ae.name == "ditkit-ae-f4c4"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8) and ae.latent_shape((32, 32)) == (4, 8, 8)
    assert ae.decode(z).shape == (2, 3, 32, 32)
    ae8 = Autoencoder(AutoencoderConfig(downsample=8, latent_channels=8, widths=(8, 8, 8, 8), groups=4))
    assert ae8.encode(x).shape == (2, 8, 4, 4) and ae8.latent_shape((32, 64)) == (8, 4, 8)
    with pytest.raises(ValueError, match="divisible"):
        ae.latent_shape((30, 32))
    with pytest.raises(ValueError, match="widths"):
        AutoencoderConfig(downsample=8, widths=(8, 8, 8))
    # files keep weights and statistics
    ae.latent_std.fill_(2.0)
    save_autoencoder(tmp_path / "ae", ae)
    back = load_autoencoder(tmp_path / "ae")
    assert back.config == ae.config and not any(p.requires_grad for p in back.parameters())
    torch.testing.assert_close(back.encode(x), ae.encode(x))
    with pytest.raises(CheckpointError, match="not a 'ditkit-autoencoder'"):
        info = json.loads((tmp_path / "ae" / "config.json").read_text())
        (tmp_path / "ae" / "config.json").write_text(json.dumps({**info, "kind": "other"}))
        load_autoencoder(tmp_path / "ae")


def test_latent_stats_applied_and_undone():
    from ditkit.shapes.data import ShapesDataset, to_tensor

    ae = tiny_ae()
    images = to_tensor(ShapesDataset(64, seed=5).materialize()[0])
    with torch.no_grad():
        raw = ae.encode_raw(images)
        mean, std = ae.set_latent_stats(images)
        torch.testing.assert_close(mean, raw.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)
        z = ae.encode(images)  # normalised: zero mean, unit std per channel
        torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3, rtol=0)
        torch.testing.assert_close(ae.decode(z), ae.decode_raw(raw), atol=1e-5, rtol=1e-4)  # decode undoes it


def test_latent_training_export_generate(tmp_path, ae_dir):
    cfg = TrainConfig(model=LATENT_DIT, steps=3, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, ckpt_every=3,
                      ema_decay=0.9, dataset_size=64, autoencoder=str(ae_dir))
    trainer = Trainer(cfg, tmp_path / "run", log=lambda *a: None, progress=False)
    x, _, noise, _, _ = trainer._batch(0)
    assert x.shape == (4, 3, 32, 32) and noise.shape == (4, 4, 8, 8)  # images in, latent-shaped noise
    assert trainer.run()["done"]
    out = tmp_path / "model"
    export_run(tmp_path / "run", out)
    assert (out / "autoencoder" / "model.safetensors").is_file()  # self-contained folder
    info = json.loads((out / "config.json").read_text())
    assert info["autoencoder"]["path"] == "autoencoder" and info["autoencoder"]["image_size"] == [32, 32]
    pipe = load_pipeline(out)
    assert pipe.codec is not None and pipe.codec.name == "ditkit-ae-f4c4"
    assert pipe.image_shape == (3, 32, 32) and pipe.config.hw == (8, 8)
    images = pipe.generate([0, 3, 7], steps=2, seed=1)
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1
    # the exported folder still works after the run's autoencoder has gone
    (ae_dir / "model.safetensors").unlink()
    assert load_pipeline(out).generate([1], steps=1).shape == (1, 3, 32, 32)
    # a resume with a different autoencoder is refused
    save_autoencoder(ae_dir, tiny_ae(seed=1))
    with pytest.raises(CheckpointError, match="different autoencoder"):
        Trainer(TrainConfig(**{**cfg.__dict__, "steps": 4}), tmp_path / "run", log=lambda *a: None,
                progress=False).run()


def test_shape_mismatch_errors(tmp_path, ae_dir):
    pixel = TrainConfig(model=get_preset("shapes-tiny"), steps=1, batch_size=2, autoencoder=str(ae_dir))
    with pytest.raises(ValueError, match=r"4 latent channels, but the model config expects in_channels=3"):
        Trainer(pixel, tmp_path / "run", progress=False)
    from ditkit.shapes.data import ShapesDataset

    latent = TrainConfig(model=LATENT_DIT, steps=1, batch_size=2, autoencoder=str(ae_dir))
    with pytest.raises(ValueError, match=r"maps 16x16 images to 4x4x4 latents.*input_size=8x8"):
        Trainer(latent, tmp_path / "run", dataset=ShapesDataset(8, image_size=16), progress=False)
    with pytest.raises(CheckpointError, match="no such autoencoder"):
        Trainer(TrainConfig(model=LATENT_DIT, autoencoder=str(tmp_path / "nope")), tmp_path / "run", progress=False)
    wrong = LATENT_DIT.replace(in_channels=8)
    with pytest.raises(ValueError, match="in_channels=8"):
        save_pipeline(tmp_path / "m", DiT(wrong), FlowMatching(), autoencoder=ae_dir)
    # a model folder whose autoencoder does not fit its DiT: one clear CheckpointError
    save_pipeline(tmp_path / "m", DiT(LATENT_DIT), FlowMatching(), autoencoder=ae_dir)
    save_autoencoder(tmp_path / "m" / "autoencoder", tiny_ae(config=AutoencoderConfig(
        downsample=4, latent_channels=3, widths=(8, 8, 8), groups=4)))
    with pytest.raises(CheckpointError, match="bad autoencoder"):
        load_pipeline(tmp_path / "m")


def test_latent_presets():
    from ditkit.models.autoencoder import resolve_codec_path
    from ditkit.train.presets import get_train_preset

    cfg = get_train_preset("shapes-latent")
    assert cfg.model == get_preset("shapes-latent") and cfg.model.num_tokens == 64
    assert cfg.autoencoder == "assets/shapes-ae"
    path = resolve_codec_path(cfg.autoencoder)  # the bundled assets/shapes-ae
    ae = load_codec(path)
    assert ae.latent_shape((32, 32)) == (cfg.model.in_channels, *cfg.model.hw)


def test_diffusers_vae(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5,
    )
    vae.save_pretrained(tmp_path / "vae")
    codec = load_codec(tmp_path / "vae")
    assert isinstance(codec, DiffusersVAE) and isinstance(codec, LatentCodec)
    assert codec.downsample == 2 and codec.latent_shape((32, 32)) == (4, 16, 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mode() * 0.5)  # scaling_factor from the config
        torch.testing.assert_close(codec.decode(z), vae.decode(z / 0.5).sample)
    # a latent DiT whose VAE stays outside its folder: config.json names it (no path), the caller gives it
    dit = DiT(LATENT_DIT.replace(input_size=16))
    save_pipeline(tmp_path / "m", dit, FlowMatching(), autoencoder=tmp_path / "vae", copy_autoencoder=False)
    assert not (tmp_path / "m" / "autoencoder").exists()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["autoencoder"]["path"] is None
    pipe = load_pipeline(tmp_path / "m")
    with pytest.raises(ValueError, match="use_vae"):  # never latents passed off as images
        pipe.generate([2, 5], steps=1)
    pipe.use_vae(tmp_path / "vae")
    assert pipe.generate([2, 5], steps=1).shape == (2, 3, 32, 32)


def test_quantized_and_pruned_latent_folders_keep_their_autoencoder(tmp_path, ae_dir, capsys):
    """`ditkit quantize` and `ditkit prune` of a latent model write folders that still decode to images."""
    from ditkit.cli import main

    torch.manual_seed(0)
    dit = DiT(LATENT_DIT.replace(depth=2))
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.02)
    save_pipeline(tmp_path / "m", dit, FlowMatching(), autoencoder=ae_dir)
    common = ["--model", str(tmp_path / "m"), "--threads", "1"]
    assert main(["quantize", *common, "--out", str(tmp_path / "q"), "--calib-samples", "2", "--calib-steps", "2"]) == 0
    assert main(["prune", *common, "--out", str(tmp_path / "p"), "--keep", "1", "--method", "importance",
                 "--calib-batches", "1", "--batch-size", "2"]) == 0
    capsys.readouterr()
    (ae_dir / "model.safetensors").unlink()  # the derived folders are self-contained
    for name in ("q", "p"):
        pipe = load_pipeline(tmp_path / name)
        assert pipe.codec is not None and pipe.image_shape == (3, 32, 32)
        assert pipe.generate([1, 2], steps=2).shape == (2, 3, 32, 32)
    assert load_pipeline(tmp_path / "q").info["kind"] == "ditkit-dit-quantized"
