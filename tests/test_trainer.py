"""The trainer: exact resume, 2-process DDP == one process on the same global batch, gradient
accumulation, atomic checkpoints with a `latest` pointer and pruning.

Tiny runs (D=32, depth 2, 16x16 shapes, global batch 8, a few steps); the whole file takes ~30 s on
2 CPU cores, most of it the two torchrun launches.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_worker as worker
import pytest
import torch

from ditkit.io.checkpoint import load_tensors
from ditkit.train import trainer as trainer_mod

torch.set_num_threads(1)

WORKER = Path(worker.__file__)  # launched under torchrun
make_trainer = worker.make_trainer


def latest_dir(out_dir: Path) -> Path:
    ckpt = Path(out_dir) / "checkpoints"
    return ckpt / (ckpt / "latest").read_text().strip()


def assert_same_state(a: dict, b: dict, exact: bool = True, atol: float = 1e-5, rtol: float = 1e-4):
    assert set(a) == set(b)
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=k)


def read_log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "train_log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- exact resume


def test_resume_half_way_is_exact(tmp_path: Path):
    straight = make_trainer(tmp_path / "a", steps=6, ckpt_every=3)
    straight.run()
    first = make_trainer(tmp_path / "b", steps=3, ckpt_every=3)  # a run stopped at N/2 ...
    first.run()
    resumed = make_trainer(tmp_path / "b", steps=6, ckpt_every=3)  # ... and continued to N
    resumed.run()
    assert resumed.step == straight.step == 6
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.ema.state_dict(), resumed.ema.state_dict())
    opt_a, opt_b = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    for idx in opt_a:
        for name in opt_a[idx]:
            assert torch.equal(opt_a[idx][name], opt_b[idx][name]), (idx, name)


def test_preempted_run_with_cosine_schedule_resumes_exactly(tmp_path: Path):
    changes = dict(steps=5, ckpt_every=4, lr_schedule="cosine")
    straight = make_trainer(tmp_path / "a", **changes)
    straight.run()
    for expect in (1, 2):  # two runs cut short after one step each (checkpoint off the ckpt_every grid)
        result = make_trainer(tmp_path / "b", **changes).run(max_seconds=0)
        assert result == {"step": expect, "elapsed_seconds": pytest.approx(result["elapsed_seconds"]), "done": False}
    resumed = make_trainer(tmp_path / "b", **changes)
    assert resumed.run()["done"]
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.ema.state_dict(), resumed.ema.state_dict())
    assert [r["step"] for r in read_log(tmp_path / "b")] == [1, 2, 3, 4, 5]
    losses_a = [r["loss"] for r in read_log(tmp_path / "a")]
    losses_b = [r["loss"] for r in read_log(tmp_path / "b")]
    assert losses_a == losses_b


# ----------------------------------------------------------------------------- DDP and accumulation


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_process_ddp_matches_one_process(tmp_path: Path, grad_accum: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(WORKER), str(tmp_path / "ddp"), str(grad_accum)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    single = make_trainer(tmp_path / "single")  # one process, grad_accum 1, same global batch of 8
    single.run()
    ddp_dir = latest_dir(tmp_path / "ddp")
    assert ddp_dir.name == "step_0000004"
    assert_same_state(load_tensors(ddp_dir / "model.safetensors"), single.model.state_dict(), exact=False)
    assert_same_state(load_tensors(ddp_dir / "ema.safetensors"), single.ema.state_dict(), exact=False)
    # the logged loss is the global-batch mean on both
    for a, b in zip(read_log(tmp_path / "ddp"), read_log(tmp_path / "single")):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_grad_accum_matches_one_big_batch(tmp_path: Path):
    one = make_trainer(tmp_path / "one", grad_accum=1)
    one.run()
    two = make_trainer(tmp_path / "two", grad_accum=2)
    assert two.micro == 4
    two.run()
    assert_same_state(one.model.state_dict(), two.model.state_dict(), exact=False)
    with pytest.raises(ValueError, match="not divisible"):
        make_trainer(tmp_path / "three", grad_accum=3)


def test_label_drop_happens_once(tmp_path: Path):
    """The trainer draws the CFG label drop itself (per global batch); the model must not drop again."""
    t = make_trainer(tmp_path)
    t.model.train()
    y = torch.arange(1000) % 10
    torch.manual_seed(0)
    torch.testing.assert_close(t.model.y_embedder(y, True), t.model.y_embedder.embedding_table.weight[y])
    assert t.model.y_embedder.embedding_table.num_embeddings == 11  # the null row is still there
    _, labels, _, _, drop = t._batch(0)
    assert labels.shape == drop.shape == (8,)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoints_latest_pointer_and_pruning(tmp_path: Path):
    t = make_trainer(tmp_path, steps=6, ckpt_every=2, keep_checkpoints=2)
    t.run()
    ckpt = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_0000004", "step_0000006"]
    assert (ckpt / "latest").read_text().strip() == "step_0000006"
    files = {p.name for p in (ckpt / "step_0000006").iterdir()}
    assert files == {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"}
    state = json.loads((ckpt / "step_0000006" / "state.json").read_text())
    assert state["step"] == 6 and state["train_config"]["model"] == worker.MODEL.to_dict()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp leftovers
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 6


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path: Path, monkeypatch):
    t = make_trainer(tmp_path, steps=4, ckpt_every=2)
    t.run()
    ckpt = tmp_path / "checkpoints"
    before = sorted(p.name for p in ckpt.iterdir())

    def broken(path, tensors, metadata=None):  # dies half-way through the checkpoint folder
        if Path(path).name == "optimizer.safetensors":
            raise OSError("disk full")
        return real(path, tensors, metadata)

    real = trainer_mod.save_tensors
    monkeypatch.setattr(trainer_mod, "save_tensors", broken)
    more = make_trainer(tmp_path, steps=6, ckpt_every=2)
    with pytest.raises(OSError, match="disk full"):
        more.run()  # resumes at 4, trains to 6, fails writing step 6
    assert sorted(p.name for p in ckpt.iterdir()) == before  # nothing new, nothing half-written
    assert (ckpt / "latest").read_text().strip() == "step_0000004"
    monkeypatch.setattr(trainer_mod, "save_tensors", real)
    again = make_trainer(tmp_path, steps=6, ckpt_every=2)
    again.run()
    assert again.step == 6 and (ckpt / "latest").read_text().strip() == "step_0000006"


def test_resume_refuses_a_different_model(tmp_path: Path):
    make_trainer(tmp_path, steps=2).run()
    other = make_trainer(tmp_path, steps=4, model=dataclasses.replace(worker.MODEL, depth=1))
    with pytest.raises(trainer_mod.CheckpointError, match="different model config"):
        other.run()
