"""Training killed at any rename, write or delete (and by a real ``kill -9``) resumes bit-exact, logs every
step once, and leaves no temporary file or half-deleted checkpoint behind.

The tiny run of the trainer tests (D=32, depth 2, 16x16 shapes): 4 steps, a checkpoint every 2 steps, only
the newest kept, so a kill falls into checkpoint writes, the ``latest`` pointer, log appends and the deletion
of the old checkpoint alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ddp_worker as worker
import torch
from kill_points import KILLED, count_points, killed_at, leftovers

torch.set_num_threads(1)
RUN = dict(steps=4, ckpt_every=2, keep_checkpoints=1, log_every=1)


def _straight(tmp_path: Path):
    t = worker.make_trainer(tmp_path / "straight", **RUN)
    t.run()
    return t


def _check_resumed(out: Path, straight) -> None:
    resumed = worker.make_trainer(out, **RUN)
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, RUN["steps"] + 1))  # every step once, none repeated after the resume
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_0000004"]  # step 2's deleted, never half
    assert {p.name for p in (ckpt / "step_0000004").iterdir()} >= {"model.safetensors", "ema.safetensors", "state.json"}
    assert leftovers(out) == []


def test_training_killed_at_every_write_resumes_exactly(tmp_path):
    straight = _straight(tmp_path)
    points = count_points(lambda: worker.make_trainer(tmp_path / "count", **RUN).run())
    assert points >= 15
    for k in range(1, points + 1):
        out = tmp_path / f"k{k}"
        assert killed_at(lambda out=out: worker.make_trainer(out, **RUN).run(), k) == KILLED
        _check_resumed(out, straight)


def test_training_killed_by_sigkill_resumes_exactly(tmp_path):
    """A real ``kill -9`` of a training process just after its first checkpoint (into the next steps, maybe a
    write), then a resume in this process."""
    straight = _straight(tmp_path)
    out = tmp_path / "run"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch; torch.set_num_threads(1); import time; "
            "import ditkit.train.trainer as tr; import ddp_worker as w; "
            "step = tr.Trainer.train_step\n"
            "def slow(self):\n    time.sleep(0.05); return step(self)\n"
            "tr.Trainer.train_step = slow; w.make_trainer(sys.argv[2], **eval(sys.argv[3])).run()")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", code, str(Path(worker.__file__).parent), str(out), repr(RUN)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, latest = time.time() + 60, out / "checkpoints" / "latest"
    while time.time() < deadline and p.poll() is None and not latest.exists():
        time.sleep(0.005)
    time.sleep(0.03)  # into the next steps, maybe into a write
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL and latest.exists()  # killed mid-run, after one checkpoint
    _check_resumed(out, straight)
