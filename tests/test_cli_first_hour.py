"""What a new user meets first: --version, defaults in --help, train's presets and threads, default outputs
that stay out of assets/, and `ditkit info` on every model-folder kind."""

import argparse
import shutil

import pytest

import ditkit
from ditkit.assets import default_text_model_dir, default_video_model_dir
from ditkit.cli import build_parser, main
from ditkit.cli_types import in_assets
from ditkit.train.presets import train_preset_names

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _subparsers(parser):
    """Every (name, parser) below ``parser``, the video modes included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                if getattr(sub, "video", None) is not None:
                    yield f"{name} --video", sub.video
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ditkit {ditkit.__version__}"


def test_help_shows_every_default():
    names = []
    for name, sub in _subparsers(build_parser()):
        names.append(name)
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            shown = action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings
            if shown and action.help is not argparse.SUPPRESS:
                said = f"default: {action.default}" in text or "default" in (action.help or "")
                assert said, (name, action.option_strings)
    assert {"generate", "generate --video", "eval --video", "train", "quantize", "bench accel"} <= set(names)


def test_train_lists_its_presets(capsys):
    code, out, _ = run(capsys, "train", "--list-presets")
    assert code == 0
    assert [line.split()[0] for line in out.strip().splitlines()] == train_preset_names()
    assert "steps of batch" in out
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert all(name in help_text for name in train_preset_names()) and "--threads" in help_text


def test_train_needs_a_known_preset(capsys):
    code, _, err = run(capsys, "train")
    assert code == 2 and len(err.strip().splitlines()) == 1 and train_preset_names()[0] in err
    code, _, err = run(capsys, "train", "--preset", "no-such-recipe")
    assert code == 2 and len(err.strip().splitlines()) == 1 and all(n in err for n in train_preset_names())


def test_train_takes_threads(tmp_path, monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        code, out, err = run(capsys, "train", "--preset", "shapes-tiny", "--steps", "1", "--threads", "1",
                             "--out", str(tmp_path / "run"), "--no-progress")
        assert code == 0, err
        assert torch.get_num_threads() == 1 and "finished: step 1/1" in out
    finally:
        torch.set_num_threads(before)


def test_quantize_default_out_is_beside_the_current_directory(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["quantize", "--model", str(tiny_model_dir), "--calib-samples", "0"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "tiny-w8a8" / "model.safetensors").is_file() and "wrote tiny-w8a8" in out
    code, _, err = run(capsys, *argv)  # never replaced silently
    assert code == 2 and "tiny-w8a8 exists: give --overwrite" in err and len(err.strip().splitlines()) == 1
    assert run(capsys, *argv, "--overwrite")[0] == 0
    code, _, err = run(capsys, *argv, "--scheme", "w4a8", "--out", "tiny-w8a8")  # an explicit --out alike
    assert code == 2 and "exists" in err


def test_no_default_output_is_in_assets(tiny_model_dir, tmp_path, monkeypatch, capsys):
    args = build_parser().parse_args(["train-classifier"])
    assert args.out == "classifier" and not in_assets(args.out)
    # calibrate-teacache on the bundled model: its shipped teacache.json stays as it is
    assets = tmp_path / "assets"
    shutil.copytree(tiny_model_dir, assets / "shapes-dit")
    monkeypatch.setenv("DITKIT_ASSETS", str(assets))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "calibrate-teacache", "--steps", "3", "--num-samples", "2", "--batch-size", "2",
                         "--seeds", "5", "--degree", "1")
    assert code == 0, err
    assert (tmp_path / "shapes-dit-teacache.json").is_file() and not (assets / "shapes-dit" / "teacache.json").exists()
    assert "--teacache shapes-dit-teacache.json" in out
    code, _, err = run(capsys, "calibrate-teacache", "--model", str(tmp_path / "mine"), "--steps", "3")
    assert code == 2  # a user's folder: must exist (its fit goes to <model>/teacache.json)


def _info(capsys, folder) -> str:
    code, out, err = run(capsys, "info", "--model", str(folder))
    assert code == 0, err
    return out


def test_info_reads_every_folder_kind(tiny_model_dir, tmp_path, capsys):
    out = _info(capsys, tiny_model_dir)
    assert "kind:             class-conditional" in out and "64 tokens" in out and "GFLOPs per image" in out
    out = _info(capsys, default_text_model_dir())
    assert "text-to-image" in out and "in the text encoder" in out and "GFLOPs" in out
    out = _info(capsys, default_video_model_dir())
    assert "text-to-video" in out and "256 tokens per window" in out and "GFLOPs per window of 8 frames" in out
    assert main(["quantize", "--model", str(tiny_model_dir), "--out", str(tmp_path / "q"), "--calib-samples", "0",
                 "--scheme", "w4a8", "--group-size", "64"]) == 0
    out = _info(capsys, tmp_path / "q")
    assert "quantized w4a8" in out and "GFLOPs per image" in out
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "p"), "--keep", "1",
                 "--method", "importance", "--batch-size", "2", "--calib-batches", "1"]) == 0
    out = _info(capsys, tmp_path / "p")
    assert "pruned to 1 of 2 blocks (importance)" in out and "width/depth/heads" in out and " / 1 / " in out


def test_video_macs_count_every_frame_token():
    from ditkit.cli.info import video_macs
    from ditkit.config import get_preset
    from ditkit.models.dit import macs_per_forward
    from ditkit.models.video_dit import VideoDiTConfig

    trunk = get_preset("shapes-tiny")
    one = VideoDiTConfig(dit=trunk, num_frames=1)
    macs, tokens = video_macs(one)
    assert tokens == trunk.num_tokens and macs == macs_per_forward(trunk)  # one frame: an image forward
    full, tokens = video_macs(VideoDiTConfig(dit=trunk, num_frames=4))
    fact, _ = video_macs(VideoDiTConfig(dit=trunk, num_frames=4, attention="factorized"))
    assert tokens == 4 * trunk.num_tokens and fact < full
