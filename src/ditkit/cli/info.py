"""``ditkit info``: parameters and FLOPs of a model folder or a named preset."""

from __future__ import annotations

from ..cli_types import load_image_model as _load


def cmd_info(args) -> None:
    from ..config import get_preset
    from ..models.dit import macs_per_forward
    from ..models.text_dit import build_model

    if args.preset:
        import torch

        cfg = get_preset(args.preset)
        with torch.device("meta"):
            params = build_model(cfg).num_parameters()
        source = f"preset {args.preset}"
    else:
        pipe = _load(args.model)
        cfg, params, source = pipe.config, pipe.model.num_parameters(), str(args.model or "bundled model")
    macs = macs_per_forward(cfg)
    h, w = cfg.hw
    print(f"model:            {source}")
    print(f"parameters:       {params:,}")
    print(f"input:            {cfg.in_channels} x {h} x {w}, patch {cfg.patch_size}, {cfg.num_tokens} tokens")
    print(f"width/depth/heads {cfg.hidden_size} / {cfg.depth} / {cfg.num_heads}")
    print(f"forward:          {macs / 1e9:.3f} GMACs = {2 * macs / 1e9:.3f} GFLOPs per image")
    print(f"sampling step:    {2 * macs / 1e9:.3f} GFLOPs per image ({4 * macs / 1e9:.3f} with classifier-free guidance)")


def register(sub) -> None:
    """Add ``info`` to ditkit's subcommands."""
    i = sub.add_parser("info", help="parameters and FLOPs of a model or preset")
    i.add_argument("--model", help="model folder (default: the bundled shapes model)")
    i.add_argument("--preset", help="a named preset instead of a model folder, e.g. DiT-XL/2")
    i.set_defaults(func=cmd_info)
