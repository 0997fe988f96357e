"""A tiny training run for tests/test_trainer.py, launched under torchrun (or imported in-process).

    python -m torch.distributed.run --nproc_per_node 2 --standalone tests/ddp_worker.py OUT_DIR [GRAD_ACCUM]

Both the DDP run and the single-process comparison build their Trainer with `make_trainer`, so
they share the model config, the data and every hyper-parameter.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.distributed as dist

from ditkit.config import DiTConfig
from ditkit.shapes.data import ShapesDataset
from ditkit.train.trainer import TrainConfig, Trainer

MODEL = DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                  num_classes=10, learn_sigma=False)
TRAIN = TrainConfig(model=MODEL, steps=4, batch_size=8, lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=2,
                    keep_checkpoints=2, ema_decay=0.9, seed=3)


def make_trainer(out_dir, **changes) -> Trainer:
    cfg = dataclasses.replace(TRAIN, **changes)
    return Trainer(cfg, out_dir, dataset=ShapesDataset(64, image_size=16), log=lambda *a: None, progress=False)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out_dir = argv[0]
    grad_accum = int(argv[1]) if len(argv) > 1 else 1
    make_trainer(out_dir, grad_accum=grad_accum).run()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
