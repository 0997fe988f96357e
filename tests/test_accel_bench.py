"""ditkit.accel bench / tune / CLI on tiny models: rows and derived metrics, reports, budget parsing,
the tuner's choice confirmed on held-out seeds and its 'cannot help' answers, and the commands."""

import json

import pytest
import torch
from accel_tiny import ROPE, tiny_dit

import ditkit
from ditkit import accel
from ditkit.accel import bench
from ditkit.accel.tune import Budget, parse_budget, tune
from ditkit.cli import build_parser

SETTING = bench.BenchSetting(steps=6, num_samples=4, batch_size=4, cfg_scale=2.0)
METHODS = [
    bench.Method("FORA N=2", (accel.FORAConfig(interval=2),)),
    bench.Method("FORA N=3", (accel.FORAConfig(interval=3),)),
    bench.Method("RAS 0.5", (accel.RASConfig(sample_ratio=0.5, start=2),)),
    bench.Method("CFG-reuse k=2", (), cfg_every=2),
]


class Judge(torch.nn.Module):
    """A stand-in classifier with ``features`` and ``head`` (any image size)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj, self.out = torch.nn.Linear(3, 8), torch.nn.Linear(8, ROPE.num_classes)

    def features(self, x):
        return self.proj(x.mean(dim=(2, 3)))

    def head(self, f):
        return self.out(f)


def test_bench_rows_metrics_and_report(tmp_path):
    ref = torch.rand(6, 3, 8, 8) * 2 - 1
    result = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS,
                             classifier=Judge(), reference_images=ref)
    rows = {r["method"]: r for r in result.rows}
    assert list(rows) == ["full compute"] + [m.label for m in METHODS]
    base = rows["full compute"]
    assert base["psnr"] == bench.PSNR_CAP and base["agreement"] == 1.0 and base["accuracy_drop"] == 0.0
    assert base["macs_speedup"] == 1.0 and base["fd_increase"] == 0.0
    for label in ("FORA N=2", "FORA N=3", "RAS 0.5", "CFG-reuse k=2"):
        r = rows[label]
        assert r["macs_speedup"] > 1.0 and r["psnr"] < bench.PSNR_CAP and r["speedup"] > 0
        assert 0.0 <= r["agreement"] <= 1.0 and "fd" in r
    assert rows["FORA N=3"]["macs_speedup"] > rows["FORA N=2"]["macs_speedup"]
    assert rows["FORA N=2"]["cache_bytes"] > 0 and rows["CFG-reuse k=2"]["cache_bytes"] > 0
    assert rows["full compute"]["ssim"] is None  # 8x8 images are smaller than the SSIM window
    paths = bench.write_report(result, tmp_path, command="ditkit bench accel --steps 6")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["command"].startswith("ditkit bench accel") and len(data["rows"]) == 5
    md = (tmp_path / "bench.md").read_text()
    assert "| method | speedup |" in md and "| FORA N=2 |" in md
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "bench.png").exists() and "png" in paths
    except ImportError:
        assert "png" not in paths


def test_bench_decodes_latent_samples_before_every_metric():
    """A latent model's samples are decoded (inside the timing) before PSNR, SSIM and the classifier."""
    calls = []

    def decode(z):  # stand-in decoder: 4 latent channels at 8x8 -> RGB at 16x16
        calls.append(tuple(z.shape))
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=2.0, mode="nearest")

    result = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS[:1],
                             classifier=Judge(), reference_images=torch.rand(6, 3, 16, 16) * 2 - 1, decode=decode)
    assert calls[0] == (4, ROPE.in_channels, 8, 8) and len(calls) == 3  # full, FORA, full again
    rows = {r["method"]: r for r in result.rows}
    assert rows["full compute"]["ssim"] == 1.0  # 16x16 decoded images are big enough for SSIM
    assert 0 < rows["FORA N=2"]["ssim"] < 1 and rows["FORA N=2"]["psnr"] < bench.PSNR_CAP


