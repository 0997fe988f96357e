"""Paths inside a model folder, a run folder and a latent-cache manifest stay inside that folder (no absolute path,
no '..', no symlink out), and the working directory never changes which component a model folder loads."""

import json
import os
import shutil

import pytest
import torch
from video_tiny import tiny_video

from ditkit import FlowMatching, get_preset
from ditkit.data.latent_cache import LatentCacheDataset
from ditkit.io.checkpoint import CheckpointError, save_json, save_tensors
from ditkit.io.confined import confined_path, read_pointer
from ditkit.models.autoencoder import Autoencoder, AutoencoderConfig, save_autoencoder
from ditkit.models.dit import DiT
from ditkit.pipelines import load_pipeline, load_video_pipeline, save_pipeline, save_video_pipeline

TINY_AE = AutoencoderConfig(downsample=4, latent_channels=4, widths=(8, 8, 8), groups=4)
LATENT_DIT = get_preset("shapes-tiny").replace(input_size=8, patch_size=1, in_channels=4, hidden_size=32)


def test_confined_path_rules(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    m = tmp_path / "m"
    assert confined_path(m, "sub", "x", "f.json") == m / "sub"
    for bad, words in (("/etc", "absolute"), ("../outside", "'..'"), ("sub/../../outside", "'..'"), ("", "relative"),
                       (None, "relative"), (3, "relative"), ("C:\\x", "absolute")):
        with pytest.raises(CheckpointError, match=words):
            confined_path(m, bad, "autoencoder.path", "f.json")
    os.symlink(tmp_path / "outside", m / "link-out")
    os.symlink(m / "sub", m / "link-in")
    with pytest.raises(CheckpointError, match="outside.*symlink"):
        confined_path(m, "link-out", "autoencoder.path", "f.json")
    assert confined_path(m, "link-in", "x", "f.json") == m / "link-in"  # a symlink within the folder is fine


@pytest.fixture
def latent_dir(tmp_path):
    """A latent model folder with its own autoencoder/ (seed 0) and another autoencoder (seed 1) beside it."""
    torch.manual_seed(0)
    save_autoencoder(tmp_path / "ae0", Autoencoder(TINY_AE))
    torch.manual_seed(1)
    save_autoencoder(tmp_path / "ae1", Autoencoder(TINY_AE))
    save_pipeline(tmp_path / "m", DiT(LATENT_DIT), FlowMatching(), autoencoder=tmp_path / "ae0")
    return tmp_path / "m"


def _set_entry(folder, key, path):
    info = json.loads((folder / "config.json").read_text())
    info[key]["path"] = path
    (folder / "config.json").write_text(json.dumps(info))


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_a_model_folder_autoencoder_outside_the_folder_is_refused(latent_dir, where):
    other = latent_dir.parent / "ae1"
    if where == "symlink":
        shutil.rmtree(latent_dir / "autoencoder")
        os.symlink(other, latent_dir / "autoencoder")  # config.json still says "autoencoder"
    else:
        _set_entry(latent_dir, "autoencoder", str(other) if where == "absolute" else "../ae1")
    with pytest.raises(CheckpointError, match=r"config.json: autoencoder.path"):
        load_pipeline(latent_dir)


def test_the_working_directory_does_not_change_the_autoencoder(latent_dir, tmp_path, monkeypatch):
    cwd = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "ae1", cwd / "autoencoder")  # another autoencoder/ where the command runs
    monkeypatch.chdir(cwd)
    from safetensors.torch import load_file

    pipe = load_pipeline(latent_dir)

    want = load_file(str(latent_dir / "autoencoder" / "model.safetensors"))
    got = pipe.codec.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    not_this = load_file(str(cwd / "autoencoder" / "model.safetensors"))
    assert not all(torch.equal(got[k], not_this[k]) for k in not_this)
    # and a folder without its own autoencoder/ is refused rather than taking the working directory's
    shutil.rmtree(latent_dir / "autoencoder")
    with pytest.raises(CheckpointError, match="no such folder"):
        load_pipeline(latent_dir)


