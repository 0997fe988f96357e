"""``ditkit convert``: between the reference DiT checkpoint, a diffusers DiT folder and ditkit's model folder.

    convert("DiT-XL-2-256x256.pt", "models/dit-xl", to="ditkit")
    convert("models/dit-xl", "models/dit-xl-diffusers", to="diffusers", allow_numerics_change=True)
    convert("hub/DiT-XL-2-256", "models/from-diffusers", to="ditkit")      # a pipeline root or its transformer/
    convert("models/from-diffusers", "DiT-back.safetensors", to="reference", allow_numerics_change=True)

Source formats (``detect_format``):
  * ``"reference"``: a ``.pt``/``.pth``/``.safetensors`` file with the reference keys (docs/reference.md §2), a plain
    state dict or a ``train.py`` checkpoint (EMA weights). ``.pt`` files are read with ``weights_only=True``
    (``io.checkpoint.load_torch_file``): no code from the file is run.
  * ``"diffusers"``: a ``DiTTransformer2DModel`` folder, or a pipeline root with ``transformer/``.
  * ``"ditkit"``: a ditkit model folder (``config.json`` with ``"kind": "ditkit-dit"`` + ``model.safetensors``).

Targets write the network exactly (every tensor bit-identical) and record what the format can hold:
  * ``"ditkit"``: the model folder with the process, class names and sampling defaults, plus README.md;
  * ``"diffusers"``: the transformer folder plus README.md; process, class names and sampling defaults go into
    config.json under ``"_ditkit"`` (diffusers ignores keys starting with "_"), so converting back restores them;
  * ``"reference"``: a single state-dict file (``.safetensors``, or ``.pt``/``.pth``) with ``pos_embed``.

Numerics. A target that would compute the model differently — diffusers for a reference-numerics model
(timestep-frequency divisor), the reference for a diffusers-numerics model (divisor and pre-MLP eps) — is
refused unless ``allow_numerics_change=True`` (see ``diffusers_dit``); the change is then written in the card.
A process the target cannot state (diffusers and reference files hold only the network) is reported in
``notes``. Where the source holds no process: reference checkpoints get the reference DiT's (Gaussian, linear
schedule, 1000 steps, ε + learned range; DDPM 250 steps, guidance 4.0 as in ``sample.py``; SiT checkpoints
share these keys but are flow models: set ``"process"`` in the written config.json); diffusers folders
get the one their ``scheduler/scheduler_config.json`` states, else the same DiT default (DDIM 50 steps,
guidance 4.0 as ``DiTPipeline``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..diffusion.flow import FlowMatching
from ..diffusion.gaussian import GaussianConfig, GaussianDiffusion
from ..io.checkpoint import CheckpointError, atomic_dir, atomic_write, load_json, save_tensors
from ..models.dit import DiT
from ..models.reference import to_reference_state_dict
from ..pipelines.folder import SamplingDefaults, load_float_network, process_from_info, process_info, save_pipeline
from .diffusers_dit import diffusers_config, model_from_diffusers_state, numerics_changes
from .diffusers_folder import CONFIG_NAME, WEIGHTS_NAME, export_diffusers, read_diffusers_folder, resolve_diffusers_folder
from .model_card import _ditkit_version, write_model_card

FORMATS = ("ditkit", "diffusers", "reference")
REFERENCE_SUFFIXES = (".pt", ".pth", ".safetensors")
DITKIT_KIND = "ditkit-dit"
REFERENCE_SAMPLING = SamplingDefaults(sampler="ddpm", steps=250, cfg_scale=4.0)  # DiT sample.py
DIFFUSERS_SAMPLING = SamplingDefaults(sampler="ddim", steps=50, cfg_scale=4.0)  # DiTPipeline.__call__


@dataclass
class Loaded:
    """A source, read: the network and what the source says about sampling it."""

    model: DiT
    process: FlowMatching | GaussianDiffusion
    class_names: list[str] = field(default_factory=list)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    training: dict | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- detection


def _is_ditkit_folder(path: Path) -> bool:
    if not (path / CONFIG_NAME).is_file() or not (path / "model.safetensors").is_file():
        return False
    try:
        return load_json(path / CONFIG_NAME).get("kind") == DITKIT_KIND
    except (CheckpointError, AttributeError):
        return False


def detect_format(path: str | os.PathLike) -> str:
    """"ditkit", "diffusers" or "reference" for a source path; CheckpointError if it is none of them."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such file or folder: {p}")
    if p.is_file() and p.name in ("model.safetensors", WEIGHTS_NAME):
        p = p.parent  # a weights file inside a model folder means the folder
    if p.is_dir():
        if _is_ditkit_folder(p):
            return "ditkit"
        if resolve_diffusers_folder(p) is not None:
            return "diffusers"
        raise CheckpointError(f"{p} is neither a ditkit model folder (config.json kind {DITKIT_KIND!r} + model.safetensors) "
                              "nor a diffusers DiTTransformer2DModel folder")
    if p.suffix in REFERENCE_SUFFIXES:
        return "reference"
    raise CheckpointError(f"{p}: unknown checkpoint type (expected a folder or a {'/'.join(REFERENCE_SUFFIXES)} file)")


