"""benchmarks/accel_vs_diffusers.py on a tiny latent model (RoPE + QK-norm, reference numerics): the diffusers
twin computes the same function, diffusers' hooks run and reset between generations, the report and errors."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from ditkit import DiT, FlowMatching, get_preset, save_pipeline
from ditkit.models.autoencoder import Autoencoder, AutoencoderConfig, save_autoencoder
from ditkit.pipeline import SamplingDefaults, sample

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "accel_vs_diffusers.py"
_spec = importlib.util.spec_from_file_location("accel_vs_diffusers", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up while the file executes
_spec.loader.exec_module(bench)

TINY = get_preset("shapes-latent").replace(hidden_size=32, depth=2, num_heads=2, patch_size=2)  # RoPE, QK-norm


def tiny_dit(config=TINY, seed=0):
    torch.manual_seed(seed)
    model = DiT(config).eval()
    for p in model.parameters():  # large enough that caching visibly changes the samples
        torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("avd")
    torch.manual_seed(0)
    save_autoencoder(root / "ae", Autoencoder(AutoencoderConfig(downsample=4, latent_channels=4, widths=(8, 8, 8),
                                                                groups=4)).eval())
    save_pipeline(root / "m", tiny_dit(), FlowMatching(), class_names=[f"c{i}" for i in range(10)],
                  defaults=SamplingDefaults(steps=50, cfg_scale=2.0), autoencoder=root / "ae")
    return root / "m"


def test_twin_computes_the_same_function():
    model = tiny_dit()
    assert model.config.timestep_freq_shift == 0  # reference numerics, which diffusers' DiT defaults differ from
    twin, notes = bench.diffusers_twin(model)
    assert any("RoPE" in n for n in notes) and any("downscale_freq_shift" in n for n in notes)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([3.0, 500.0, 999.0]), torch.tensor([1, 4, 10])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, timestep=t, class_labels=y).sample, model(x, t, y), atol=1e-5, rtol=1e-5)


def test_twin_carries_mixffn():
    model = tiny_dit(TINY.replace(mlp_type="mixffn"))  # the bundled model's MLP
    twin, notes = bench.diffusers_twin(model)
    assert any("Mix-FFN" in n for n in notes)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([20.0, 700.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, timestep=t, class_labels=y).sample, model(x, t, y), atol=1e-5, rtol=1e-5)


def test_hook_state_does_not_leak_between_generations():
    model = tiny_dit()
    denoiser = bench.DiffusersDenoiser(bench.diffusers_twin(model)[0], model.config)
    labels, kw = torch.tensor([2, 7]), dict(process=FlowMatching(), steps=6, cfg_scale=2.0, seed=3)
    full = sample(denoiser, labels, batch_size=2, **kw)
    denoiser.transformer.enable_cache(dict(bench.diffusers_configs())["TaylorSeer N=3 m=1"])
    denoiser.reset()
    cached = sample(denoiser, labels, batch_size=2, **kw)  # one generation
    assert not torch.allclose(cached, full, atol=1e-3)  # the hooks forecast some steps
    # two generations of one sample each through the same hooks: the second starts from fresh state
    split = sample(denoiser, labels, batch_size=1, **kw)
    torch.testing.assert_close(split, cached, atol=1e-5, rtol=1e-5)
    denoiser.transformer.disable_cache()
    torch.testing.assert_close(sample(denoiser, labels, batch_size=2, **kw), full, atol=0, rtol=0)


def test_smoke_report(model_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = bench.main(["--model", str(model_dir), "--num-samples", "2", "--steps", "4", "--threads", "1",
                       "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "| side | method | s / sample | ms / step | speedup | PSNR dB |" in stdout and "ratio ditkit/diffusers" in stdout
    result = json.loads(out.read_text())
    rows = result["rows"]
    for side in ("ditkit", "diffusers"):
        mine = [r for r in rows if r["side"] == side]
        assert mine[0]["method"] == "full compute" and mine[0]["speedup"] == 1.0 and mine[0]["psnr"] == 100.0
        assert len(mine) > 4 and all(0 < r["psnr"] <= 100 and r["seconds"] > 0 for r in mine)
    methods = {r["method"] for r in rows if r["side"] == "diffusers"}
    assert {"FirstBlockCache 0.05", "TaylorSeer N=5 m=2"} <= methods
    # 4 steps, 3 warm-up: diffusers' TaylorSeer forecasts the last step, so its samples differ from full compute
    assert next(r for r in rows if r["method"] == "TaylorSeer N=5 m=2" and r["side"] == "diffusers")["psnr"] < 100
    m = result["summary"]
    assert m["baseline_psnr"] > 90  # the two sides sample the same function
    for side in ("ditkit", "diffusers"):
        best = m[f"{side}_best"]
        candidates = [r for r in rows if r["side"] == side and r["psnr"] >= m["psnr_target"]]
        assert best["speedup"] == max(r["speedup"] for r in candidates) and best["psnr"] >= 30
    assert m["speedup_ratio"] == pytest.approx(m["ditkit_best"]["speedup"] / m["diffusers_best"]["speedup"])
    assert any("default module patterns" in n for n in result["notes"])
    assert result["setting"]["cfg_scale"] == 2.0 and result["model"]["latent"]


def test_mixffn_model_with_methods_filter(tmp_path, capsys):
    """The bundled model's Mix-FFN: RAS is skipped with a note (token subsets), --methods picks ditkit's rows."""
    save_pipeline(tmp_path / "mix", tiny_dit(TINY.replace(mlp_type="mixffn")), FlowMatching(),
                  class_names=[f"c{i}" for i in range(10)], defaults=SamplingDefaults(steps=4, cfg_scale=2.0))
    out = tmp_path / "r.json"
    code = bench.main(["--model", str(tmp_path / "mix"), "--num-samples", "2", "--steps", "4", "--threads", "1",
                       "--methods", "FORA N=2,RAS 0.5", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert [r["method"] for r in result["rows"] if r["side"] == "ditkit"] == ["full compute", "FORA N=2"]
    assert any("RAS 0.5 skipped" in n and "Mix-FFN" in n for n in result["notes"])
    assert bench.main(["--model", str(tmp_path / "mix"), "--steps", "2", "--methods", "nothing"]) == 2
    assert "matches no ditkit method" in capsys.readouterr().err


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert bench.main(["--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and len(err.strip().splitlines()) == 1
    save_pipeline(tmp_path / "swiglu", tiny_dit(TINY.replace(mlp_type="swiglu")), FlowMatching())
    assert bench.main(["--model", str(tmp_path / "swiglu"), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "no equivalent for: mlp_type != gelu" in err and len(err.strip().splitlines()) == 1
