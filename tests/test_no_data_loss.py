"""No command destroys what the user did not ask to replace (`ditkit.io.outputs`).

* an output that is, holds or lies inside an input is refused up front, with or without --overwrite;
* an existing output ditkit did not write is refused (one line, exit 2) unless --overwrite is given, and is
  left exactly as it was;
* an output ditkit wrote is replaced (quantize and convert ask for --overwrite for any existing output);
* no default output goes into assets/ or into an input folder.
"""

from __future__ import annotations

import json
import shutil

import pytest
from kill_points import fingerprint, leftovers

from ditkit.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, argv, *words):
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


GEN = ["--steps", "1", "--classes", "0", "--n-per-class", "1", "--no-progress"]


@pytest.fixture
def user_folder(tmp_path):
    """A folder of the user's, with content that must survive."""
    folder = tmp_path / "mine"
    (folder / "deep").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious")
    (folder / "deep" / "data.bin").write_bytes(b"\x00\x01")
    return folder


# ----------------------------------------------------------------------------- outputs equal to or inside inputs


def test_an_output_is_never_an_input_or_inside_one(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "train_log.jsonl").write_text('{"step": 1}\n')
    before = {p: fingerprint(p) for p in (model, run_dir)}
    cases = [
        ["export", "--run", run_dir, "--out", run_dir],
        ["export", "--run", run_dir, "--out", run_dir / "model", "--overwrite"],
        ["export", "--run", run_dir / "checkpoints", "--out", run_dir],  # the output would hold the input
        ["quantize", "--model", model, "--out", model, "--overwrite"],
        ["quantize", "--model", model, "--out", model / "q"],
        ["quantize", "--model", model, "--out", tmp_path / "q", "--report", model / "r.json"],
        ["prune", "--model", model, "--out", model, "--keep", "2"],
        ["convert", model, model, "--to", "ditkit", "--overwrite"],
        ["convert", model, model / "sub", "--to", "ditkit"],
        ["generate", "--model", model, *GEN, "--out", model / "g.png"],
        ["eval", "--model", model, "--json", model / "e.json", "--num-samples", "2"],
        ["bench", "accel", "--model", model, "--out", model],
        ["tune", "--model", model, "--budget", "psnr>=30", "--json", model / "t.json"],
        ["calibrate-teacache", "--model", model, "--out", model / "other.json"],
        ["bench", "compress", "--model", model, "--variants", tmp_path / "v", "--out", tmp_path / "v" / "b"],
        ["train", "--preset", "shapes-tiny", "--init-from", model, "--out", model / "run"],
    ]
    for argv in cases:
        _refused(capsys, argv, "input")
    assert {p: fingerprint(p) for p in (model, run_dir)} == before


def test_the_folders_own_teacache_json_may_be_written_when_asked(tiny_model_dir, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    monkeypatch.chdir(tmp_path)
    argv = ["calibrate-teacache", "--model", model, "--steps", "3", "--num-samples", "2", "--batch-size", "2",
            "--seeds", "5", "--degree", "1"]
    assert run(capsys, *argv)[0] == 0  # by default beside, not inside, the model folder
    assert (tmp_path / "m-teacache.json").is_file() and not (model / "teacache.json").exists()
    assert run(capsys, *argv, "--out", model / "teacache.json")[0] == 0 and (model / "teacache.json").is_file()


# ----------------------------------------------------------------------------- what ditkit did not write


def test_folders_ditkit_did_not_write_are_refused_without_overwrite(tiny_model_dir, user_folder, tmp_path, capsys):
    before = fingerprint(user_folder)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cases = [
        ["export", "--run", run_dir, "--out", user_folder],
        ["prune", "--model", tiny_model_dir, "--out", user_folder, "--keep", "2"],
        ["train-classifier", "--out", user_folder, "--steps", "1"],
        ["quantize", "--model", tiny_model_dir, "--out", user_folder, "--calib-samples", "0"],
        ["convert", tiny_model_dir, user_folder, "--to", "ditkit"],
        ["bench", "accel", "--model", tiny_model_dir, "--out", user_folder],
        ["bench", "compress", "--model", tiny_model_dir, "--variants", tiny_model_dir, "--out", user_folder],
        ["train", "--preset", "shapes-tiny", "--out", user_folder],
    ]
    for argv in cases:
        _refused(capsys, argv, str(user_folder))
    assert fingerprint(user_folder) == before


def test_files_ditkit_did_not_write_are_refused_without_overwrite(tiny_model_dir, tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "data"}\n')
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG not really")
    cases = [
        ["generate", "--model", tiny_model_dir, *GEN, "--out", png],
        ["eval", "--model", tiny_model_dir, "--num-samples", "2", "--json", mine],
        ["eval", "--model", tiny_model_dir, "--num-samples", "2", "--grid", png],
        ["tune", "--model", tiny_model_dir, "--budget", "psnr>=30", "--json", mine],
        ["calibrate-teacache", "--model", tiny_model_dir, "--out", mine],
        ["quantize", "--model", tiny_model_dir, "--out", tmp_path / "q", "--report", mine],
        ["generate", "--model", tiny_model_dir, *GEN, "--out", tmp_path / "mine"],  # mine.json would be its record
        ["generate", "--model", tiny_model_dir, *GEN, "--out", tmp_path],  # a folder where a file goes
    ]
    for argv in cases:
        _refused(capsys, argv)
    assert mine.read_text() == '{"my": "data"}\n' and png.read_bytes() == b"\x89PNG not really"
    assert not (tmp_path / "q").exists()


def test_overwrite_replaces_what_ditkit_did_not_write(tiny_model_dir, user_folder, tmp_path, capsys):
    png = tmp_path / "photo.png"
    png.write_bytes(b"mine")
    assert run(capsys, "generate", "--model", tiny_model_dir, *GEN, "--out", png, "--overwrite")[0] == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run(capsys, "prune", "--model", tiny_model_dir, "--out", user_folder, "--keep", "2",
                       "--method", "importance", "--calib-batches", "1", "--batch-size", "2", "--overwrite")
    assert code == 0, err
    assert (user_folder / "model.safetensors").is_file() and not (user_folder / "notes.txt").exists()
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- what ditkit wrote


def test_outputs_ditkit_wrote_are_replaced(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for seed in ("0", "1"):  # generate twice into the same file: the second replaces the first
        assert run(capsys, "generate", "--model", tiny_model_dir, *GEN, "--seed", seed)[0] == 0
    assert json.loads((tmp_path / "samples.png.json").read_text())["options"]["seed"] == 1
    prune = ["prune", "--model", tiny_model_dir, "--out", "p", "--method", "importance", "--calib-batches", "1",
             "--batch-size", "2"]
    for keep in ("1", "2"):
        assert run(capsys, *prune, "--keep", keep)[0] == 0
    assert json.loads((tmp_path / "p" / "prune.json").read_text())["kept"].__len__() == 2
    q = ["quantize", "--model", tiny_model_dir, "--calib-samples", "0", "--out", "q"]
    assert run(capsys, *q)[0] == 0
    _refused(capsys, q, "q exists: give --overwrite")  # quantize asks, as it always did
    assert run(capsys, *q, "--overwrite")[0] == 0
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    assert run(capsys, *prune, "--keep", "2", "--out", "empty")[0] == 0
    assert leftovers(tmp_path) == []


def test_a_file_where_a_folder_goes_is_refused_even_with_overwrite(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("mine")
    _refused(capsys, ["prune", "--model", tiny_model_dir, "--out", f, "--keep", "2", "--overwrite"], "is a file")
    assert f.read_text() == "mine"
