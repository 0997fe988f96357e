"""Latent caches: `ditkit encode` with a tiny diffusers AutoencoderKL (sd-vae-ft-ema layout, built here),
training from ``latents:DIR``, `ditkit generate --vae`, resumption and one-line errors.

The VAE is untrained (widths 8, f=4: 32x32 shapes -> 4x8x8 latents); the file takes a few seconds.
"""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ditkit import get_preset
from ditkit.cli import main
from ditkit.data.latent_cache import EncodeConfig, LatentCacheDataset, encode_dataset
from ditkit.io.checkpoint import CheckpointError
from ditkit.models.autoencoder import DiffusersVAE
from ditkit.pipelines import load_pipeline
from ditkit.shapes.data import CLASSES, ShapesDataset
from ditkit.train.export import export_run
from ditkit.train.trainer import TrainConfig, Trainer

diffusers = pytest.importorskip("diffusers")

LATENT_DIT = get_preset("shapes-tiny").replace(input_size=8, patch_size=1, in_channels=4, hidden_size=32)
SCALE = 0.5


def make_vae(path, seed=0, latent_channels=4):
    """A tiny AutoencoderKL saved as config.json + diffusion_pytorch_model.safetensors."""
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, sample_size=32, scaling_factor=SCALE,
    )
    vae.save_pretrained(path)
    return vae.eval()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory, one_thread):
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    make_vae(path)
    assert (path / "config.json").is_file() and (path / "diffusion_pytorch_model.safetensors").is_file()
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def encode_cli(capsys, vae, out, *extra):
    return run(capsys, "encode", "--data", "shapes", "--vae", vae, "--out", out, "--num", 10, "--shard-size", 4,
               "--batch-size", 4, "--quiet", *extra)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, vae_dir):
    """`ditkit encode` of 10 shapes in shards of 4: (cache folder, exit code, stdout, stderr)."""
    cache = tmp_path_factory.mktemp("encoded") / "cache"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in ("encode", "--data", "shapes", "--vae", vae_dir, "--out", cache, "--num", 10,
                                      "--shard-size", 4, "--batch-size", 4, "--quiet")])
    return cache, code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoded):
    """Two training steps from the cache, exported: (trainer, its run() result, model folder)."""
    cache = encoded[0]
    root = tmp_path_factory.mktemp("latent-run")
    cfg = TrainConfig(model=LATENT_DIT, dataset=f"latents:{cache}", steps=2, batch_size=4, warmup_steps=1,
                      log_every=1, ckpt_every=2, ema_decay=0.9)
    trainer = Trainer(cfg, root / "run", log=lambda *a: None, progress=False)
    result = trainer.run()
    export_run(root / "run", root / "model")
    return trainer, result, root / "model"


def test_encode_writes_shards_and_a_manifest(encoded, vae_dir):
    cache, code, out, err = encoded
    assert code == 0, err
    assert "10 latents 4x8x8 of shapes" in out and f"latents:{cache}" in out
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["latent_shape"] == [4, 8, 8] and manifest["num_latents"] == 10
    assert manifest["vae"]["scale"] == {"scaling_factor": SCALE, "shift_factor": 0.0}
    assert manifest["vae"]["path"] == str(vae_dir.resolve()) and manifest["source"]["type"] == "shapes"
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2] and manifest["class_names"] == list(CLASSES)


def test_cached_latents_are_the_vae_posterior_mode_times_its_scale(encoded, vae_dir):
    # the cached latents are the VAE's posterior mode times its scale factor, labels those of the data
    ds = LatentCacheDataset(encoded[0])
    images, labels = zip(*(ShapesDataset(10, seed=0)[i] for i in range(10)))
    vae = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():
        want = vae.encode(torch.stack(images)).latent_dist.mode() * SCALE
    torch.testing.assert_close(ds.latents, want, atol=1e-5, rtol=1e-4)
    assert ds.labels.tolist() == list(labels) and len(ds) == 10 and ds.latent_shape == (4, 8, 8)


