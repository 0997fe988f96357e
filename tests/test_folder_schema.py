"""The model-folder schema: every config.json field a loader reads is checked (type, finiteness, range) before a model
is built, the weights are checked against the config from the safetensors header, and each failure is one line
naming the file and the field."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from video_tiny import save_tiny_video

from ditkit.io.checkpoint import CheckpointError
from ditkit.models.autoencoder import Autoencoder, AutoencoderConfig, load_autoencoder, save_autoencoder
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder, load_text_encoder, save_text_encoder
from ditkit.pipelines import load_pipeline, load_video_pipeline
from ditkit.pipelines.schema import check_fields, read_folder_spec


def _copy(src, dst, change=None):
    shutil.copytree(src, dst)
    if change is not None:
        info = json.loads((dst / "config.json").read_text())
        change(info)
        (dst / "config.json").write_text(json.dumps(info))
    return dst


def _set(path: str, value):
    """A change setting the dotted ``path`` of config.json to ``value``."""
    def change(info):
        *parents, last = path.split(".")
        d = info
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value
    return change


BAD_FIELDS = [  # (field, value, the words of the error)
    ("config.depth", 2.5, "config.depth must be a positive integer, got 2.5"),
    ("config.depth", None, "config.depth must be a positive integer, got None"),
    ("config.depth", [2], "config.depth must be a positive integer, got list"),
    ("config.num_heads", 0, "config.num_heads must be a positive integer"),
    ("config.patch_size", 0, "config.patch_size must be a positive integer"),
    ("config.hidden_size", 65, "not divisible by num_heads"),
    ("config.mlp_ratio", -1.0, "config.mlp_ratio must be a finite number > 0"),
    ("config.mlp_ratio", math.nan, "config.mlp_ratio must be a finite number > 0"),
    ("config.use_rope", "yes", "config.use_rope must be true or false"),
    ("config.learn_sigma", 1, "config.learn_sigma must be true or false"),
    ("config.norm_type", "batchnorm", "config.norm_type must be one of"),
    ("config.input_size", [32], "config.input_size must be a positive integer or a list"),
    ("config.colour", 3, "config.colour is not a DiTConfig field"),
    ("config", None, "config must be a JSON object"),
    ("class_names", "circle,square", "class_names must be a list of strings"),
    ("class_names", ["a", "a"], "class_names must be unique"),
    ("class_names", [f"c{i}" for i in range(20)], "class_names has 20 names, the config has num_classes=10"),
    ("sampling.sampler", "magic", "sampling.sampler must be one of"),
    ("sampling.steps", 0, "sampling.steps must be a positive integer"),
    ("sampling.steps", 1.5, "sampling.steps must be a positive integer"),
    ("sampling.cfg_scale", math.nan, "sampling.cfg_scale must be a finite number >= 0"),
    ("sampling.cfg_scale", math.inf, "sampling.cfg_scale must be a finite number >= 0"),
    ("sampling.cfg_scale", -2.0, "sampling.cfg_scale must be a finite number >= 0"),
    ("sampling.shift", 0.0, "sampling.shift must be a finite number > 0"),
    ("sampling.turbo", True, "sampling.turbo is not a SamplingDefaults field"),
    ("process.type", "rectified", "process.type must be 'flow' or 'gaussian'"),
    ("process.flow.time_scale", -1.0, "process.flow.time_scale must be a finite number > 0"),
    ("process.flow.sit_time", "no", "process.flow.sit_time must be true or false"),
    ("weights_dtype", "int32", "weights_dtype must be one of"),
    ("kind", "ditkit-something", "kind must be one of"),
    ("autoencoder.path", 3, "autoencoder.path must be null or a string"),
    ("autoencoder.image_size", [32, 0], "autoencoder.image_size must be null or a list of 2 positive integers"),
]


@pytest.mark.parametrize("field,value,words", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_FIELDS])
def test_bad_config_fields_are_one_line_naming_file_and_field(tiny_model_dir, tmp_path, field, value, words):
    folder = _copy(tiny_model_dir, tmp_path / "m", _set(field, value))
    with pytest.raises(CheckpointError) as e:
        load_pipeline(folder)
    msg = str(e.value)
    assert words in msg and f"{folder / 'config.json'}:" in msg and "\n" not in msg


def test_the_cli_reports_a_bad_field_in_one_line(tiny_model_dir, tmp_path, capsys):
    from ditkit.cli import main

    folder = _copy(tiny_model_dir, tmp_path / "m", _set("config.depth", 2.5))
    assert main(["generate", "--model", str(folder), "--classes", "circle", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.depth must be a positive integer, got 2.5" in err
    assert not (tmp_path / "o.png").exists()


def test_the_bundled_folders_pass_the_schema():
    from ditkit.assets import assets_dir

    for name in ("shapes-dit", "shapes-t2i", "shapes-t2v"):
        info = json.loads((assets_dir() / name / "config.json").read_text())
        spec = read_folder_spec(info, assets_dir() / name / "config.json")
        assert spec.defaults.steps > 0 and spec.autoencoder["path"] == "autoencoder"


def _rewrite_weights(folder, change):
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))


def test_integer_weights_are_refused_not_cast(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "m")
    _rewrite_weights(folder, lambda s: s.update({"x_embedder.proj.bias": s["x_embedder.proj.bias"].to(torch.int32)}))
    with pytest.raises(CheckpointError, match="x_embedder.proj.bias is stored as int32"):
        load_pipeline(folder)


def test_weights_are_checked_from_the_header_before_any_tensor_is_read(tiny_model_dir, tmp_path, monkeypatch):
    import ditkit.pipelines.folder as folder_format  # reads the weights (read_weights)
    import ditkit.pipelines.image as image

    folder = _copy(tiny_model_dir, tmp_path / "m", _set("config.hidden_size", 128))
    monkeypatch.setattr(folder_format, "load_tensors", lambda *a: pytest.fail("tensors read before the header check"))
    built = []
    real = image.build_model
    monkeypatch.setattr(image, "build_model", lambda cfg: built.append(torch.empty(0).device.type) or real(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_pipeline(folder)
    assert built == ["meta"]  # only the shapes, on the meta device: no memory


def test_nan_and_inf_weights_are_refused(tiny_model_dir, tmp_path):
    for bad in (math.nan, math.inf):
        folder = _copy(tiny_model_dir, tmp_path / f"m{bad}")
        _rewrite_weights(folder, lambda s, bad=bad: s["final_layer.linear.weight"].view(-1).__setitem__(0, bad))
        with pytest.raises(CheckpointError, match="final_layer.linear.weight holds NaN or Inf"):
            load_pipeline(folder)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "v"
    save_tiny_video(path)
    return path


@pytest.mark.parametrize("field,value,words", [
    ("config.num_frames", 0, "config.num_frames must be a positive integer"),
    ("config.attention", "sparse", "config.attention must be one of"),
    ("config.frame_embed", "true", "config.frame_embed must be true or false"),
    ("config.dit.depth", -1, "config.dit.depth must be a positive integer"),
    ("config.dit.mlp_ratio", math.inf, "config.dit.mlp_ratio must be a finite number > 0"),
    ("sampling.steps", 10 ** 9 + 0.5, "sampling.steps must be a positive integer"),
])
def test_video_folders_use_the_same_schema(video_dir, tmp_path, field, value, words):
    folder = _copy(video_dir, tmp_path / "v", _set(field, value))
    with pytest.raises(CheckpointError, match=words.replace("[", r"\[")):
        load_video_pipeline(folder)
    assert load_video_pipeline(video_dir).config.num_frames == 4


def test_text_encoder_and_autoencoder_configs_are_checked(tmp_path):
    enc = WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), ["red", "circle"])
    save_text_encoder(enc, tmp_path / "enc")
    assert load_text_encoder(tmp_path / "enc").text_dim == 16
    for field, value in (("dim", "16"), ("num_heads", 0), ("mlp_ratio", math.nan), ("max_length", 2.0)):
        _copy(tmp_path / "enc", tmp_path / f"enc-{field}", _set(f"config.{field}", value))
        with pytest.raises(CheckpointError, match=f"config.{field} must be"):
            load_text_encoder(tmp_path / f"enc-{field}")
    save_autoencoder(tmp_path / "ae", Autoencoder(AutoencoderConfig(widths=(8, 8, 8), groups=4)))
    for field, value in (("downsample", 3), ("widths", "8,8,8"), ("latent_l2", -1.0), ("groups", True)):
        _copy(tmp_path / "ae", tmp_path / f"ae-{field}", _set(f"config.{field}", value))
        with pytest.raises(CheckpointError, match=f"config.{field} must be"):
            load_autoencoder(tmp_path / f"ae-{field}")


def test_check_fields_names_nested_fields():
    from ditkit.models.video_dit import VideoDiTConfig

    words = r"^f.json: config.dit.use_rope must be true or false \(a JSON boolean\), got 'yes'$"
    with pytest.raises(CheckpointError, match=words):
        check_fields(VideoDiTConfig, {"dit": {"use_rope": "yes"}}, "f.json")


def test_writers_refuse_what_the_loader_would_refuse(tmp_path):
    from ditkit import DiT, FlowMatching, get_preset
    from ditkit.pipelines import SamplingDefaults, save_pipeline

    model = DiT(get_preset("shapes-tiny"))
    for defaults, words in ((SamplingDefaults(cfg_scale=math.nan), "sampling.cfg_scale"),
                            (SamplingDefaults(shift=-1.0), "sampling.shift"), (SamplingDefaults(steps=0), "sampling.steps")):
        with pytest.raises(CheckpointError, match=words):
            save_pipeline(tmp_path / "m", model, FlowMatching(), defaults=defaults)
        assert not (tmp_path / "m").exists()
    with pytest.raises(CheckpointError, match="class_names must be unique"):
        save_pipeline(tmp_path / "m", model, FlowMatching(), class_names=["a", "a"])


def test_a_pickled_text_encoder_is_one_error_and_never_runs(tmp_path):
    import os
    import pickle

    pytest.importorskip("transformers")

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "ran"),))

    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text(json.dumps(
        {"model_type": "t5", "d_model": 8, "num_layers": 1, "num_heads": 1, "d_kv": 8, "d_ff": 8, "vocab_size": 10}))
    (tmp_path / "enc" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(CheckpointError, match="cannot load a Hugging Face text encoder"):
        load_text_encoder(tmp_path / "enc")
    assert not (tmp_path / "ran").exists()


def test_quantized_layer_specs_are_checked(tmp_path):
    from ditkit import DiT, FlowMatching, get_preset
    from ditkit.compress import quantize_model
    from ditkit.compress.files import save_quantized

    qmodel, _ = quantize_model(DiT(get_preset("shapes-tiny")).eval(), "w8a16")
    save_quantized(tmp_path / "q", qmodel, FlowMatching())
    assert load_pipeline(tmp_path / "q").info["kind"] == "ditkit-dit-quantized"
    layer = next(iter(json.loads((tmp_path / "q" / "config.json").read_text())["quantization"]["layers"]))
    for field, value in (("in_features", 2.5), ("bias", "yes"), ("type", "w2a2")):
        _copy(tmp_path / "q", tmp_path / field,
              lambda info, f=field, v=value: info["quantization"]["layers"][layer].update({f: v}))
        with pytest.raises(CheckpointError, match=f"quantization.layers.{layer}.{field} must be".replace(".", r"\.")):
            load_pipeline(tmp_path / field)
