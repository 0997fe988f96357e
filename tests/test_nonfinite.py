"""NaN and Inf produced while sampling or training are errors naming the step: never an image, a clip or a checkpoint
of NaNs, never a run reported finished."""

import math

import pytest
import torch
from video_tiny import PROMPTS, tiny_video

from ditkit.diffusion.finite import NonFiniteError
from ditkit.pipelines import load_pipeline


@pytest.mark.parametrize("scale", [math.nan, math.inf, 1e308])
def test_a_non_finite_guidance_scale_is_an_error_not_a_black_image(tiny_model_dir, scale):
    pipe = load_pipeline(tiny_model_dir)
    with pytest.raises(NonFiniteError, match=r"sampling step 1 of 3 produced NaN or Inf"):
        pipe.generate(["circle"], steps=3, cfg_scale=scale)
    assert torch.isfinite(pipe.generate(["circle"], steps=3, cfg_scale=2.0)).all()


def test_non_finite_weights_in_memory_stop_sampling(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    with torch.no_grad():
        pipe.model.final_layer.linear.bias.fill_(math.inf)
    with pytest.raises(NonFiniteError, match="sampling step 1 of"):
        pipe.generate(["circle"], steps=2)


def test_video_sampling_stops_at_the_first_non_finite_step():
    pipe = tiny_video()
    with pytest.raises(NonFiniteError, match=r"video sampling step 1 of 2"):
        pipe.generate(PROMPTS[:1], steps=2, cfg_scale=math.nan, frames=4)


def test_the_cli_reports_a_non_finite_sample_in_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import ditkit.diffusion.sample as sample_module
    from ditkit.cli import main

    real = sample_module.run_sampler

    def poisoned(fn, x, **kw):  # a model that overflows: its output becomes Inf
        return real(lambda x, t, **k: fn(x, t, **k) * math.inf, x, **kw)

    monkeypatch.setattr(sample_module, "run_sampler", poisoned)
    out = tmp_path / "o.png"
    assert main(["generate", "--model", str(tiny_model_dir), "--classes", "circle", "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()  # the progress bar, then one error line
    assert err.count("error") == 1 and "NaN or Inf" in err.splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_training_that_diverges_stops_with_the_step_and_keeps_no_nan_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from ditkit import get_preset
    from ditkit.train.trainer import TrainConfig, Trainer

    cfg = TrainConfig(model=get_preset("shapes-tiny").replace(depth=1), steps=6, batch_size=4, lr=1e-3, warmup_steps=0,
                      ckpt_every=2, log_every=1)
    assert Trainer(cfg, tmp_path / "good", progress=False).run()["done"]
    bad = TrainConfig(**{**cfg.__dict__, "lr": math.inf})
    trainer = Trainer(bad, tmp_path / "bad", progress=False)
    with pytest.raises(NonFiniteError, match="training step 1: the updated weights hold NaN or Inf"):
        trainer.run()
    ckpts = tmp_path / "bad" / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.glob("step_*"))
    # a run that diverges later keeps its finite checkpoints, and none of the diverged steps
    late = Trainer(cfg.__class__(**{**cfg.__dict__, "steps": 6}), tmp_path / "late", progress=False)
    original = late.train_step

    def step_then_poison():
        loss = original()
        if late.step == 3:
            with torch.no_grad():
                next(late.model.parameters()).fill_(math.nan)
            late._check_finite(loss)
        return loss

    late.train_step = step_then_poison
    with pytest.raises(NonFiniteError, match="training step 3"):
        late.run()
    kept = sorted(p.name for p in (tmp_path / "late" / "checkpoints").glob("step_*"))
    assert kept == ["step_0000002"]
    for f in ("model.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "late" / "checkpoints" / kept[0] / f)).values())
