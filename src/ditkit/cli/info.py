"""``ditkit info``: parameters, tokens and FLOPs of a model folder of any kind, or of a named preset.

Class-conditional, text-to-image, quantized and pruned image folders and video folders. MACs count the
trunk's linear layers and attention (`ditkit.models.dit.macs_per_forward`); a text model's caption
tokens (cross-attention, or the joint sequence of an MMDiT) are not counted.
"""

from __future__ import annotations

from pathlib import Path

from .. import cli_types as T


class _Tokens:
    """A trunk config seen over ``tokens`` tokens of ``channels`` input channels each (a video model's
    trunk runs on the tokens of every frame at once; a token holds ``temporal_patch`` frames)."""

    def __init__(self, cfg, tokens: int, pt: int):
        self._cfg, self.num_tokens = cfg, tokens
        self.in_channels, self.out_channels = cfg.in_channels * pt, cfg.out_channels * pt

    def __getattr__(self, name):
        return getattr(self._cfg, name)


def video_macs(vcfg) -> tuple[int, int]:
    """(MACs of one forward over a window of ``num_frames`` frames, tokens in it) of a `VideoDiTConfig`."""
    from ..models.dit import macs_per_forward

    cfg = vcfg.dit
    frames, per_frame = vcfg.num_frames // vcfg.temporal_patch, cfg.num_tokens
    tokens = frames * per_frame
    macs = macs_per_forward(_Tokens(cfg, tokens, vcfg.temporal_patch))
    if vcfg.attention == "factorized":  # blocks alternate: attention within a frame, then across frames
        full = 2 * tokens * tokens * cfg.hidden_size
        spatial = 2 * frames * per_frame * per_frame * cfg.hidden_size
        temporal = 2 * per_frame * frames * frames * cfg.hidden_size
        macs += cfg.depth // 2 * (spatial - full) + (cfg.depth - cfg.depth // 2) * (temporal - full)
    return macs, tokens


def _parameters(pipe) -> str:
    model, text = pipe.model, getattr(pipe, "text_encoder", None)
    n = model.num_parameters() if hasattr(model, "num_parameters") else sum(p.numel() for p in model.parameters())
    if text is None or not hasattr(text, "parameters"):
        return f"{n:,}"
    return f"{n:,} (+ {sum(p.numel() for p in text.parameters()):,} in the text encoder)"


def _kind(info: dict, text: bool) -> str:
    if info.get("kind") == "ditkit-video-dit":
        return "text-to-video"
    kind = "text-to-image" if text else "class-conditional"
    if "quantization" in info:
        kind += f", quantized {info['quantization'].get('scheme', '')}".rstrip()
    if "pruning" in info:
        p = info["pruning"]
        kind += f", pruned to {len(p.get('kept', []))} of {p.get('depth', '?')} blocks ({p.get('method', '?')})"
    return kind


def _print_image(cfg, macs: int, per: str) -> None:
    h, w = cfg.hw
    print(f"input:            {cfg.in_channels} x {h} x {w}, patch {cfg.patch_size}, {cfg.num_tokens} tokens")
    print(f"width/depth/heads {cfg.hidden_size} / {cfg.depth} / {cfg.num_heads}")
    print(f"forward:          {macs / 1e9:.3f} GMACs = {2 * macs / 1e9:.3f} GFLOPs per {per}")
    print(f"sampling step:    {2 * macs / 1e9:.3f} GFLOPs per {per} ({4 * macs / 1e9:.3f} with classifier-free guidance)")


def cmd_info(args) -> None:
    from ..assets import default_model_dir
    from ..config import get_preset
    from ..models.dit import macs_per_forward
    from ..models.text_dit import build_model

    if args.preset:
        import torch

        cfg = get_preset(args.preset)
        with torch.device("meta"):
            params = build_model(cfg).num_parameters()
        print(f"model:            preset {args.preset}")
        print(f"parameters:       {params:,}")
        _print_image(cfg, macs_per_forward(cfg), "image")
        return
    from ..pipelines import load

    folder = Path(args.model) if args.model else default_model_dir()
    pipe = load(folder)
    info = getattr(pipe, "info", None) or {}
    print(f"model:            {args.model or f'bundled model ({folder.name})'}")
    print(f"kind:             {_kind(info, getattr(pipe, 'text_encoder', None) is not None)}")
    print(f"parameters:       {_parameters(pipe)}")
    weights = folder / "model.safetensors"
    if weights.is_file():
        print(f"weights file:     {weights.stat().st_size / 2**20:.2f} MiB ({info.get('weights_dtype', 'packed')})")
    if info.get("autoencoder"):
        size = "x".join(str(s) for s in info["autoencoder"].get("image_size", []))
        print(f"autoencoder:      {info['autoencoder'].get('name', info['autoencoder'].get('path'))}"
              + (f" (images {size})" if size else ""))
    if info.get("kind") != "ditkit-video-dit":
        _print_image(pipe.config, macs_per_forward(pipe.config), "image")
        return
    vcfg = pipe.config
    cfg, pt = vcfg.dit, vcfg.temporal_patch
    macs, tokens = video_macs(vcfg)
    h, w = cfg.hw
    print(f"input:            {vcfg.num_frames} frames of {cfg.in_channels} x {h} x {w}, patch {pt} x {cfg.patch_size} x "
          f"{cfg.patch_size} (frames x rows x cols), {tokens} tokens per window ({vcfg.attention} attention)")
    print(f"width/depth/heads {cfg.hidden_size} / {cfg.depth} / {cfg.num_heads}")
    print(f"forward:          {macs / 1e9:.3f} GMACs = {2 * macs / 1e9:.3f} GFLOPs per window of {vcfg.num_frames} frames")
    print(f"sampling step:    {2 * macs / 1e9:.3f} GFLOPs per window ({4 * macs / 1e9:.3f} with classifier-free "
          "guidance); longer clips: one window per rollout chunk")


def register(sub) -> None:
    """Add ``info`` to ditkit's subcommands."""
    i = sub.add_parser("info", help="parameters, tokens and FLOPs of a model folder (any kind) or a preset")
    i.add_argument("--model", type=T.text, help="model folder: class, text-to-image, quantized, pruned or video (default: the "
                                   "bundled shapes model)")
    i.add_argument("--preset", type=T.text, help="a named preset instead of a model folder, e.g. DiT-XL/2")
    i.conflicts("--preset", "--model", why="give a model folder or a preset")
    i.set_defaults(func=cmd_info)
