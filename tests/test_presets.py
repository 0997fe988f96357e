"""The training recipes: each bundled model's recorded recipe is what its preset resolves to."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from ditkit.train.presets import TRAIN_PRESETS, get_train_preset, train_preset_names

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED = {"shapes-dit": "shapes-repa", "shapes-t2i": "shapes-t2i", "shapes-t2v": "shapes-t2v-pt2-motion-9k"}


def _subset_mismatches(recorded, resolved, prefix=""):
    """Keys of ``recorded`` (a JSON recipe) whose value differs in ``resolved``; fields added since are ignored."""
    if isinstance(recorded, dict):
        if not isinstance(resolved, dict):
            return [prefix or "."]
        return [m for k, v in recorded.items() for m in _subset_mismatches(v, resolved.get(k), f"{prefix}.{k}")]
    return [] if recorded == resolved else [prefix]


def test_registry_lists_the_bundled_recipes_the_latent_one_and_the_tiny_one():
    assert train_preset_names() == list(TRAIN_PRESETS)
    assert set(train_preset_names()) == {"shapes-tiny", "shapes-latent", *BUNDLED.values()}
    with pytest.raises(ValueError, match="choose one of shapes-tiny"):
        get_train_preset("nope")


@pytest.mark.parametrize("asset", sorted(BUNDLED))
def test_bundled_model_records_the_command_and_recipe_of_its_preset(asset):
    path = ASSETS / asset / "config.json"
    assert path.is_file(), f"assets/{asset} is bundled with the repository"
    training = json.loads(path.read_text())["training"]
    argv = shlex.split(training["command"])
    assert argv[:3] == ["ditkit", "train", "--preset"] and argv[3] == BUNDLED[asset]
    cfg = get_train_preset(argv[3])
    if "--init-from" in argv:
        cfg = dataclasses.replace(cfg, init_from=argv[argv.index("--init-from") + 1])
    resolved = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, as in the recorded recipe
    assert _subset_mismatches(training["recipe"], resolved) == []
    assert training["steps"] == cfg.steps


def test_key_fields_of_the_shipped_recipes():
    dit, t2i, t2v = (get_train_preset(n) for n in ("shapes-repa", "shapes-t2i", "shapes-t2v-pt2-motion-9k"))
    assert (dit.steps, dit.batch_size, dit.lr, dit.lr_schedule, dit.warmup_steps) == (10_000, 64, 1e-3, "cosine", 300)
    assert dit.model.depth == 8 and dit.model.mlp_type == "mixffn" and dit.repa.depth == 3
    assert dit.autoencoder == "assets/shapes-ae" and dit.flow.time_sampling == "logit_normal" and dit.text_encoder is None
    assert (t2i.steps, t2i.batch_size, t2i.lr, t2i.warmup_steps) == (4_000, 64, 5e-4, 200) and t2i.repa is None
    assert t2i.text_encoder.dim == t2i.model.text_dim == 128 and t2i.init_from is None
    assert (t2v.steps, t2v.batch_size, t2v.lr, t2v.ckpt_every) == (9_000, 16, 1e-3, 100)
    assert t2v.model == dit.model and t2v.text_encoder == t2i.text_encoder and t2v.init_from == "assets/shapes-t2i"
    assert t2v.flow.train_shift == 3.0
    v = t2v.video
    assert (v.temporal_patch, v.context_noise, v.motion_weight, v.frame_local_steps, v.caption_style) == (
        2, 0.2, 2.0, 1_000, "sized")
    assert v.frame_embed and v.cross_attention and v.motions.count("left") == 2 and v.motions.count("bounce") == 1
    latent = get_train_preset("shapes-latent")  # for `--data latents:DIR`: no REPA, the image recipe's schedule
    assert latent.repa is None and latent.autoencoder == dit.autoencoder and latent.steps == 12_000
