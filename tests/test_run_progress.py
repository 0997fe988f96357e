"""The long commands' progress bars: one bar per phase, its total the whole phase known up front (lowered only by
parts that are skipped), reaching that total, with the whole-run estimate; nothing printed off a terminal."""

import sys

import pytest
import torch
from accel_tiny import ROPE, tiny_dit
from bars import bar_states, bars
from video_tiny import tiny_video

import ditkit
from ditkit import accel
from ditkit.accel import bench
from ditkit.io.progress import RunBar

pytestmark = pytest.mark.usefixtures("one_thread")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 2.0
        return self.now


def test_run_bar_shows_the_whole_run_estimate_and_follows_its_total(capsys):
    bar = RunBar(6, "work", True, warmup=1)
    bar.eta.clock = Clock()  # 2 s a step
    bar.update(1)
    bar.update(1)
    bar.skip(2)  # two steps that will not be made
    bar.update(1)
    bar.update(1)
    bar.finish()  # already there
    bar.close()
    err = capsys.readouterr().err
    assert bar_states(err)[0] == (0, 6) and bar_states(err)[-1] == (4, 4)
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "eta 0s at 2.00 s/step" in last and "<" not in last and "it/s" not in last
    seconds = RunBar(3, "budget", True, unit="s")
    seconds.update(1)
    assert seconds.eta_text(1) == "eta 2s"  # a time budget: what is left of it
    seconds.close()
    capsys.readouterr()
    for progress in (False, None):  # None: only on a terminal, and the captured stderr is none
        with RunBar(2, "hidden", progress) as quiet:
            quiet.update(2)
    assert capsys.readouterr().err == ""


def _prune_parts():
    from ditkit.compress.prune import make_data_fn

    torch.manual_seed(0)
    model = ditkit.DiT(ditkit.DiTConfig(input_size=8, patch_size=4, in_channels=3, hidden_size=16, depth=4, num_heads=2,
                                        num_classes=10, learn_sigma=False))
    images = [(torch.rand(3, 8, 8) * 2 - 1, i % 10) for i in range(16)]
    return model, make_data_fn(model.config, data=images, batch_size=4)


def test_prune_search_and_fine_tune_bars_cover_their_whole_budget(capsys):
    import copy

    from ditkit.compress.distill import distill
    from ditkit.compress.prune import importance_prune, learn_prune

    model, data = _prune_parts()
    capsys.readouterr()
    learn_prune(model, ditkit.FlowMatching(), data, (1, 2), steps=3, progress=True)
    importance_prune(model, 2, ditkit.FlowMatching(), data, batches=2, progress=True)
    student = copy.deepcopy(model)
    distill(student, model, ditkit.FlowMatching(), data, steps=3, progress=True)
    found = bars(capsys.readouterr().err)
    assert found["mask search"][0] == (0, 3) and found["mask search"][-1] == (3, 3)
    assert found["importance"][0] == (0, 2) and found["importance"][-1] == (2, 2)
    assert found["fine-tune"][0] == (0, 3) and found["fine-tune"][-1] == (3, 3)  # bounded by steps: its steps
    distill(student, model, ditkit.FlowMatching(), data, max_seconds=1, progress=True)
    states = bars(capsys.readouterr().err)["fine-tune"]
    assert states[0] == (0, 1) and states[-1] == (1, 1)  # bounded by time: its seconds
    distill(student, model, ditkit.FlowMatching(), data, steps=2)  # default: only on a terminal
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ditkit.pipelines import save_pipeline
    from ditkit.shapes.data import CLASSES

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bars") / "d4"
    save_pipeline(path, ditkit.DiT(ditkit.get_preset("shapes-tiny").replace(depth=4, hidden_size=32)),
                  ditkit.FlowMatching(), class_names=list(CLASSES))
    return path


