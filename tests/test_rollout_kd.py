"""On-policy distillation states (`ditkit.compress.rollout_kd`) and their use in `distill` / `ditkit prune`."""

import json

import pytest
import torch

from ditkit import DiT, FlowMatching, get_preset, save_pipeline
from ditkit.cli import main
from ditkit.compress.distill import DistillConfig, distill
from ditkit.compress.prune import build_pruned, make_data_fn
from ditkit.compress.rollout_kd import RolloutPool
from ditkit.data.shapes import CLASSES
from ditkit.diffusion.samplers import flow_time_grid
from ditkit.pipeline import SamplingDefaults

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = get_preset("shapes-tiny").replace(depth=4, hidden_size=32)


def tiny_dit(seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    model = DiT(CFG)
    for p in model.parameters():  # leave adaLN-Zero so every block does something
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():  # labels that matter, so guidance changes the path
        for p in model.y_embedder.parameters():
            p.mul_(20)
    return model.eval()


def pool(**kw) -> RolloutPool:
    args = dict(num_classes=CFG.num_classes, shape=(CFG.in_channels, *CFG.hw), steps=6, shift=2.0, cfg_scale=3.0,
                trajectories=1, label_drop=0.0)
    return RolloutPool(FlowMatching(), **(args | kw))


def test_pool_states_are_the_models_own_guided_euler_path():
    model, process = tiny_dit(), FlowMatching()
    p = pool()
    x, t, y = p.draw(model, 6)  # one trajectory: all six states
    assert x.shape == (6, CFG.in_channels, *CFG.hw) and p.refills == 1 and len(p) == 0
    assert (y == y[0]).all() and 0 <= int(y[0]) < CFG.num_classes
    order = torch.argsort(t, descending=True)  # back into path order: s from 1 down
    x, t = x[order], t[order]
    grid = flow_time_grid(6, 2.0)
    torch.testing.assert_close(t, process.network_time(grid[:-1].float()))
    null = torch.full_like(y[:1], CFG.num_classes)
    with torch.no_grad():
        for i in range(5):  # each state is the previous one plus one guided Euler step
            c, u = model(x[i:i + 1], t[i:i + 1], y[:1]), model(x[i:i + 1], t[i:i + 1], null)
            want = x[i:i + 1] + (grid[i + 1] - grid[i]) * (u + 3.0 * (c - u))
            torch.testing.assert_close(x[i + 1:i + 2], want, rtol=1e-4, atol=1e-5)
    p.draw(model, 1)
    assert p.refills == 2  # ran dry: a fresh path from the model as it is now


def test_pool_keeps_low_noise_states_hands_each_out_once_and_drops_labels():
    model = tiny_dit()
    low = pool(max_s=0.5, trajectories=4)
    keep = [s for s in flow_time_grid(6, 2.0)[:-1].tolist() if s <= 0.5]
    x, t, _ = low.draw(model, 4 * len(keep))
    assert low.refills == 1 and len(low) == 0 and (FlowMatching().process_time(t) <= 0.5 + 1e-6).all()
    assert len({tuple(v.flatten().tolist()) for v in x}) == x.shape[0]  # no state twice
    big = pool(trajectories=1)
    assert big.draw(model, 15)[0].shape[0] == 15 and big.refills == 3  # a draw larger than one refill grows the pool
    dropping = pool(trajectories=40, label_drop=0.5)
    y = dropping.draw(model, 200)[2]
    assert 0.35 < (y == CFG.num_classes).float().mean().item() < 0.65
    with pytest.raises(ValueError, match="class-conditional"):
        RolloutPool(FlowMatching(), num_classes=0, shape=(4, 8, 8))
    with pytest.raises(ValueError, match="max_s"):
        pool(max_s=0.0)
    with pytest.raises(ValueError, match="no sampler step"):
        pool(max_s=0.01, steps=2)


def test_distill_with_rollouts_matches_the_teacher_on_the_students_own_path():
    teacher = tiny_dit()
    data = make_data_fn(CFG, batch_size=4, seed=0)
    student = build_pruned(tiny_dit(seed=1), [0, 3])  # far from the teacher to begin with
    probe = pool(trajectories=8, steps=6)
    x, t, y = probe.draw(student, 48)  # the untrained student's own states

    def gap():
        with torch.no_grad():
            return (student(x, t, y) - teacher(x, t, y)).pow(2).mean().item()

    before = gap()
    rec = distill(student, teacher, FlowMatching(), data, steps=40, lr=1e-3, warmup_steps=1, rollout_share=0.5,
                  rollout_steps=6, rollout_trajectories=2)
    assert rec["rollout"]["share"] == 0.5 and rec["rollout"]["refills"] == 40 * 2 // 12 + 1
    assert gap() < 0.5 * before
    assert distill(build_pruned(teacher, [0, 3]), teacher, FlowMatching(), data, steps=1)["rollout"] is None
    with pytest.raises(ValueError, match="rollout_share"):
        DistillConfig(steps=1, rollout_share=1.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rollout") / "d4"
    save_pipeline(path, tiny_dit(), FlowMatching(), class_names=list(CLASSES),
                  defaults=SamplingDefaults(sampler="euler", steps=4, cfg_scale=2.0))
    return path


def test_prune_command_kd_rollout(model_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["prune", "--model", str(model_dir), "--out", str(out), "--keep", "2", "--search-steps", "2",
                 "--batch-size", "4", "--finetune-steps", "3", "--kd-rollout", "0.5", "--rollout-max-s", "0.5"]) == 0, \
        capsys.readouterr().err
    rec = json.loads((out / "prune.json").read_text())
    assert rec["job"]["rollout_share"] == 0.5 and rec["finetune"]["rollout"]["max_s"] == 0.5
    assert rec["finetune"]["rollout"]["refills"] >= 1
    capsys.readouterr()
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--keep", "2",
                 "--kd-rollout", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--kd-rollout must lie in [0, 1)" in err
    assert not (tmp_path / "x").exists()