# ----------------------------------------------------------------------------- reading


def _scheduler_process(root: Path, learn_sigma: bool) -> GaussianDiffusion | None:
    """The Gaussian process a diffusers pipeline's scheduler config states, None without one.

    ditkit's process is DiT's (docs/reference.md §3); a schedule it cannot represent is refused.
    """
    path = root / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return None
    s = load_json(path)
    steps = s.get("num_train_timesteps", 1000)
    schedule = s.get("beta_schedule", "linear")
    if schedule == "linear" and (s.get("beta_start", 1e-4), s.get("beta_end", 0.02), steps) == (1e-4, 0.02, 1000):
        schedule = "linear"  # DDPM's betas; ditkit's linear schedule is the same for 1000 steps
    elif schedule == "squaredcos_cap_v2":
        schedule = "cosine"  # IDDPM eq. 17, beta clipped at 0.999 on both sides
    else:
        raise CheckpointError(f"{path}: beta schedule {schedule!r} ({s.get('beta_start')}..{s.get('beta_end')}, "
                              f"{steps} steps) has no ditkit equivalent")
    prediction = {"epsilon": "epsilon", "v_prediction": "v"}.get(s.get("prediction_type", "epsilon"))
    if prediction is None or s.get("trained_betas") or s.get("rescale_betas_zero_snr"):
        raise CheckpointError(f"{path}: prediction {s.get('prediction_type')!r} / custom betas have no ditkit equivalent")
    return GaussianDiffusion(GaussianConfig(num_timesteps=int(steps), schedule=schedule, prediction=prediction,
                                            learn_sigma=learn_sigma))


def _read_ditkit(path: Path) -> Loaded:
    model, info, spec = load_float_network(path)
    return Loaded(model, spec.process, list(spec.class_names), spec.defaults, info.get("training"))


def _read_diffusers(path: Path) -> Loaded:
    sd, config, folder = read_diffusers_folder(path)
    model = model_from_diffusers_state(sd, config, where=str(folder))
    extra = config.get("_ditkit") if isinstance(config.get("_ditkit"), dict) else {}
    notes = []
    if "process" in extra:
        process = process_from_info(extra)
    else:
        root = folder.parent if folder.name == "transformer" and (folder.parent / "model_index.json").is_file() else folder
        process = _scheduler_process(root, model.config.learn_sigma)
        if process is None:
            process = GaussianDiffusion(GaussianConfig(learn_sigma=model.config.learn_sigma))
            notes.append("the diffusers folder states no process; the reference DiT's Gaussian process is assumed")
    try:
        sampling = SamplingDefaults(**extra["sampling"]) if "sampling" in extra else DIFFUSERS_SAMPLING
    except TypeError as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: bad _ditkit.sampling ({e})") from None
    return Loaded(model, process, list(extra.get("class_names", [])), sampling, None, notes)


def _read_reference(path: Path, num_heads: int | None = None) -> Loaded:
    model = DiT.from_reference(path, **({"num_heads": num_heads} if num_heads else {}))
    process = GaussianDiffusion(GaussianConfig(learn_sigma=model.config.learn_sigma))
    return Loaded(model, process, [], REFERENCE_SAMPLING)


_READERS = {"ditkit": _read_ditkit, "diffusers": _read_diffusers, "reference": _read_reference}