def test_the_bundled_assets_keep_loading():
    from ditkit.assets import assets_dir

    pipe = load_pipeline(assets_dir() / "shapes-dit")
    assert pipe.codec is not None and pipe.image_shape == (3, 32, 32)
    assert load_pipeline(assets_dir() / "shapes-t2i").text_encoder is not None


@pytest.mark.parametrize("path", ["/etc", "../../..", "../v2/text_encoder"])
def test_a_text_encoder_path_outside_the_folder_is_refused(tmp_path, path):
    pipe = tiny_video()
    save_video_pipeline(tmp_path / "v", pipe.model, pipe.process, pipe.text_encoder)
    _set_entry(tmp_path / "v", "text_encoder", path)
    with pytest.raises(CheckpointError, match="text_encoder.path"):
        load_video_pipeline(tmp_path / "v")


def test_a_text_encoder_symlinked_outside_is_refused(tmp_path):
    pipe = tiny_video()
    save_video_pipeline(tmp_path / "v", pipe.model, pipe.process, pipe.text_encoder)
    shutil.move(tmp_path / "v" / "text_encoder", tmp_path / "enc")
    os.symlink(tmp_path / "enc", tmp_path / "v" / "text_encoder")
    with pytest.raises(CheckpointError, match="symlink"):
        load_video_pipeline(tmp_path / "v")


def _cache(root, shard_name):
    root.mkdir(parents=True, exist_ok=True)
    save_tensors(root / "latents-00000.safetensors", {"latents": torch.zeros(2, 4, 8, 8), "labels": torch.zeros(2).long()})
    save_json(root / "manifest.json", {"kind": "ditkit-latent-cache", "format": 1, "latent_shape": [4, 8, 8],
                                       "shards": [{"file": shard_name, "start": 0, "count": 2}]})


@pytest.mark.parametrize("name,words", [("/etc/passwd", "absolute"), ("../x/latents-00000.safetensors", "'..'"),
                                        ("notes.txt", "not named like")])
def test_latent_cache_shards_stay_in_the_cache(tmp_path, name, words):
    _cache(tmp_path / "x", "latents-00000.safetensors")
    assert len(LatentCacheDataset(tmp_path / "x")) == 2
    _cache(tmp_path / "c", name)
    with pytest.raises(CheckpointError, match=words):
        LatentCacheDataset(tmp_path / "c")


def test_a_latent_cache_shard_symlinked_outside_is_refused(tmp_path):
    _cache(tmp_path / "x", "latents-00000.safetensors")
    (tmp_path / "c").mkdir()
    os.symlink(tmp_path / "x" / "latents-00000.safetensors", tmp_path / "c" / "latents-00000.safetensors")
    save_json(tmp_path / "c" / "manifest.json", json.loads((tmp_path / "x" / "manifest.json").read_text()))
    with pytest.raises(CheckpointError, match="symlink"):
        LatentCacheDataset(tmp_path / "c")


@pytest.mark.parametrize("name", ["../../../../etc", "/etc", "step_1/../../.."])
def test_checkpoints_latest_stays_in_the_run(tmp_path, name):
    from ditkit.train.export import export_run
    from ditkit.train.trainer import TrainConfig, Trainer

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "latest").write_text(name + "\n")
    with pytest.raises(CheckpointError, match="latest"):
        read_pointer(ckpts / "latest", "the latest checkpoint")
    with pytest.raises(CheckpointError, match="latest"):
        export_run(tmp_path / "run", tmp_path / "out")
    trainer = Trainer(TrainConfig(model=get_preset("shapes-tiny").replace(depth=1), steps=1, batch_size=2),
                      tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="latest"):
        trainer.latest_checkpoint()
    assert not (tmp_path / "out").exists()
