"""The compression micro-benchmark runs (tiny shapes; the real numbers come from the CLI)."""

import pytest

from ditkit.compress import bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_linears_and_forward_small():
    rows = bench.bench_linears(batch=1, tokens=8, schemes=("w8a8", "w4a8-cached-rot64"), repeats=1,
                               shapes={"fc": (128, 64)}, group_size=64)
    assert rows[0]["M"] == 8 and rows[0]["w8a8_speedup"] > 0 and rows[0]["w4a8-cached-rot64_bytes"] > 0
    f = bench.bench_forward("shapes-tiny", batch=1, scheme="w4a8-cached", repeats=1)
    assert f["speedup"] > 0 and f["weight_bytes_quantized"] < f["weight_bytes_fp32"]
    assert f["resident_bytes_quantized"] > f["weight_bytes_quantized"]  # the int8 cache is counted
    assert bench.parse_variant("w4a8-cached-rot64") == ("w4a8", {"cache_int8": True, "rotate": 64})
    with pytest.raises(ValueError):
        bench.parse_variant("w8a8-fast")


@pytest.fixture(scope="module")
def variants(tiny_model_dir, tmp_path_factory):
    """A W8A8 folder (``w8a8``) and a one-block pruned folder (``d1``) of the tiny model, in one folder."""
    from ditkit.cli import main

    root = tmp_path_factory.mktemp("variants")
    common = ["--model", str(tiny_model_dir), "--threads", "1"]
    assert main(["quantize", *common, "--out", str(root / "w8a8"), "--calib-samples", "2", "--calib-steps", "2"]) == 0
    assert main(["prune", *common, "--out", str(root / "d1"), "--keep", "1", "--method", "importance",
                 "--calib-batches", "1", "--batch-size", "2"]) == 0
    return root


def test_bench_compress_command(tiny_model_dir, variants, tmp_path, capsys):
    """ditkit bench compress: float vs a W8A8 and a pruned folder, each also with a cache, one table."""
    import json

    from ditkit.cli import main

    common = ["--model", str(tiny_model_dir), "--threads", "1"]
    capsys.readouterr()
    rc = main(["bench", "compress", *common, "--variants", f"{variants / 'w8a8'},{variants / 'd1'}",
               "--cache", "fora n=2", "--steps", "4", "--num-samples", "4", "--batch-size", "4",
               "--reference-samples", "20", "--out", str(tmp_path / "bench")])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]}
    assert list(rows) == ["float32", "w8a8", "d1", "float32 + FORA N=2", "w8a8 + FORA N=2", "d1 + FORA N=2"]
    w8, d1, base = rows["w8a8"], rows["d1"], rows["float32"]
    assert w8["compute"] == "int_mm" and w8["kernel_calls"]["int_mm"] > 0 and w8["kernel_calls"]["fallback_float_mm"] == 0
    assert base["compute"] == "float" and d1["compute"] == "float" and "pruned" in d1["compression"]
    assert w8["weight_bytes"] < base["weight_bytes"] and w8["disk_bytes"] < base["disk_bytes"]
    assert d1["macs_speedup"] > 1.5 and rows["d1 + FORA N=2"]["macs_speedup"] > d1["macs_speedup"]
    assert w8["forward_speedup"] > 0 and d1["forward_speedup"] > 0 and "forward_speedup" not in base
    for r in rows.values():
        assert 0 <= r["accuracy"] <= 1 and "psnr" in r and "fd" in r
    assert d1["psnr"] < 100 and base["psnr"] == 100  # (the tiny untrained W8A8 model may round to identical images)
    assert "| w8a8 |" in out and "| model | disk MiB |" in out


def test_bench_compress_full_samples_are_stored_once_and_loaded_by_the_next_bench(tiny_model_dir, variants, tmp_path):
    """--full-samples: a second bench of another variant loads the float model's samples from the first."""
    import json

    from ditkit.cli import main

    common = ["--model", str(tiny_model_dir), "--threads", "1"]
    store = tmp_path / "full.safetensors"
    for variant, out in (("w8a8", "b1"), ("d1", "b2")):
        assert main(["bench", "compress", *common, "--variants", str(variants / variant), "--steps", "4",
                     "--num-samples", "4", "--batch-size", "2", "--timing-samples", "2", "--reference-samples", "20",
                     "--full-samples", str(store), "--out", str(tmp_path / out)]) == 0
    notes = [json.loads((tmp_path / out / "bench.json").read_text())["notes"] for out in ("b1", "b2")]
    assert store.is_file() and not any("loaded from" in n for n in notes[0]) and any("loaded from" in n for n in notes[1])


def test_bench_compress_bad_inputs_are_one_line_errors(tiny_model_dir, variants, tmp_path, capsys):
    from ditkit.cli import main

    common = ["--model", str(tiny_model_dir), "--threads", "1"]
    capsys.readouterr()
    assert main(["bench", "compress", *common, "--variants", str(tmp_path / "nope")]) == 2
    assert main(["bench", "compress", *common, "--variants", str(variants / "d1"), "--cache", "warp drive"]) == 2
    assert main(["bench", "compress", "--model", str(variants / "w8a8"), "--variants", str(variants / "d1")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "warp drive" in err and "give the float model" in err
