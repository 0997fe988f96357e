"""ditkit.accel against diffusers' cache hooks (`ditkit.interop.accel_vs_diffusers`, benchmarks/accel_vs_diffusers.py)
on a tiny latent model (RoPE + QK-norm, reference numerics): the diffusers twin (`ditkit.interop.parity`) computes
the same function, diffusers' hooks run and reset between generations, the report and errors."""

import json

import pytest
import torch
from bench_script import run_benchmark

from ditkit import DiT, FlowMatching, get_preset, save_pipeline
from ditkit.diffusion.sample import sample
from ditkit.interop.accel_vs_diffusers import DiffusersDenoiser, Setting, compare, diffusers_configs, markdown
from ditkit.interop.parity import diffusers_twin
from ditkit.models.autoencoder import Autoencoder, AutoencoderConfig, save_autoencoder
from ditkit.pipelines import SamplingDefaults

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

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
    twin, notes = diffusers_twin(model)
    assert any("RoPE" in n for n in notes) and any("downscale_freq_shift" in n for n in notes)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([3.0, 500.0, 999.0]), torch.tensor([1, 4, 10])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, timestep=t, class_labels=y).sample, model(x, t, y), atol=1e-5, rtol=1e-5)


def test_twin_carries_mixffn():
    model = tiny_dit(TINY.replace(mlp_type="mixffn"))  # the bundled model's MLP
    twin, notes = diffusers_twin(model)
    assert any("Mix-FFN" in n for n in notes)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([20.0, 700.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, timestep=t, class_labels=y).sample, model(x, t, y), atol=1e-5, rtol=1e-5)


def test_hook_state_does_not_leak_between_generations():
    model = tiny_dit()
    denoiser = DiffusersDenoiser(diffusers_twin(model)[0], model.config)
    labels, kw = torch.tensor([2, 7]), dict(process=FlowMatching(), steps=6, cfg_scale=2.0, seed=3)
    full = sample(denoiser, labels, batch_size=2, **kw)
    denoiser.transformer.enable_cache(dict(diffusers_configs())["TaylorSeer N=3 m=1"])
    denoiser.reset()
    cached = sample(denoiser, labels, batch_size=2, **kw)  # one generation
    assert not torch.allclose(cached, full, atol=1e-3)  # the hooks forecast some steps
    # two generations of one sample each through the same hooks: the second starts from fresh state
    split = sample(denoiser, labels, batch_size=1, **kw)
    torch.testing.assert_close(split, cached, atol=1e-5, rtol=1e-5)
    denoiser.transformer.disable_cache()
    torch.testing.assert_close(sample(denoiser, labels, batch_size=2, **kw), full, atol=0, rtol=0)


def test_smoke_report(model_dir):
    result = compare(model_dir, Setting(num_samples=2, steps=4))
    stdout = markdown(result)
    assert "| side | method | s / sample | ms / step | speedup | PSNR dB |" in stdout and "ratio ditkit/diffusers" in stdout
    result = json.loads(json.dumps(result))  # JSON-ready
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


def test_mixffn_model_with_methods_filter(tmp_path):
    """The bundled model's Mix-FFN: RAS is skipped with a note (token subsets), --methods picks ditkit's rows."""
    save_pipeline(tmp_path / "mix", tiny_dit(TINY.replace(mlp_type="mixffn")), FlowMatching(),
                  class_names=[f"c{i}" for i in range(10)], defaults=SamplingDefaults(steps=4, cfg_scale=2.0))
    result = compare(tmp_path / "mix", Setting(num_samples=2, steps=4, methods="FORA N=2,RAS 0.5"))
    assert [r["method"] for r in result["rows"] if r["side"] == "ditkit"] == ["full compute", "FORA N=2"]
    assert any("RAS 0.5 skipped" in n and "Mix-FFN" in n for n in result["notes"])
    with pytest.raises(ValueError, match="matches no ditkit method"):
        compare(tmp_path / "mix", Setting(steps=2, methods="nothing"))


def test_bad_inputs_exit_2(tmp_path):
    done = run_benchmark("accel_vs_diffusers", "--model", tmp_path / "nope")
    assert done.returncode == 2
    assert "no such checkpoint" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    save_pipeline(tmp_path / "swiglu", tiny_dit(TINY.replace(mlp_type="swiglu")), FlowMatching())
    done = run_benchmark("accel_vs_diffusers", "--model", tmp_path / "swiglu", "--steps", "2")
    assert done.returncode == 2
    assert "no equivalent for: mlp_type != gelu" in done.stderr and len(done.stderr.strip().splitlines()) == 1
