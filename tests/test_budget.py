"""Budgets: memory and work estimated from the config and the request, refused in one line before anything is
allocated, with the DITKIT_MAX_MEMORY_GB / DITKIT_MAX_HOURS overrides."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from video_tiny import PROMPTS, tiny_video

from ditkit import budget
from ditkit.budget import BudgetError
from ditkit.config import PRESETS
from ditkit.io.fields import expected_state
from ditkit.models.text_dit import build_model
from ditkit.pipelines import load_pipeline, load_video_pipeline, save_video_pipeline


@pytest.mark.parametrize("name", ["shapes-tiny", "shapes-latent-mix", "shapes-t2i", "shapes-t2i-mmdit", "DiT-XL/2"])
def test_parameter_estimate_is_close(name):
    real = sum(t.numel() for t in expected_state(lambda: build_model(PRESETS[name])).values())
    assert abs(budget.model_params(PRESETS[name]) - real) / real < 0.15


def _huge(tiny_model_dir, tmp_path, **config):
    folder = tmp_path / "huge"
    shutil.copytree(tiny_model_dir, folder)
    info = json.loads((folder / "config.json").read_text())
    info["config"].update(config)
    (folder / "config.json").write_text(json.dumps(info))
    return folder


def test_a_huge_config_is_refused_fast_with_little_memory(tiny_model_dir, tmp_path):
    folder = _huge(tiny_model_dir, tmp_path, hidden_size=30720, depth=28)
    script = textwrap.dedent(f"""
        import resource, sys, time
        t = time.time()
        from ditkit.cli import main
        code = main(["generate", "--model", {str(folder)!r}, "--classes", "circle", "--out", {str(tmp_path / "o.png")!r}])
        print(code, time.time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    code, seconds, rss = out.stdout.split()
    assert int(code) == 2 and float(rss) < 2 ** 30
    assert "needs about" in out.stderr and "DITKIT_MAX_MEMORY_GB" in out.stderr and out.stderr.count("\n") == 1
    assert float(seconds) < 5 + 10  # imports included; the refusal itself is below
    import time
    t = time.time()
    with pytest.raises(BudgetError, match="loading .*huge needs about"):
        load_pipeline(folder)
    assert time.time() - t < 5


def test_the_memory_limit_can_be_lowered_and_raised(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DITKIT_MAX_MEMORY_GB", "0.0001")
    with pytest.raises(BudgetError, match="DITKIT_MAX_MEMORY_GB=0.0001"):
        load_pipeline(tiny_model_dir)
    monkeypatch.setenv("DITKIT_MAX_MEMORY_GB", "inf")  # the brave: no memory check, the header check still refuses
    from ditkit.io.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="shape"):
        load_pipeline(_huge(tiny_model_dir, tmp_path, hidden_size=30720))
    for bad in ("lots", "nan", "-1"):
        monkeypatch.setenv("DITKIT_MAX_MEMORY_GB", bad)
        with pytest.raises(BudgetError, match="DITKIT_MAX_MEMORY_GB must be"):
            budget.memory_limit()


def test_requests_beyond_the_machine_are_refused_before_sampling(tiny_model_dir, monkeypatch):
    pipe = load_pipeline(tiny_model_dir)
    with pytest.raises(BudgetError, match="sampling 1 images x 1000000000 steps"):
        pipe.generate(["circle"], steps=10 ** 9)
    with pytest.raises(BudgetError, match="memory"):
        pipe.generate(range(10 ** 9), steps=1)  # refused before the labels become a tensor
    monkeypatch.setenv("DITKIT_MAX_MEMORY_GB", "inf")  # the work check alone, whatever memory is free now
    with pytest.raises(BudgetError, match="would take over 24 h"):
        budget.check(budget.estimate_sampling(pipe.config, 1, 10 ** 8 * 6, 1))
    monkeypatch.setenv("DITKIT_MAX_HOURS", "inf")  # the brave
    budget.check(budget.estimate_sampling(pipe.config, 1, 10 ** 8 * 6, 1), device="cpu")
    monkeypatch.setenv("DITKIT_MAX_HOURS", "1e-9")
    with pytest.raises(BudgetError, match="DITKIT_MAX_HOURS"):
        pipe.generate(["circle"], steps=2)
    monkeypatch.delenv("DITKIT_MAX_HOURS")
    monkeypatch.delenv("DITKIT_MAX_MEMORY_GB")
    assert pipe.generate(["circle"], steps=2).shape == (1, 3, 32, 32)


def test_video_requests_and_loads_are_budgeted(tmp_path, monkeypatch):
    pipe = tiny_video()
    save_video_pipeline(tmp_path / "v", pipe.model, pipe.process, pipe.text_encoder)
    loaded = load_video_pipeline(tmp_path / "v")
    with pytest.raises(BudgetError, match="sampling 1 clips of 1000000 frames"):
        loaded.generate(PROMPTS[:1], frames=10 ** 6, long_mode="extrapolate", steps=2)
    with pytest.raises(BudgetError, match="steps"):
        loaded.generate(PROMPTS[:1], steps=10 ** 9)
    monkeypatch.setenv("DITKIT_MAX_MEMORY_GB", "0.0001")
    with pytest.raises(BudgetError, match="loading"):
        load_video_pipeline(tmp_path / "v")


def test_training_estimate_for_the_command_line():
    cfg = PRESETS["shapes-tiny"]
    small = budget.estimate_training(cfg, batch_size=64, steps=1000)
    assert budget.check(small) is small
    with pytest.raises(BudgetError, match="training 10 steps of batch 1000000 needs about"):
        budget.check(budget.estimate_training(PRESETS["DiT-XL/2"], batch_size=10 ** 6, steps=10))
