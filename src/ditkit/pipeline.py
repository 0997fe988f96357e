"""A model folder and everything needed to sample from it: network, process, class names, defaults.

A ditkit model folder holds ``model.safetensors`` and ``config.json``::

    {"kind": "ditkit-dit", "config": {DiTConfig}, "process": {"type": "flow", "flow": {FlowConfig}},
     "class_names": [...], "sampling": {"sampler": "euler", "steps": 50, "cfg_scale": 2.0}, ...}

A text-to-image model (a `TextDiTConfig` in config.json: PixArt-α-style `CrossDiT` or SD3-style
`MMDiT`) holds its text encoder in ``text_encoder/`` (see `ditkit.models.text_encoder`);
`Pipeline.generate(prompts=[...])` encodes the prompts and, for guidance, the empty prompt.

A latent model also holds its autoencoder (a `LatentCodec`, see `ditkit.models.autoencoder`)
in the subfolder ``autoencoder/``, named in config.json as ``"autoencoder": {"path": "autoencoder",
"image_size": [H, W], ...}``; `Pipeline.generate` decodes the sampled latents to images. ``path``
may also point outside the folder (absolute, or relative to the folder).

`sample(...)` is the one entry point for sampling: it turns labels and a seed into images,
wrapping the network with guidance (a model-callable wrapper) and running any sampler.
Initial noise is drawn once for all samples from ``seed``, so results do not depend on the
batch size used to compute them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import DiTConfig, config_from_dict
from .diffusion.flow import FlowConfig, FlowMatching
from .diffusion.gaussian import GaussianConfig, GaussianDiffusion
from .diffusion.guidance import autoguidance
from .diffusion.guidance import cfg as cfg_wrapper
from .diffusion.samplers import sample as run_sampler
from .io.checkpoint import CheckpointError, check_state_dict, load_model_files, save_model
from .models.dit import DiT
from .models.text_dit import build_model
from .models.text_encoder import TextEncoder, load_text_encoder, save_text_encoder

if TYPE_CHECKING:  # imported lazily below, so `python -m ditkit.models.autoencoder` runs cleanly
    from .models.autoencoder import LatentCodec

FLOW_SAMPLERS = ("euler", "heun", "dpm++2m")
GAUSSIAN_SAMPLERS = ("ddpm", "ddim", "dpm++2m")


@dataclass
class SamplingDefaults:
    sampler: str = "euler"
    steps: int = 50
    cfg_scale: float = 1.0
    shift: float = 1.0  # flow timestep shift at sampling (SD3); 1 = none


@dataclass
class Pipeline:
    model: DiT
    process: FlowMatching | GaussianDiffusion
    class_names: list[str] = field(default_factory=list)
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    info: dict = field(default_factory=dict)
    codec: LatentCodec | None = None  # latent models: decodes the DiT's samples to images
    text_encoder: TextEncoder | None = None  # text-to-image models: prompts -> tokens

    @property
    def config(self) -> DiTConfig:
        return self.model.config

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images `generate` returns (decoded, for a latent model)."""
        h, w = self.config.hw
        if self.codec is None:
            return self.config.in_channels, h, w
        return 3, h * self.codec.downsample, w * self.codec.downsample

    def class_index(self, name_or_index: str | int) -> int:
        n = self.config.num_classes
        s = str(name_or_index)
        if s.lstrip("-").isdigit():
            idx = int(s)
            if 0 <= idx < n:
                return idx
        elif s in self.class_names:
            return self.class_names.index(s)
        names = ", ".join(self.class_names) if self.class_names else f"indices 0-{n - 1}"
        raise ValueError(f"unknown class {name_or_index!r}; this model knows {names}")

    def generate(self, labels=None, *, prompts=None, **kwargs) -> torch.Tensor:
        """Images in [-1, 1], (N, C, H, W), for labels given as names or indices, or for a text model's
        prompts (latents decoded)."""
        d = self.defaults
        opts = {"sampler": d.sampler, "steps": d.steps, "cfg_scale": d.cfg_scale, "shift": d.shift}
        opts.update({k: v for k, v in kwargs.items() if v is not None})
        if prompts is not None or self.text_encoder is not None:
            if labels is not None:
                raise ValueError("this model is text-conditioned: pass prompts=[...], not class labels"
                                 if self.text_encoder is not None else "pass class labels or prompts, not both")
            text, null_text = self.encode_prompts(prompts)
            out = sample(self.model, None, process=self.process, text=text, null_text=null_text, **opts)
        else:
            y = torch.tensor([self.class_index(lab) for lab in labels], dtype=torch.long)
            out = sample(self.model, y, process=self.process, **opts)
        return out if self.codec is None else self.decode(out, batch_size=opts.get("batch_size", 64))

    def use_vae(self, path: str | Path) -> None:
        """Decode with the autoencoder folder `path` (e.g. a diffusers AutoencoderKL in the sd-vae-ft-ema
        layout, or a ditkit autoencoder) instead of the model folder's own; ValueError if it does not fit."""
        from .models.autoencoder import load_codec, resolve_codec_path

        codec = load_codec(resolve_codec_path(path))
        n = self.config.in_channels
        if codec.latent_channels != n:
            hint = " (a pixel-space model needs no VAE)" if self.codec is None and n == 3 else ""
            raise ValueError(f"VAE {path} has {codec.latent_channels} latent channels, but the model's in_channels "
                             f"is {n}{hint}")
        device = next(self.model.parameters()).device if isinstance(self.model, torch.nn.Module) else "cpu"
        self.codec = codec.to(device).eval() if isinstance(codec, torch.nn.Module) else codec

    def encode_prompts(self, prompts) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((tokens (N, L, D_txt), mask (N, L)), the empty prompt's (1, L, D_txt), (1, L)) for `sample`."""
        if self.text_encoder is None:
            raise ValueError("this model is class-conditional: pass class labels, not prompts")
        if prompts is None or isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
            raise ValueError("this model is text-conditioned: pass prompts as a non-empty list of strings")
        with torch.inference_mode():
            tokens, mask = self.text_encoder.encode([*prompts, ""])  # one padding length for all
        tokens, mask = tokens.float().cpu(), mask.cpu()
        return (tokens[:-1], mask[:-1]), (tokens[-1:], mask[-1:])

    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Latents (N, C, h, w) from `sample` -> images (N, 3, H, W) clamped to [-1, 1]."""
        if self.codec is None:
            return latents
        device = next(self.codec.parameters()).device if isinstance(self.codec, torch.nn.Module) else "cpu"
        with torch.inference_mode():
            return torch.cat([self.codec.decode(latents[i:i + batch_size].to(device)).float().clamp(-1, 1).cpu()
                              for i in range(0, len(latents), batch_size)])


def sample(model, labels: torch.Tensor | None, *, process: FlowMatching | GaussianDiffusion, sampler: str = "euler",
           steps: int = 50, cfg_scale: float = 1.0, cfg_channels: int | None = None,
           guidance_interval: tuple[float, float] | None = None, seed: int = 0, batch_size: int = 64,
           shift: float = 1.0, eta: float = 0.0, noise: torch.Tensor | None = None, progress: bool = False,
           model_wrapper=None, text: tuple[torch.Tensor, torch.Tensor] | None = None,
           null_text: tuple[torch.Tensor, torch.Tensor] | None = None, guide_model=None,
           autoguidance_scale: float = 1.0) -> torch.Tensor:
    """Sample len(labels) images from `model` (any callable (x, t, y) -> output with a `.config`).

    A text model takes ``text=(tokens (N, L, D_txt), mask (N, L))`` instead of labels (None), and
    for guidance ``null_text``, the empty prompt's encoding padded to the same L ((1, L, D_txt), (1, L)).

    guidance_interval is in network time (see `ditkit.diffusion`); cfg_channels=3 reproduces the
    reference DiT guidance quirk. `model_wrapper(fn) -> fn` is applied inside guidance (caches etc.).
    ``guide_model`` (a weaker model of the same config, e.g. an early snapshot) with
    ``autoguidance_scale`` w applies autoguidance, weak + w (model - weak), inside CFG
    (`ditkit.diffusion.guidance.autoguidance`).
    """
    cfg: DiTConfig = model.config
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    text_model = getattr(cfg, "text_dim", None) is not None
    if text_model != (text is not None):
        raise ValueError("this model is text-conditioned: pass prompts" if text_model
                         else "this model is not text-conditioned: pass class labels")
    if text is not None:
        n = text[0].shape[0]
    else:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if cfg.num_classes and ((labels < 0) | (labels >= cfg.num_classes)).any():
            raise ValueError(f"labels must lie in 0..{cfg.num_classes - 1}")
        n = labels.shape[0]
    h, w = cfg.hw
    if noise is None:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, cfg.in_channels, h, w), generator=gen)
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")

    fn = model_wrapper(model) if model_wrapper is not None else model
    if guide_model is not None and autoguidance_scale != 1.0:
        gcfg = guide_model.config
        if (gcfg.in_channels, gcfg.hw, getattr(gcfg, "num_classes", 0)) != (cfg.in_channels, cfg.hw, cfg.num_classes):
            raise ValueError("the autoguidance model must take the same inputs and classes as the model")
        if isinstance(guide_model, torch.nn.Module):
            guide_model.eval()
        fn = autoguidance(fn, guide_model, autoguidance_scale)
    if cfg_scale != 1.0 and text is not None:
        if null_text is None:
            raise ValueError("guidance of a text model needs the encoded empty prompt (null_text)")
        fn = cfg_wrapper(fn, cfg_scale, null_cond={"text": null_text[0], "text_mask": null_text[1]},
                         interval=guidance_interval)
    elif cfg_scale != 1.0 and cfg.num_classes:
        if cfg.class_dropout_prob <= 0:
            raise ValueError("this model was trained without label dropout, so it has no null class for guidance")
        fn = cfg_wrapper(fn, cfg_scale, null_label=cfg.num_classes, channels=cfg_channels, interval=guidance_interval)

    extra = {"eta": eta} if sampler == "ddim" else {}
    if isinstance(process, FlowMatching):
        extra["shift"] = shift
    outs = []
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                x = noise[lo:lo + batch_size].to(device)
                if text is not None:
                    kwargs = {"text": text[0][lo:lo + batch_size].to(device), "text_mask": text[1][lo:lo + batch_size].to(device)}
                else:
                    kwargs = {"y": labels[lo:lo + batch_size].to(device)} if cfg.num_classes else {}
                gen = torch.Generator(device=device).manual_seed(seed + lo)
                out = run_sampler(fn, x, process=process, sampler=sampler, steps=steps, model_kwargs=kwargs,
                                  generator=gen, progress=progress, **extra)
                outs.append(out[:, : cfg.in_channels].float().cpu())
    finally:
        if was_training:
            model.train()
    return torch.cat(outs)


# ----------------------------------------------------------------------------- files


def process_from_info(info: dict) -> FlowMatching | GaussianDiffusion:
    proc = info.get("process", {"type": "flow"})
    if proc.get("type") == "flow":
        return FlowMatching(FlowConfig(**proc.get("flow", {})))
    if proc.get("type") == "gaussian":
        return GaussianDiffusion(GaussianConfig(**proc.get("gaussian", {})))
    raise CheckpointError(f"unknown process type {proc.get('type')!r} in config.json")


def process_info(process: FlowMatching | GaussianDiffusion) -> dict:
    if isinstance(process, FlowMatching):
        return {"type": "flow", "flow": dataclasses.asdict(process.config)}
    return {"type": "gaussian", "gaussian": dataclasses.asdict(process.config)}


def save_pipeline(folder: str | Path, model: DiT, process, *, class_names=None, defaults: SamplingDefaults | None = None,
                  dtype: torch.dtype = torch.float32, extra: dict | None = None, autoencoder: str | Path | None = None,
                  copy_autoencoder: bool = True, text_encoder: TextEncoder | None = None) -> None:
    """Write a model folder atomically; weights may be stored in half precision to save space.

    `autoencoder`: the folder of the codec a latent model was trained with; it is copied into the
    model folder as ``autoencoder/`` (self-contained), or with ``copy_autoencoder=False`` referenced
    by its absolute path (e.g. a large diffusers VAE). `text_encoder`: a text model's encoder, written
    to ``text_encoder/`` (float32).
    """
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ae_info, subfolders = autoencoder_entry(model.config, autoencoder, copy_autoencoder)
    info = {
        "kind": "ditkit-dit",
        "config": model.config.to_dict(),
        "process": process_info(process),
        "class_names": list(class_names or []),
        "sampling": dataclasses.asdict(defaults or SamplingDefaults()),
        "weights_dtype": str(dtype).replace("torch.", ""),
        **(extra or {}),
    }
    if ae_info is not None:
        info["autoencoder"] = ae_info
    if (text_encoder is None) != (getattr(model.config, "text_dim", None) is None):
        raise ValueError("a text-conditioned model is saved with its text encoder (and only such a model)")
    with tempfile.TemporaryDirectory() as tmp:
        if text_encoder is not None:
            if text_encoder.text_dim != model.config.text_dim:
                raise ValueError(f"the text encoder gives {text_encoder.text_dim}-dim tokens, the model expects "
                                 f"{model.config.text_dim}")
            save_text_encoder(text_encoder, Path(tmp) / "text_encoder")
            subfolders["text_encoder"] = Path(tmp) / "text_encoder"
            info["text_encoder"] = {"path": "text_encoder", "type": type(text_encoder).__name__}
        save_model(folder, state, info, subfolders=subfolders)


def autoencoder_entry(config: DiTConfig, autoencoder: str | Path | None,
                      copy: bool = True) -> tuple[dict | None, dict[str, Path]]:
    """(config.json's "autoencoder" entry, subfolders to copy) for a model folder; (None, {}) without one.

    The codec is loaded and checked against the DiT's input; ``copy=False`` references it by its
    absolute path instead of copying it into the folder as ``autoencoder/``.
    """
    if autoencoder is None:
        return None, {}
    from .models.autoencoder import check_codec_fits, load_codec, resolve_codec_path

    src = resolve_codec_path(autoencoder)
    codec = load_codec(src)
    f = codec.downsample
    image_hw = [config.hw[0] * f, config.hw[1] * f]
    check_codec_fits(codec, image_hw, config.in_channels, config.hw)
    entry = {"path": "autoencoder" if copy else str(src.resolve()), "name": codec.name, "image_size": image_hw}
    return entry, ({"autoencoder": src} if copy else {})


def source_autoencoder(path: str | Path, info: dict) -> tuple[Path | None, bool]:
    """(the codec folder, copy it?) of the model folder at ``path`` (or its model.safetensors) with
    config.json ``info``, so that a model derived from it (quantized, pruned) carries the same
    autoencoder: a copied one is copied again, one referenced by absolute path stays referenced."""
    ae = info.get("autoencoder")
    if not ae:
        return None, True
    from .models.autoencoder import resolve_codec_path

    folder = Path(path).parent if Path(path).suffix == ".safetensors" else Path(path)
    return resolve_codec_path(ae["path"], base=folder), not Path(ae["path"]).is_absolute()


def codec_from_info(path: str | Path, info: dict) -> LatentCodec | None:
    """The autoencoder named in a model folder's config.json (None for a pixel model), checked against the DiT."""
    from .models.autoencoder import check_codec_fits, load_codec, resolve_codec_path

    ae = info.get("autoencoder")
    if not ae:
        return None
    folder = Path(path)
    folder = folder.parent if folder.suffix == ".safetensors" else folder
    try:
        codec = load_codec(resolve_codec_path(ae["path"], base=folder))
        config = config_from_dict(info["config"])
        check_codec_fits(codec, ae.get("image_size") or [s * codec.downsample for s in config.hw],
                         config.in_channels, config.hw, where=f"the DiT in {folder}")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder}: bad autoencoder entry: {e}") from None
    return codec


def load_pipeline(path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
    """Load a ditkit model folder. Raises CheckpointError (one clear line) on any problem."""
    state, info = load_model_files(path)
    if info.get("kind") == "ditkit-dit-quantized":  # packed low-bit weights: rebuilt by ditkit.compress
        from .compress.files import load_quantized

        return load_quantized(path, device=device)
    if info.get("kind") != "ditkit-dit":
        raise CheckpointError(f"{path} is not a ditkit DiT folder (kind={info.get('kind')!r})")
    try:
        config = config_from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"bad model config in {path}: {e}") from None
    model = build_model(config)
    check_state_dict(state, model.state_dict(), path)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.to(device).eval()
    defaults = SamplingDefaults(**info.get("sampling", {}))
    codec = codec_from_info(path, info)
    if isinstance(codec, torch.nn.Module):
        codec.to(device).eval()
    text_encoder = None
    if getattr(config, "text_dim", None) is not None:
        folder = Path(path).parent if Path(path).suffix == ".safetensors" else Path(path)
        text_encoder = load_text_encoder(folder / info.get("text_encoder", {}).get("path", "text_encoder")).to(device).eval()
        if text_encoder.text_dim != config.text_dim:
            raise CheckpointError(f"{folder}: the text encoder gives {text_encoder.text_dim}-dim tokens, "
                                  f"the model expects {config.text_dim}")
    return Pipeline(model, process_from_info(info), info.get("class_names", []), defaults, info, codec, text_encoder)