def test_training_from_the_cache_takes_its_latents_and_its_vae(encoded, trained, vae_dir):
    # training steps from the cache: batches are the cached latents, no VAE in the loop
    trainer, result, model_dir = trained
    assert trainer.codec is None and trainer.cfg.autoencoder == str(vae_dir.resolve())
    x, y, noise, _, _ = trainer._batch(0)
    assert x.shape == noise.shape == (4, 4, 8, 8)
    ds = LatentCacheDataset(encoded[0])
    assert any(torch.equal(x[0], ds.latents[i]) for i in range(10))
    assert result["done"]
    pipe = load_pipeline(model_dir)  # the cache's VAE was copied in; class names came from the manifest
    assert isinstance(pipe.codec, DiffusersVAE) and pipe.class_names == list(CLASSES)


def test_generate_decodes_through_a_users_vae_folder(trained, tmp_path, capsys):
    # generate through a user's VAE folder: it, not the folder's own copy, decodes
    model_dir = trained[2]
    pipe = load_pipeline(model_dir)
    other = tmp_path / "other-vae"
    other_vae = make_vae(other, seed=1)
    own = pipe.generate([0, 3], steps=2, seed=1)
    pipe.use_vae(other)
    theirs = pipe.generate([0, 3], steps=2, seed=1)
    from ditkit.diffusion.sample import sample

    with torch.no_grad():
        z = sample(pipe.model, torch.tensor([0, 3]), process=pipe.process, steps=2, seed=1,
                   cfg_scale=pipe.defaults.cfg_scale)
        torch.testing.assert_close(theirs, other_vae.decode(z / SCALE).sample.clamp(-1, 1), atol=1e-5, rtol=1e-4)
    assert theirs.shape == (2, 3, 32, 32) and not torch.allclose(own, theirs)
    png = tmp_path / "grid.png"
    code, out, err = run(capsys, "generate", "--model", model_dir, "--vae", other, "--classes", "circle,star",
                         "--n-per-class", 1, "--steps", 2, "--out", png, "--no-progress")
    assert code == 0 and "wrote 2 samples" in out, err
    assert Image.open(png).mode == "RGB"


def test_encode_resumes_and_is_never_half_written(tmp_path, vae_dir, capsys, monkeypatch):
    calls, fail_at = [], [2]
    real = DiffusersVAE.encode

    def failing(self, x):
        calls.append(len(x))
        if len(calls) == fail_at[0]:
            raise KeyboardInterrupt  # the user stops the run while the second shard is encoded
        return real(self, x)

    monkeypatch.setattr(DiffusersVAE, "encode", failing)
    cfg = EncodeConfig(data="shapes", vae=str(vae_dir), out=str(tmp_path / "cache"), num=10, batch_size=4,
                       shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(cfg, log=lambda *a: None)
    cache = tmp_path / "cache"
    assert not (cache / "manifest.json").exists() and sorted(p.name for p in cache.iterdir()) == [
        "latents-00000.safetensors"]  # one whole shard, no temp files, no manifest
    with pytest.raises(CheckpointError, match="not a finished latent cache"):
        LatentCacheDataset(cache)
    with pytest.raises(ValueError, match="not a finished latent cache"):
        Trainer(TrainConfig(model=LATENT_DIT, dataset=f"latents:{cache}", steps=1, batch_size=2), tmp_path / "r",
                progress=False)

    first = (cache / "latents-00000.safetensors").stat().st_mtime_ns
    calls.clear()
    fail_at[0] = 0  # no failure this time
    manifest = encode_dataset(cfg, log=lambda *a: None)  # the same command again: finishes the cache
    assert calls == [4, 2] and manifest["reused_shards"] == 1
    assert (cache / "latents-00000.safetensors").stat().st_mtime_ns == first
    monkeypatch.setattr(DiffusersVAE, "encode", real)
    fresh = encode_dataset(EncodeConfig(**{**cfg.__dict__, "out": str(tmp_path / "fresh")}), log=lambda *a: None)
    assert fresh["key"] == manifest["key"]
    torch.testing.assert_close(LatentCacheDataset(cache).latents, LatentCacheDataset(tmp_path / "fresh").latents,
                               atol=0, rtol=0)


def test_a_finished_cache_is_kept_and_other_data_needs_overwrite(tmp_path, vae_dir, capsys):
    # a finished cache: the same command does nothing; other data needs --overwrite, which drops stale shards
    cache = tmp_path / "cache"
    assert encode_cli(capsys, vae_dir, cache)[0] == 0
    first = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    code, out, _ = encode_cli(capsys, vae_dir, cache)
    assert code == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == first  # nothing rewritten
    code, _, err = encode_cli(capsys, vae_dir, cache, "--seed", 1)
    assert code == 2 and "already holds a latent cache of other data" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "encode", "--data", "shapes", "--vae", vae_dir, "--out", cache, "--num", 3,
                       "--shard-size", 4, "--overwrite", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in cache.iterdir()) == ["latents-00000.safetensors", "manifest.json"]
    assert len(LatentCacheDataset(cache)) == 3