def load_source(path: str | os.PathLike, fmt: str | None = None, num_heads: int | None = None) -> tuple[Loaded, str]:
    """(the source read, its format); ``fmt`` skips detection. ``num_heads`` is for reference checkpoints
    of sizes other than DiT-S/B/L/XL: the head count is in no tensor shape (``models/reference.py``)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "reference":
        return _read_reference(Path(path), num_heads), fmt
    return _READERS[fmt](Path(path)), fmt


# ----------------------------------------------------------------------------- writing


def _reference_numerics_changes(cfg) -> list[str]:
    mlp_eps = cfg.norm_eps if cfg.mlp_norm_eps is None else cfg.mlp_norm_eps
    changes = []
    if cfg.timestep_freq_shift != 0:
        changes.append(f"timestep frequencies /half instead of /(half - {cfg.timestep_freq_shift}) (timestep_freq_shift)")
    if cfg.norm_eps != 1e-6 or mlp_eps != 1e-6:
        changes.append(f"every LayerNorm eps 1e-6 instead of {cfg.norm_eps:g} / pre-MLP {mlp_eps:g}")
    return changes


def _process_note(src: Loaded, target: str) -> list[str]:
    p = src.process
    if isinstance(p, GaussianDiffusion) and p.config == GaussianConfig(learn_sigma=src.model.config.learn_sigma):
        return []  # what every DiT user assumes
    kind = "flow matching" if isinstance(p, FlowMatching) else f"Gaussian diffusion {p.config}"
    return [f"the model was trained with {kind}, which a {target} checkpoint cannot state: configure samplers "
            "to match (the process is recorded in README.md / config.json where the format allows)"]


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str = "ditkit", *, allow_numerics_change: bool = False,
            overwrite: bool = False, dtype: torch.dtype | None = None, source_format: str | None = None,
            num_heads: int | None = None, command: str | None = None) -> dict:
    """Convert ``src`` (format detected, or ``source_format``) into ``to`` at ``dst``; see module doc.

    Returns ``{"source_format", "format", "dst", "parameters", "notes"}``. ``dtype`` casts the written weights
    (default float32, as read); ``num_heads`` see ``load_source``; ``command`` is recorded in the card.
    Raises CheckpointError / ValueError with one clear line.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; choose one of {', '.join(FORMATS)}")
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"source and destination are the same path: {dst}")
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if to == "reference" and dst.suffix not in REFERENCE_SUFFIXES:
        raise ValueError(f"a reference checkpoint is a single {'/'.join(REFERENCE_SUFFIXES)} file, got {dst}")
    loaded, src_fmt = load_source(src, source_format, num_heads)
    model, cfg = loaded.model, loaded.model.config
    notes = list(loaded.notes)
    provenance = {"source_format": src_fmt, "source": str(src), "ditkit_version": _ditkit_version(),
                  "name": dst.stem if to == "reference" else dst.name}
    if command:
        provenance["command"] = command

    if to == "diffusers":
        changes = numerics_changes(cfg)
        diffusers_config(cfg, allow_numerics_change=allow_numerics_change)  # raises before anything is written
        if changes:
            notes.append(f"diffusers computes this model with its own numerics: {'; '.join(changes)}; the source "
                         "computed it as stated in the config below (docs/reference.md §4)")
        notes += _process_note(loaded, "diffusers")
        extra = {"process": process_info(loaded.process), "class_names": loaded.class_names,
                 "sampling": dataclasses.asdict(loaded.sampling), "ditkit_version": _ditkit_version()}
        _check_destination(dst, overwrite)
        with atomic_dir(dst) as tmp:  # the folder and its card take the place of dst together
            export_diffusers(model, tmp, allow_numerics_change=allow_numerics_change, dtype=dtype, extra=extra)
            write_model_card(tmp, {"format": "diffusers", "config": cfg.to_dict(), "process": extra["process"],
                                   "sampling": extra["sampling"], "class_names": loaded.class_names,
                                   "training": loaded.training, "provenance": provenance, "notes": notes})
    elif to == "reference":
        changes = _reference_numerics_changes(cfg)
        if changes and not allow_numerics_change:
            raise ValueError(f"the reference DiT would compute this model with different numerics: {'; '.join(changes)}. "
                             "Pass allow_numerics_change=True (CLI: --allow-numerics-change) to convert anyway")
        notes += [f"the reference DiT computes this model with its own numerics: {'; '.join(changes)}"] if changes else []
        notes += _process_note(loaded, "reference")
        sd = to_reference_state_dict(model)
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
        _check_destination(dst, overwrite)
        if dst.suffix == ".safetensors":
            save_tensors(dst, sd, metadata={"format": "pt"})
        else:
            with atomic_write(dst) as tmp:
                torch.save({k: v.contiguous().cpu() for k, v in sd.items()}, tmp)
    else:
        _check_destination(dst, overwrite)
        extra = {"provenance": provenance}
        if loaded.training:
            extra["training"] = loaded.training
        with atomic_dir(dst) as tmp:  # the folder and its card take the place of dst together
            save_pipeline(tmp, model, loaded.process, class_names=loaded.class_names, defaults=loaded.sampling,
                          dtype=dtype or torch.float32, extra=extra)
            info = load_json(tmp / CONFIG_NAME)
            write_model_card(tmp, {**info, "format": "ditkit", "notes": notes})
    return {"source_format": src_fmt, "format": to, "dst": str(dst), "parameters": model.num_parameters(),
            "notes": notes}


def _check_destination(dst: Path, overwrite: bool) -> None:
    """Check that ``dst`` may be written: if it exists, only with ``overwrite``, only a file by a file and a
    model folder by a folder (the writers then replace it atomically); never an unrelated folder."""
    if not dst.exists():
        return
    if not overwrite:
        raise ValueError(f"{dst} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if dst.suffix in REFERENCE_SUFFIXES and dst.is_dir():
        raise ValueError(f"{dst} is a folder; a reference checkpoint is a file")
    if dst.is_file() and dst.suffix not in REFERENCE_SUFFIXES:
        raise ValueError(f"{dst} is a file; the target format is a folder")
    if dst.is_dir() and not (_is_ditkit_folder(dst) or resolve_diffusers_folder(dst) is not None):
        raise ValueError(f"{dst} is a folder that holds no model; refusing to replace it")