def test_prune_command_shows_the_search_and_fine_tune_bars_on_a_terminal(model_dir, tmp_path, capsys, monkeypatch):
    from ditkit.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "p"), "--keep", "2", "--search-steps", "3",
                 "--finetune-steps", "2", "--batch-size", "4"]) == 0
    found = bars(capsys.readouterr().err)
    assert found["mask search"][0] == (0, 3) and found["mask search"][-1] == (3, 3)
    assert found["fine-tune"][0] == (0, 2) and found["fine-tune"][-1] == (2, 2)
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "q"), "--keep", "2", "--search-steps", "2",
                 "--batch-size", "4", "--no-progress"]) == 0
    assert bars(capsys.readouterr().err) == {}


SETTING = bench.BenchSetting(steps=3, num_samples=3, batch_size=2, repeats=2)
METHODS = [bench.Method("FORA N=2", (accel.FORAConfig(interval=2),)),
           bench.Method("CFG-reuse k=2", (), cfg_every=2)]  # skipped: no guidance


def test_bench_bar_counts_every_sampler_step_of_the_run(capsys):
    # each measurement: 2 batches x 3 steps, twice (repeats); full compute, FORA, the skipped method, full compute again
    assert bench.bench_steps(SETTING, 3, len(METHODS)) == 4 * 12
    bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS, bar=True)
    states = bars(capsys.readouterr().err)["bench"]
    assert states[0] == (0, 48) and states[-1] == (36, 36)  # the skipped method's 12 steps leave the total
    timed = bench.BenchSetting(steps=3, num_samples=3, batch_size=2, repeats=2, timing_samples=1)
    assert bench.measure_steps(timed, 3) == 6 + 2 * 3  # one run over all, then the timed sample twice
    bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=timed, methods=METHODS[:1], bar=True)
    assert bars(capsys.readouterr().err)["bench"][-1] == (2 * 12 + 6, 2 * 12 + 6)
    bench.run_bench(tiny_dit(ROPE), process=ditkit.FlowMatching(), setting=SETTING, methods=METHODS[:1])
    assert capsys.readouterr().err == ""


def test_tune_bar_ends_at_the_steps_it_made(capsys):
    from ditkit.accel.tune import tune

    setting = bench.BenchSetting(steps=3, num_samples=2, batch_size=2)
    ladder = [bench.Method("FORA N=2", (accel.FORAConfig(interval=2),)),
              bench.Method("FORA N=3", (accel.FORAConfig(interval=3),))]
    # planned: calibration 4 measurements x 3 steps, held out 4 x 3; 'psnr>=1000' stops the ladder at its first rung
    tune(tiny_dit(ROPE), "psnr>=1000", process=ditkit.FlowMatching(), setting=setting, methods=ladder, bar=True)
    states = bars(capsys.readouterr().err)["tune"]
    assert states[0] == (0, 24) and states[-1] == (9, 9)  # full compute, one rung, full compute again; no held-out run
    tune(tiny_dit(ROPE), "psnr>=0", process=ditkit.FlowMatching(), setting=setting, methods=ladder, bar=True)
    states = bars(capsys.readouterr().err)["tune"]
    assert states[0] == (0, 24) and states[-1] == (12 + 9, 12 + 9)  # every rung; the fastest confirmed at once


def test_compress_bench_bar_counts_every_variant(tiny_model_dir, capsys):
    from ditkit.compress.bench_models import Variant, run_compress_bench
    from ditkit.pipelines import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    setting = bench.BenchSetting(steps=2, num_samples=2, batch_size=2)
    cache = bench.Method("FORA N=2", (accel.FORAConfig(interval=2),))
    run_compress_bench(pipe, [Variant("copy", load_pipeline(tiny_model_dir), tiny_model_dir)], setting=setting,
                       cache=cache, bar=True)
    # full compute, the variant, both with the cache, full compute again: 5 x 2 steps
    states = bars(capsys.readouterr().err)["bench"]
    assert states[0] == (0, 10) and states[-1] == (10, 10)
    run_compress_bench(pipe, [Variant("copy", load_pipeline(tiny_model_dir), tiny_model_dir)], setting=setting,
                       bar=True)
    states = bars(capsys.readouterr().err)["bench"]
    assert states[0] == (0, 6) and states[-1] == (6, 6)


