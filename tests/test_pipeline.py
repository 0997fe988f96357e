import json

import pytest
import torch
from bars import bar_states  # tests/ is on sys.path (rootdir-less test modules)

import ditkit
from ditkit.io.checkpoint import CheckpointError
from ditkit.pipelines import load_pipeline


def test_roundtrip_and_defaults(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    assert pipe.config == ditkit.get_preset("shapes-tiny")
    assert pipe.defaults.steps == 4 and pipe.defaults.cfg_scale == 2.0
    assert pipe.class_index("star") == pipe.class_names.index("star")
    with pytest.raises(ValueError, match="unknown class"):
        pipe.class_index("blob")


def test_generate_is_deterministic_and_batch_independent(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    a = pipe.generate(["circle", "star", 3], seed=1, batch_size=3)
    b = pipe.generate(["circle", "star", 3], seed=1, batch_size=1)
    c = pipe.generate(["circle", "star", 3], seed=2, batch_size=3)
    assert a.shape == (3, 3, 32, 32)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c)


def test_guidance_changes_output_and_scale_one_is_conditional(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    g1 = pipe.generate([0, 1], cfg_scale=1.0)
    g3 = pipe.generate([0, 1], cfg_scale=3.0)
    assert not torch.allclose(g1, g3)


def test_half_precision_storage(tmp_path):
    model = ditkit.DiT(ditkit.get_preset("shapes-tiny"))
    ditkit.save_pipeline(tmp_path / "m", model, ditkit.FlowMatching(), dtype=torch.float16)
    pipe = load_pipeline(tmp_path / "m")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(pipe.model.state_dict()[k], v.half().float())


def test_bad_inputs(tiny_model_dir, tmp_path):
    pipe = load_pipeline(tiny_model_dir)
    with pytest.raises(ValueError, match="steps"):
        pipe.generate([0], steps=-1)
    with pytest.raises(ValueError, match="labels"):
        ditkit.sample(pipe.model, torch.tensor([12]), process=pipe.process)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pipeline(tmp_path / "missing")
    # a folder whose weights do not fit its config
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    info = json.loads((tiny_model_dir / "config.json").read_text())
    info["config"]["hidden_size"] = 128
    (bad / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="shape"):
        load_pipeline(bad)
    # a corrupt weights file
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pipeline(bad)


def test_gaussian_pipeline_samples(tmp_path):
    cfg = ditkit.get_preset("shapes-tiny").replace(learn_sigma=True)
    model = ditkit.DiT(cfg)
    proc = ditkit.GaussianDiffusion()
    ditkit.save_pipeline(tmp_path / "g", model, proc)
    pipe = load_pipeline(tmp_path / "g")
    assert isinstance(pipe.process, ditkit.GaussianDiffusion)
    out = pipe.generate([0, 1], sampler="ddim", steps=5)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()


def test_autoguidance_in_sample(tiny_model_dir):
    import copy

    from ditkit.diffusion.sample import sample

    pipe = load_pipeline(tiny_model_dir)
    kw = dict(process=pipe.process, steps=4, cfg_scale=2.0, seed=0)
    plain = sample(pipe.model, [0, 1], **kw)
    same = sample(pipe.model, [0, 1], guide_model=copy.deepcopy(pipe.model), autoguidance_scale=2.0, **kw)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)  # weak == model: nothing to extrapolate
    weak = copy.deepcopy(pipe.model)
    with torch.no_grad():
        for p in weak.parameters():
            p.mul_(0.9)
    guided = sample(pipe.model, [0, 1], guide_model=weak, autoguidance_scale=2.0, **kw)
    assert not torch.allclose(guided, plain)


def test_one_progress_bar_over_every_batch_reaches_its_total(tiny_model_dir, capsys):
    pipe = load_pipeline(tiny_model_dir)
    capsys.readouterr()
    pipe.generate([0, 1, 2], steps=3, batch_size=2, progress=True)
    states = bar_states(capsys.readouterr().err)
    assert states[0] == (0, 6) and states[-1] == (6, 6)  # 2 batches x 3 steps, the whole run known from the start
    ditkit.sample(pipe.model, torch.tensor([0, 1, 2]), process=pipe.process, sampler="heun", steps=2, batch_size=1,
                  progress=True)
    assert bar_states(capsys.readouterr().err)[-1] == (6, 6)  # steps, not model calls (Heun makes 3 per sample)
    pipe.generate([0, 1], steps=2, progress=False)
    ditkit.sample(pipe.model, torch.tensor([0]), process=pipe.process, steps=2)  # default: only on a terminal
    assert capsys.readouterr().err == ""