def test_image_folder_source(tmp_path, vae_dir):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{k}.png")
    m = encode_dataset(EncodeConfig(data=str(tmp_path / "imgs"), vae=str(vae_dir), out=str(tmp_path / "c"),
                                    image_size=16), log=lambda *a: None)
    assert m["latent_shape"] == [4, 4, 4] and m["class_names"] == ["cats", "dogs"] and m["source"]["type"] == "folder"
    assert LatentCacheDataset(tmp_path / "c").labels.tolist() == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, vae_dir):
    out = tmp_path_factory.mktemp("caches") / "c"
    encode_dataset(EncodeConfig(data="shapes", vae=str(vae_dir), out=str(out), num=4), log=lambda *a: None)
    return out


@pytest.mark.parametrize("argv,message", [
    (["encode", "--data", "{tmp}/nope", "--vae", "{vae}", "--out", "{tmp}/c"], "image folder not found"),
    (["encode", "--data", "shapes", "--vae", "{tmp}/nope", "--out", "{tmp}/c"], "no such autoencoder"),
    (["encode", "--data", "shapes", "--vae", "{vae}", "--out", "{tmp}", "--num", "2"], "not a latent cache folder"),
    (["encode", "--data", "shapes", "--vae", "{vae}", "--out", "{tmp}/c", "--image-size", "30"], "not divisible"),
    (["train", "--preset", "shapes-tiny", "--data", "latents:{cache}", "--out", "{tmp}/r", "--no-progress"],
     "holds 4x8x8 latents (channels x height x width), but the model config expects in_channels=3"),
    (["train", "--preset", "shapes-tiny", "--data", "latents:{tmp}/nope", "--out", "{tmp}/r"], "no such latent cache"),
    (["generate", "--model", "{pixel}", "--vae", "{vae}", "--steps", "1", "--out", "{tmp}/g.png"],
     "4 latent channels, but the model's in_channels is 3 (a pixel-space model needs no VAE)"),
    (["generate", "--model", "{pixel}", "--vae", "{tmp}", "--steps", "1", "--out", "{tmp}/g.png"],
     "config.json"),
])
def test_bad_input_is_one_line(tmp_path, vae_dir, cache_dir, tiny_model_dir, capsys, argv, message):
    (tmp_path / "notes.txt").write_text("a user's file")
    fill = {"tmp": tmp_path, "vae": vae_dir, "cache": cache_dir, "pixel": tiny_model_dir}
    code, _, err = run(capsys, *(a.format(**fill) for a in argv))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cache_checked_against_the_model_and_autoencoder(tmp_path, vae_dir, cache_dir):
    base = dict(dataset=f"latents:{cache_dir}", steps=1, batch_size=2)
    with pytest.raises(ValueError, match=r"labels up to \d, but the model config has num_classes=1"):
        Trainer(TrainConfig(model=LATENT_DIT.replace(num_classes=1), **base), tmp_path / "r", progress=False)
    make_vae(tmp_path / "v2", seed=3)
    with pytest.raises(ValueError, match="names a different autoencoder"):
        Trainer(TrainConfig(model=LATENT_DIT, autoencoder=str(tmp_path / "v2"), **base), tmp_path / "r", progress=False)
    wrong = tmp_path / "v8"
    make_vae(wrong, latent_channels=8)
    pipe = load_pipeline(export_dir(tmp_path, cache_dir))
    with pytest.raises(ValueError, match="8 latent channels, but the model's in_channels is 4$"):
        pipe.use_vae(wrong)


def export_dir(tmp_path, cache):
    cfg = TrainConfig(model=LATENT_DIT, dataset=f"latents:{cache}", steps=1, batch_size=2, warmup_steps=1,
                      ckpt_every=1)
    Trainer(cfg, tmp_path / "run", log=lambda *a: None, progress=False).run()
    export_run(tmp_path / "run", tmp_path / "model")
    return tmp_path / "model"