def test_timing_subset_times_few_samples_and_judges_all(tmp_path):
    """timing_samples: one untimed run over every sample gives the metrics; the timings are of the subset."""
    sizes = []

    def decode(z):
        sizes.append(len(z))
        return z[:, :3]

    setting = bench.BenchSetting(steps=4, num_samples=6, batch_size=6, cfg_scale=2.0, timing_samples=2, repeats=2)
    plain = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), methods=METHODS[:1],
                            setting=bench.BenchSetting(steps=4, num_samples=6, batch_size=6, cfg_scale=2.0))
    result = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=setting, methods=METHODS[:1],
                             decode=decode)
    # full (all, then the subset twice), FORA (likewise), full again (the subset twice)
    assert sizes == [6, 2, 2, 6, 2, 2, 2, 2]
    for a, b in zip(plain.rows, result.rows):  # same quality figures and executed MACs as timing every run
        assert a["psnr"] == b["psnr"] and a["macs"] == b["macs"]
    bench.write_report(result, tmp_path)
    assert "times of the first 2 samples" in (tmp_path / "bench.md").read_text()
    with pytest.raises(ValueError, match="timing_samples"):
        bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), methods=[],
                        setting=bench.BenchSetting(steps=2, num_samples=4, batch_size=4, timing_samples=0))


def test_full_samples_file_is_written_then_reused_and_checked(tmp_path):
    """full_store: the first bench writes the full-compute samples, a second loads them (only timing
    the subset), and a file of another setting is refused rather than silently reused."""
    sizes = []

    def decode(z):
        sizes.append(len(z))
        return z[:, :3]

    store = tmp_path / "full.safetensors"
    setting = bench.BenchSetting(steps=4, num_samples=6, batch_size=6, cfg_scale=2.0, timing_samples=2)
    model = tiny_dit(ROPE)
    first = bench.Bench(model, process=ditkit.FlowMatching(), setting=setting, decode=decode, full_store=store)
    assert store.is_file() and sizes == [6, 2] and not first.result.notes
    sizes.clear()
    second = bench.Bench(model, process=ditkit.FlowMatching(), setting=setting, decode=decode, full_store=store)
    assert sizes == [2]  # only the timed subset ran
    assert torch.equal(second.base_images, first.base_images) and "loaded from" in second.result.notes[0]
    other = bench.BenchSetting(steps=3, num_samples=6, batch_size=6, cfg_scale=2.0, timing_samples=2)
    with pytest.raises(ValueError, match="fingerprint differs"):
        bench.Bench(model, process=ditkit.FlowMatching(), setting=other, decode=decode, full_store=store)
    with pytest.raises(ValueError, match="needs timing_samples"):
        bench.Bench(model, process=ditkit.FlowMatching(), setting=bench.BenchSetting(steps=2, num_samples=2),
                    full_store=tmp_path / "x.safetensors")


def test_unsupported_method_is_skipped_with_a_note():
    mix = tiny_dit(ROPE.replace(mlp_type="mixffn"))
    result = bench.run_bench(mix, process=ditkit.FlowMatching(), methods=METHODS[:3],
                             setting=bench.BenchSetting(steps=3, num_samples=2, batch_size=2))
    assert [r["method"] for r in result.rows] == ["full compute", "FORA N=2", "FORA N=3"]
    assert any("skipped RAS 0.5" in n and "Mix-FFN" in n for n in result.notes)
    with pytest.raises(accel.UnsupportedCombination, match="Mix-FFN"):
        accel.accelerate(mix, accel.RASConfig(sample_ratio=0.5))


def test_guidance_reuse_is_skipped_without_guidance():
    result = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), methods=METHODS[-1:],
                             setting=bench.BenchSetting(steps=3, num_samples=2, batch_size=2))
    assert len(result.rows) == 1 and "guidance reuse needs" in result.notes[0]


def test_default_methods_cover_every_family():
    families = {m.family for m in bench.default_methods(depth=8, calls=50, guided=True)}
    for name in ("FORA", "Delta-DiT", "FirstBlockCache", "TeaCache", "TaylorSeer", "GatedTaylor", "RAS",
                 "TaylorSeer + RAS", "CFG-reuse"):
        assert name in families