def test_video_eval_has_one_bar_over_every_generation_and_records_its_options(capsys):
    from ditkit.assets import default_classifier_dir
    from ditkit.eval.video import evaluate_video
    from ditkit.shapes.classifier import load_classifier

    pipe, clf = tiny_video(), load_classifier(default_classifier_dir())
    result = evaluate_video(pipe, clf, num_clips=2, steps=2, batch_size=1, long_clips=1, log=lambda _: None,
                            progress=True)
    # text-to-video 2 clips x 2 steps, image-to-video the same, 1 long clip: rollout 4 windows and chunked 4 windows
    total = 4 + 4 + pipe.progress_total(1, steps=2, frames=16) + pipe.progress_total(1, steps=2, frames=16,
                                                                                     long_mode="chunked")
    found = bars(capsys.readouterr().err)
    assert list(found) == ["eval video"]  # one bar, not one per generation
    assert found["eval video"][0] == (0, total) and found["eval video"][-1] == (total, total)
    assert result["options"]["steps"] == 2 and result["options"]["batch_size"] == 1 and result["options"]["frames"] == 4
    assert result["image_to_video"]["options"]["steps"] == 2
    assert result["long_video"]["chunked"]["options"]["long_mode"] == "chunked"
    assert result["long_video"]["rollout"]["options"]["frames"] == 16
    evaluate_video(pipe, clf, num_clips=1, steps=1, i2v=False, log=lambda _: None)
    assert capsys.readouterr().err == ""


def test_classifier_and_autoencoder_training_bars_show_the_whole_run_estimate(tmp_path, capsys):
    from ditkit.models.autoencoder import AutoencoderConfig
    from ditkit.shapes.classifier import ClassifierConfig
    from ditkit.train.autoencoder import train_autoencoder
    from ditkit.train.classifier import train_classifier

    train_classifier(tmp_path / "clf", steps=3, batch_size=8, log=lambda _: None, num_train=32, num_eval=20,
                     config=ClassifierConfig(widths=(8, 16), groups=4), progress=True)
    train_autoencoder(tmp_path / "ae", steps=3, batch_size=4, log=lambda _: None, num_train=16, num_eval=8, num_stats=8,
                      classifier=None, config=AutoencoderConfig(downsample=4, latent_channels=4, widths=(8, 8, 8),
                                                                groups=4), progress=True)
    err = capsys.readouterr().err
    found = bars(err)
    for name in ("train classifier", "train autoencoder"):
        assert found[name][0] == (0, 3) and found[name][-1] == (3, 3)
    lines = [line for line in err.replace("\r", "\n").splitlines() if "3/3" in line]
    assert lines and all("eta 0s at " in line and "s/step" in line and "<" not in line for line in lines)


def test_quantize_calibration_and_sensitivity_bars(capsys):
    from ditkit.compress.calibrate import collect_calibration
    from ditkit.compress.quantize import quantize_model

    model = tiny_dit(ROPE)
    calib = collect_calibration(model, ditkit.FlowMatching(), torch.arange(3), steps=4, progress=True)
    quantize_model(model, "w8a8", calib, progress=True)
    found = bars(capsys.readouterr().err)
    assert found["calibration"][0] == (0, 4) and found["calibration"][-1] == (4, 4)  # one batch of 3 x 4 steps
    layers = found["sensitivity"][0][1]
    assert layers > 0 and found["sensitivity"][-1] == (layers, layers)
    collect_calibration(model, ditkit.FlowMatching(), torch.arange(2), steps=2)
    assert capsys.readouterr().err == ""
