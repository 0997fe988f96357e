"""Model cards: the README.md written into a model folder (ditkit's format or a diffusers folder).

    write_model_card("assets/my-dit", info)

``info`` is a ditkit ``config.json`` dict (``{"config": {DiTConfig}, "process": ..., "sampling": ...,
"class_names": [...], "training": ...}``) plus optional ``"format"`` (``"ditkit"`` or ``"diffusers"``),
``"provenance"`` (where the weights came from) and ``"notes"`` (lines the reader must know, e.g. a numerics
change made by an export). The card has a Hugging Face front matter and five sections — model (parameters,
shapes, compute), process (noise process and sampling defaults), numerics (the two options on which the
reference DiT and diffusers' port differ, docs/reference.md §4), provenance and the full config — and is
deterministic: the same ``info`` gives the same bytes (no dates), so converted folders diff cleanly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import DiTConfig
from ..io.checkpoint import atomic_write
from ..models.dit import DiT, macs_per_forward

_FORMATS = {
    "ditkit": "ditkit model folder (`model.safetensors` + `config.json`); load with `ditkit.load_pipeline(folder)`",
    "diffusers": "diffusers `DiTTransformer2DModel` folder (`config.json` + `diffusion_pytorch_model.safetensors`); "
                 "load with `DiTTransformer2DModel.from_pretrained(folder)` or `ditkit.interop.import_diffusers(folder)`",
}


def _process_lines(process: dict | None, cfg: DiTConfig) -> list[str]:
    if not process:
        return ["Not recorded (the network alone was converted)."]
    if process.get("type") == "flow":
        f = process.get("flow", {})
        t_net = "1 - s (SiT convention)" if f.get("sit_time") else f"t = {f.get('time_scale', 1000.0):g} * s"
        return [
            "Flow matching, linear interpolant x_s = (1 - s) x0 + s eps (s = 0 data, s = 1 noise); the network "
            "predicts the velocity eps - x0.",
            f"Network time: {t_net}.",
        ]
    g = process.get("gaussian", {})
    variance = "learned-range variance (IDDPM)" if g.get("learn_sigma", cfg.learn_sigma) else \
        f"fixed variance ({g.get('fixed_variance', 'large')})"
    return [
        f"Gaussian diffusion: {g.get('schedule', 'linear')} schedule, {g.get('num_timesteps', 1000)} steps, "
        f"predicts {g.get('prediction', 'epsilon')}, {variance}.",
        "Network time: the integer step index 0-999 (999 = noise), as in the reference DiT.",
    ]


def _numerics_lines(cfg: DiTConfig) -> list[str]:
    half = cfg.frequency_embedding_size // 2
    shift = cfg.timestep_freq_shift
    which = {0: " (the reference DiT)", 1: " (diffusers' port)"}.get(shift, "")
    mlp_eps = cfg.norm_eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps
    ref = shift == 0 and cfg.norm_eps == 1e-6 and mlp_eps == 1e-6
    diff = shift == 1 and cfg.norm_eps == 1e-6
    summary = ("These are the reference DiT's numerics (facebookresearch/DiT)." if ref else
               "These are diffusers' DiTTransformer2DModel numerics: ditkit reproduces diffusers' outputs." if diff else
               "These numerics match neither the reference DiT nor diffusers exactly.")
    return [
        f"- timestep frequencies: exp(-ln(1e4) i / {half - shift}), i < {half} "
        f"(`timestep_freq_shift={shift}`){which}",
        f"- LayerNorm eps: {cfg.norm_eps:g} before attention and in the final layer, {mlp_eps:g} before the MLP "
        f"(`norm_eps={cfg.norm_eps:g}`, `mlp_norm_eps={cfg.mlp_norm_eps!r}`)",
        "",
        summary + " The reference DiT and diffusers differ only in these two options (ditkit docs/reference.md §4).",
    ]


def model_card(info: dict) -> str:
    """The README.md text for ``info`` (see module doc)."""
    cfg = DiTConfig.from_dict(info["config"])
    with torch.device("meta"):
        params = DiT(cfg).num_parameters()
    h, w = cfg.hw
    fmt = info.get("format", "ditkit")
    classes = info.get("class_names") or []
    sampling = info.get("sampling")
    prov = info.get("provenance") or {}

    out = ["---", "library_name: ditkit", "tags:", "- diffusion-transformer", "- dit",
           "- class-conditional" if cfg.num_classes else "- unconditional", "---", ""]
    out += [f"# {prov.get('name') or 'DiT'}", "", f"Format: {_FORMATS.get(fmt, fmt)}.", ""]
    for note in info.get("notes") or []:
        out += [f"> **Note.** {note}", ""]

    out += ["## Model", "", "| | |", "|---|---|",
            f"| parameters | {params:,} |",
            f"| input | {cfg.in_channels} x {h} x {w}, patch {cfg.patch_size}, {cfg.num_tokens} tokens |",
            f"| width / depth / heads | {cfg.hidden_size} / {cfg.depth} / {cfg.num_heads} |",
            f"| output channels | {cfg.out_channels}{' (prediction + learned variance)' if cfg.learn_sigma else ''} |",
            f"| forward | {macs_per_forward(cfg) / 1e9:.4g} GMACs per image |"]
    if cfg.num_classes:
        names = f": {', '.join(classes)}" if classes else ""
        null = f"; index {cfg.num_classes} is the null class for guidance" if cfg.class_dropout_prob > 0 else ""
        out.append(f"| classes | {cfg.num_classes}{names}{null} |")
    switches = [k for k, on in (("RoPE", cfg.use_rope), ("QK-norm", cfg.qk_norm), ("RMSNorm", cfg.norm_type == "rmsnorm"),
                                ("SwiGLU", cfg.mlp_type == "swiglu"), ("no absolute positions", not cfg.use_abs_pos)) if on]
    out += [f"| architecture | adaLN-Zero DiT{' + ' + ', '.join(switches) if switches else ' (reference layout)'} |", ""]

    out += ["## Process", ""] + _process_lines(info.get("process"), cfg)
    if sampling:
        out += ["", f"Sampling defaults: `{sampling.get('sampler')}`, {sampling.get('steps')} steps, "
                    f"guidance scale {sampling.get('cfg_scale')}"
                    + (f", shift {sampling['shift']}" if sampling.get("shift", 1.0) != 1.0 else "") + "."]
    out += ["", "## Numerics", ""] + _numerics_lines(cfg) + [""]

    out += ["## Provenance", ""]
    if prov.get("source_format"):
        out.append(f"- converted from a {prov['source_format']} checkpoint: `{prov.get('source', '?')}`")
    if prov.get("command"):
        out.append(f"- command: `{prov['command']}`")
    out.append(f"- written by ditkit {prov.get('ditkit_version', _ditkit_version())}")
    training = info.get("training")
    if training:
        cmd = f"; `{training['command']}`" if training.get("command") else ""
        out.append(f"- training: {training.get('steps')} steps, {training.get('training_minutes')} min, "
                   f"{training.get('samples_seen')} samples seen{cmd}")
    out += ["- licence: that of the source weights (the reference DiT weights are CC-BY-NC 4.0)", ""]

    out += ["## Config", "", "```json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def _ditkit_version() -> str:
    from ..version import __version__

    return __version__


def write_model_card(folder: str | os.PathLike, info: dict) -> Path:
    """Write ``folder/README.md`` (atomically) for ``info``; returns its path."""
    path = Path(folder) / "README.md"
    text = model_card(info)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path
