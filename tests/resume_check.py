"""Shared check for the training tests: a run paused at step 2 and resumed ends bit-identical to a straight run."""

import torch


def straight_and_resumed(make_trainer, tmp_path):
    """``make_trainer(out_dir, **changes)`` -> Trainer; returns the (straight, resumed) trainers after asserting equality."""
    straight = make_trainer(tmp_path / "a")
    straight.run()
    make_trainer(tmp_path / "b", steps=2).run()
    resumed = make_trainer(tmp_path / "b")
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return straight, resumed