def test_parse_budget():
    assert parse_budget("psnr>=30") == [Budget("psnr", ">=", 30.0)]
    assert parse_budget("accuracy_drop <= 2 and fd_increase<=10%, accuracy>=90%") == [
        Budget("accuracy_drop", "<=", 2.0), Budget("fd_increase", "<=", 10.0), Budget("accuracy", ">=", 0.9)]
    assert parse_budget("PSNR > 28.5dB") == [Budget("psnr", ">", 28.5)]
    for bad in ("", "psnr=30", "lpips<=0.1", "psnr>=abc"):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_tune_finds_and_confirms_or_says_it_cannot():
    model = tiny_dit(ROPE)
    kw = dict(process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS, holdout_samples=2)
    found = tune(model, "psnr>=40", **kw)
    assert found.chosen is not None and found.chosen["holdout"]["psnr"] >= 40
    assert found.chosen["calibration"]["psnr"] >= 40 and found.chosen["configs"]
    tried = [r for r in found.holdout if r["method"] not in ("full compute", found.chosen["method"])]
    assert all(r["psnr"] < 40 for r in tried)  # confirmed fastest first: any faster setting failed on held-out seeds
    assert len(found.holdout) >= 2 and found.holdout[0]["method"] == "full compute"
    json.dumps(found.to_dict())
    none = tune(model, "psnr>=1000", **kw)
    assert none.chosen is None and "no setting meets psnr>=1000" in none.message
    assert "little to reuse" in none.message  # 6 calls per sample
    assert len(none.calibration) == 1 + 3  # the ladders stop at their first rung over budget


def _parse(argv):
    return build_parser().parse_args(argv)


def test_commands(tiny_model_dir, tmp_path, capsys):
    common = ["--model", str(tiny_model_dir), "--steps", "4", "--num-samples", "2", "--batch-size", "2", "--threads", "1"]
    args = _parse(["calibrate-teacache", *common, "--seeds", "5", "--degree", "1", "--out", str(tmp_path / "tc.json")])
    args.func(args)
    assert "R²" in capsys.readouterr().out and (tmp_path / "tc.json").exists()
    quick = [*common, "--no-classifier", "--methods", "FORA N=2,TeaCache 0.1", "--teacache", str(tmp_path / "tc.json")]
    args = _parse(["bench", "accel", *quick, "--out", str(tmp_path / "bench")])
    args.func(args)
    out = capsys.readouterr().out
    assert "| FORA N=2 |" in out and "| TeaCache 0.1 |" in out and (tmp_path / "bench" / "bench.json").exists()
    args = _parse(["tune", *quick, "--budget", "psnr>=20", "--json", str(tmp_path / "tune.json")])
    args.func(args)
    assert json.loads((tmp_path / "tune.json").read_text())["budget"] == "psnr>=20"
    out = capsys.readouterr().out
    chosen = json.loads((tmp_path / "tune.json").read_text())["chosen"]
    config = chosen["configs"][0]  # FORA N=2 or TeaCache 0.1, whichever is faster here
    settings = next(line for line in out.splitlines() if line.startswith("settings: "))
    assert settings.startswith(f"settings: {config['type']}(") and all(f"{k}=" in settings for k in config if k != "type")
    with pytest.raises(ValueError, match="budget"):
        args = _parse(["tune", *quick, "--budget", "speed>=2"])
        args.func(args)
    with pytest.raises(ValueError, match="matches no method"):
        args = _parse(["bench", "accel", *common, "--no-classifier", "--methods", "nothing"])
        args.func(args)


def test_live_lines_and_table_give_each_method_one_figure():
    """The progress lines carry the seconds the table keeps; the speedup is the table's alone (full compute is
    timed again at the end, so a speedup printed earlier would disagree with it)."""
    lines = []
    result = bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS[:2],
                             progress=lines.append)
    rows = {r["method"]: r for r in result.rows}
    assert len(lines) == 4 and lines[0].startswith("full compute: sampled")
    for line in lines[1:3]:
        label, _, rest = line.partition(": ")
        row = rows[label]
        assert rest == f"{row['seconds']:.2f} s, MACs {row['macs_speedup']:.2f}x, PSNR {row['psnr']:.1f} dB"
    assert lines[3] == f"full compute: {rows['full compute']['seconds']:.2f} s"
    table = bench.markdown_table(result)
    for label, row in rows.items():
        assert f"| {label} | {row['speedup']:.2f}x |" in table and f"{row['seconds']:.2f} |" in table
