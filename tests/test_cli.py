import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ditkit.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_writes_png(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, _ = run(capsys, "generate", "--model", str(tiny_model_dir), "--classes", "circle,star",
                          "--n-per-class", "2", "--steps", "2", "--out", str(out), "--no-progress")
    assert code == 0 and "wrote 4 samples" in stdout
    img = Image.open(out)
    assert img.size[0] > 64 and img.mode == "RGB"


@pytest.mark.parametrize("argv,message", [
    (["--classes", "blob"], "unknown class"),
    (["--out", "x.jpg"], ".png"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--context-noise", "0.1"], "video option"),
] + ([] if __import__("torch").cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU")]))
def test_generate_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "generate", "--model", str(tiny_model_dir), "--steps", "1", "--no-progress", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_and_corrupt_checkpoints(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--model", str(tmp_path / "nope"))
    assert code == 2 and "no such checkpoint" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"garbage")
    code, _, err = run(capsys, "generate", "--model", str(bad))
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_negative_steps_rejected_by_parser(tiny_model_dir):
    # argparse errors exit 2 with a usage line; run as a user would, checking for no traceback
    proc = subprocess.run([sys.executable, "-m", "ditkit.cli", "generate", "--model", str(tiny_model_dir),
                           "--steps", "-3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "positive integer" in proc.stderr and "Traceback" not in proc.stderr


def test_info(tiny_model_dir, capsys):
    code, out, _ = run(capsys, "info", "--preset", "DiT-XL/2")
    assert code == 0 and "674,834,720" in out and "118.621 GMACs" in out
    code, out, _ = run(capsys, "info", "--model", str(tiny_model_dir))
    assert code == 0 and "64 tokens" in out


def test_eval_writes_json(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "m.json"
    code, out, err = run(capsys, "eval", "--model", str(tiny_model_dir), "--num-samples", "20", "--steps", "2",
                         "--reference-samples", "50", "--json", str(js), "--no-progress")
    assert code == 0, err
    result = json.loads(js.read_text())
    assert 0 <= result["accuracy"] <= 1 and result["fd"] > 0 and result["num_samples"] == 20


def test_train_tiny_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--preset", "shapes-tiny", "--steps", "4", "--out", str(out), "--no-progress")
    assert code == 0 and "finished: step 4/4" in stdout
    code, stdout, _ = run(capsys, "train", "--preset", "shapes-tiny", "--steps", "6", "--out", str(out), "--no-progress")
    assert code == 0 and "step 6/6" in stdout
    code, _, err = run(capsys, "train", "--preset", "nope")
    assert code == 2 and "unknown training preset" in err


def test_export_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--preset", "shapes-tiny", "--steps", "3", "--out", str(run_dir), "--no-progress"]) == 0
    code, out, err = run(capsys, "export", "--run", str(run_dir), "--out", str(tmp_path / "m"), "--cfg-scale", "2.5")
    assert code == 0, err
    code, out, _ = run(capsys, "info", "--model", str(tmp_path / "m"))
    assert code == 0 and "parameters" in out
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    assert info["sampling"]["cfg_scale"] == 2.5 and info["training"]["steps"] == 3
    assert (tmp_path / "m" / "train_log.jsonl").is_file()
    code, _, err = run(capsys, "export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2"))
    assert code == 2 and "no checkpoint" in err


def test_eval_grid_takes_k_samples_of_every_class():
    from ditkit.cli.evaluate import per_class_order

    labels = torch.arange(50) % 10
    order = per_class_order(labels, 10, 3)
    assert labels[order].tolist() == [c for c in range(10) for _ in range(3)]
    assert order[:3].tolist() == [0, 10, 20]
