"""ditkit quantize (registered by ditkit.cli.compress.register)."""

import json

import pytest

from ditkit.cli import main
from ditkit.pipelines import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quantize_command_writes_a_loadable_folder(tiny_model_dir, tmp_path, capsys):
    out, report = tmp_path / "q", tmp_path / "report.json"
    rc = main(["quantize", "--model", str(tiny_model_dir), "--out", str(out), "--scheme", "w4a8",
               "--override", "adaLN_modulation=w8a16", "--calib-samples", "2", "--calib-steps", "2",
               "--group-size", "64", "--keep-sensitive", "1", "--report", str(report)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "w4a8:" in text and "int_mm" in text and "most sensitive" in text
    rep = json.loads(report.read_text())
    assert len(rep["kept_by_sensitivity"]) == 1 and "w8a16" in rep["schemes"].values()
    pipe = load_quantized(out)
    assert pipe.generate(["circle"], steps=2).shape == (1, 3, 32, 32)


def test_quantize_command_user_errors(tiny_model_dir, tmp_path, capsys):
    assert main(["quantize", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "q")]) == 2
    assert "error" in capsys.readouterr().err
    rc = main(["quantize", "--model", str(tiny_model_dir), "--out", str(tmp_path / "q"), "--calib-samples", "0",
               "--override", "final_layer=w1a1"])
    assert rc == 2 and "unknown quantization scheme" in capsys.readouterr().err
    assert main(["quantize", "--out", str(tmp_path / "q"), "--override", "nonsense"]) == 2


def test_quantize_command_vq_with_zero_data_calibration(tiny_model_dir, tmp_path, capsys):
    rc = main(["quantize", "--model", str(tiny_model_dir), "--out", str(tmp_path / "vq"), "--scheme", "vq2",
               "--calib-samples", "0", "--vq-steps", "3", "--vq-samples", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "vq calibration" in text and "simulated" in text
    assert load_quantized(tmp_path / "vq").generate(["circle"], steps=1).shape == (1, 3, 32, 32)
