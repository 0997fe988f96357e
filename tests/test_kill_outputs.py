"""Kill every writing command at each of its renames, writes and deletes: the output path then holds the
complete old or the complete new output, never neither nor a mix inside one file; the next run of the same
command leaves no temporary file behind and writes the new output.

Each case first writes an "old" output (other options), records the "new" output of an uninterrupted run
beside it, then for every kill point k runs the command in a forked child that dies before its k-th
operation (`kill_points.killed_at`) and checks the output, and finally reruns it to completion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from kill_points import KILLED, cli, fingerprint, killed_at, leftovers

from ditkit.assets import assets_dir
from ditkit.io import atomic
from ditkit.io.checkpoint import atomic_dir, atomic_write

torch.set_num_threads(1)


def _write_folder(path: Path, text: str):
    def run():
        with atomic_dir(path) as tmp:
            for i in range(3):
                (tmp / f"f{i}.txt").write_text(f"{text} {i}")
            (tmp / "sub").mkdir()
            (tmp / "sub" / "g.txt").write_text(text)
    return run


def _write_file(path: Path, text: str):
    def run():
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    return run


def _check_every_kill(out_paths: list[Path], make_old, make_new, workdir: Path) -> int:
    """The kill-at-every-point loop for outputs ``out_paths`` (files or folders); returns the kill points."""
    make_old()
    old = [fingerprint(p) for p in out_paths]
    restore = workdir / "old-copy"
    restore.mkdir()
    for p in out_paths:  # keep the old output to start each kill from it
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, restore / p.name)
    make_new()
    new = [fingerprint(p) for p in out_paths]
    assert old != new, "the old and the new output must differ for the test to mean something"
    points = 0
    k = 1
    while True:
        for p in out_paths:  # back to the old output
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            src = restore / p.name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, p)
        status = killed_at(make_new, k)
        assert status in (KILLED, 0), f"the child failed at kill point {k} (exit {status})"
        atomic.tidy_dir(out_paths[0].parent)  # what the next start of a command does first
        for p, o, n in zip(out_paths, old, new):
            got = fingerprint(p)
            assert got in (o, n), f"kill at point {k}: {p.name} is neither the old nor the new output"
        if status == 0:  # the command finished before point k: every point was tried
            break
        points += 1
        k += 1
    make_new()  # the next run completes and cleans up
    assert [fingerprint(p) for p in out_paths] == new
    assert leftovers(out_paths[0].parent) == []
    return points


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_folder_swap_killed_anywhere_keeps_old_or_new(tmp_path, monkeypatch, exchange):
    if not exchange:  # the fallback where renameat2 is missing: the gap between the renames is recovered
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    out = tmp_path / "out" / "model"
    points = _check_every_kill([out], _write_folder(out, "old"), _write_folder(out, "new"), tmp_path)
    assert points >= 6


def test_file_write_killed_anywhere_keeps_old_or_new(tmp_path):
    out = tmp_path / "out" / "r.json"
    assert _check_every_kill([out], _write_file(out, "old"), _write_file(out, "new"), tmp_path) >= 2


def test_two_renames_cut_between_them_are_undone_on_the_next_start(tmp_path):
    out = tmp_path / "model"
    _write_folder(out, "old")()
    old = out.with_name(f".model.ditkit-old-{2**22 + 12345}")  # a pid no process has
    out.rename(old)
    assert atomic.tidy(out) == 1 and fingerprint(out)["f0.txt"] and not old.exists()


def test_a_live_writer_keeps_its_temporary_files(tmp_path):
    mine = tmp_path / f".r.json.{__import__('os').getpid()}.abc123.tmp"
    dead = tmp_path / f".r.json.{2**22 + 12345}.abc123.tmp"
    legacy = tmp_path / ".r.json.abcd1234.tmp"
    other = tmp_path / ".notes.txt"
    for p in (mine, dead, legacy, other):
        p.write_text("x")
    atomic.tidy(tmp_path / "r.json")
    assert mine.exists() and other.exists() and not dead.exists() and not legacy.exists()


# ----------------------------------------------------------------------------- every writing command


@pytest.fixture(scope="module")
def teacache_fit(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "tc.json"
    cli(["calibrate-teacache", "--model", tiny_model_dir, "--steps", "3", "--num-samples", "2", "--batch-size", "2",
         "--seeds", "5", "--degree", "1", "--out", path])()
    return path


SMALL = ["--steps", "2", "--batch-size", "2"]


def _cases(m, tc, run):
    """name -> (outputs, argv of the old output, argv of the new one), relative to the working directory."""
    bench = ["--model", m, "--num-samples", "2", *SMALL, "--no-classifier", "--teacache", tc, "--methods", "FORA N=2"]
    encode = ["encode", "--data", "shapes", "--vae", assets_dir() / "shapes-ae", "--num", "8", "--shard-size", "4",
              "--batch-size", "4", "--quiet"]
    return {
        "generate": (["g.png", "g.png.json"],
                     ["generate", "--model", m, "--steps", "1", "--classes", "0", "--n-per-class", "1", "--seed", "1",
                      "--out", "g.png", "--no-progress"],
                     ["generate", "--model", m, "--steps", "1", "--classes", "0", "--n-per-class", "1", "--seed", "0",
                      "--out", "g.png", "--no-progress"]),
        "calibrate-teacache": (["t.json"],
                               ["calibrate-teacache", "--model", m, "--steps", "3", "--num-samples", "2", "--seeds", "6",
                                "--degree", "1", "--out", "t.json"],
                               ["calibrate-teacache", "--model", m, "--steps", "3", "--num-samples", "2", "--seeds", "5",
                                "--degree", "1", "--out", "t.json"]),
        "quantize": (["q", "q.json"],
                     ["quantize", "--model", m, "--calib-samples", "0", "--scheme", "w8a16", "--out", "q", "--report",
                      "q.json", "--overwrite"],
                     ["quantize", "--model", m, "--calib-samples", "0", "--scheme", "w8a8", "--out", "q", "--report",
                      "q.json", "--overwrite"]),
        "convert": (["c"], ["convert", m, "c", "--to", "ditkit", "--dtype", "float16", "--overwrite",
                            "--no-record-command"],
                    ["convert", m, "c", "--to", "ditkit", "--overwrite", "--no-record-command"]),
        "bench accel": (["b"], ["bench", "accel", *bench, "--seed", "1", "--out", "b"],
                        ["bench", "accel", *bench, "--out", "b"]),
        "tune": (["tune.json"], ["tune", *bench, "--budget", "psnr>=1", "--json", "tune.json"],
                 ["tune", *bench, "--budget", "psnr>=0", "--json", "tune.json"]),
        "eval": (["e.json"], ["eval", "--model", m, "--num-samples", "4", "--reference-samples", "8", "--steps", "1",
                              "--seed", "1", "--json", "e.json", "--no-progress"],
                 ["eval", "--model", m, "--num-samples", "4", "--reference-samples", "8", "--steps", "1",
                  "--json", "e.json", "--no-progress"]),
        "bench compress": (["bc"], ["bench", "compress", "--model", m, "--variants", m, "--num-samples", "2", *SMALL,
                                    "--no-classifier", "--seed", "1", "--out", "bc"],
                           ["bench", "compress", "--model", m, "--variants", m, "--num-samples", "2", *SMALL,
                            "--no-classifier", "--out", "bc"]),
        "prune": (["p"], ["prune", "--model", m, "--keep", "1", "--method", "importance", "--calib-batches", "1",
                          "--batch-size", "2", "--out", "p"],
                  ["prune", "--model", m, "--keep", "2", "--method", "importance", "--calib-batches", "1",
                   "--batch-size", "2", "--out", "p"]),
        "export": (["e"], ["export", "--run", run, "--steps", "10", "--out", "e"],
                   ["export", "--run", run, "--steps", "20", "--out", "e"]),
        "encode": (["lc"], [*encode, "--seed", "1", "--out", "lc"], [*encode, "--out", "lc", "--overwrite"]),
    }


CASES = ["generate", "calibrate-teacache", "quantize", "convert", "bench accel", "tune", "prune", "export", "eval",
         "bench compress", "encode"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from ddp_worker import make_trainer

    out = tmp_path_factory.mktemp("run") / "r"
    make_trainer(out, steps=2, ckpt_every=2).run()
    return out


@pytest.mark.parametrize("name", CASES)
def test_every_writing_command_killed_anywhere_keeps_old_or_new(name, tiny_model_dir, teacache_fit, run_dir, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs, old_argv, new_argv = _cases(tiny_model_dir, teacache_fit, run_dir)[name]
    outs = [tmp_path / o for o in outs]
    points = _check_every_kill(outs, cli(old_argv), cli(new_argv), tmp_path)
    assert points >= 1
    print(f"{name}: killed at each of its {points} renames, writes and deletes")


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    from video_tiny import save_tiny_video

    path = tmp_path_factory.mktemp("video") / "v"
    save_tiny_video(path)
    return path


def test_generate_video_killed_anywhere_keeps_old_or_new(video_dir, tmp_path, monkeypatch):
    from video_tiny import PROMPTS

    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--video", "--model", video_dir, "--prompt", PROMPTS[0], "--steps", "1", "--n-per-class", "1",
            "--out", "v.gif", "--no-progress"]
    outs = [tmp_path / "v.gif", tmp_path / "v.gif.json"]
    points = _check_every_kill(outs, cli([*argv, "--seed", "1"]), cli([*argv, "--seed", "0"]), tmp_path)
    assert points >= 1
    print(f"generate --video: killed at each of its {points} renames, writes and deletes")


def test_train_classifier_killed_anywhere_keeps_old_or_new(tmp_path, monkeypatch):
    import functools

    import ditkit.train.classifier as classifier

    # a run renders 40,000 training images whatever --steps is: a few dozen keep each run well under a second
    # (the CLI looks `train_classifier` up when it runs, and the forked children inherit the patch)
    monkeypatch.setattr(classifier, "train_classifier",
                        functools.partial(classifier.train_classifier, num_train=64, num_eval=16))
    monkeypatch.chdir(tmp_path)
    argv = ["train-classifier", "--steps", "2", "--out", "cls", "--no-progress"]
    points = _check_every_kill([tmp_path / "cls"], cli([*argv, "--seed", "1"]), cli([*argv, "--seed", "0"]), tmp_path)
    assert points >= 1
    print(f"train-classifier: killed at each of its {points} renames, writes and deletes")
