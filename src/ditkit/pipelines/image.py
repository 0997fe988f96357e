"""An image model folder and everything needed to sample from it: network, process, class names, defaults.

`load_pipeline` reads a class- or text-conditional image folder, float or quantized (the folder format
and the writer `save_pipeline` are in `ditkit.pipelines.folder`). A text-to-image model holds its text
encoder: `Pipeline.generate(prompts=[...])` encodes the prompts and, for guidance, the empty prompt. A
latent model holds its autoencoder: `Pipeline.generate` decodes the sampled latents to images.
Options are an `ImageOptions` (`ditkit.pipelines.options`), overridable by keyword:

    images = pipe.generate(["circle", "star"], steps=20, seed=3)
    images = pipe.generate(prompts=["a red circle"], options=ImageOptions(cfg_scale=4.0))

Sampling is `ditkit.sample`: initial noise is drawn once for all samples from ``seed``, and a
stochastic sampler's step noise of sample i from a generator seeded ``seed + i``, so results do not
depend on the batch size used to compute them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import budget
from ..compress.files import build_quantized, quantized_network
from ..config import DiTConfig
from ..diffusion.flow import FlowMatching
from ..diffusion.gaussian import GaussianDiffusion
from ..diffusion.sample import sample
from ..io.checkpoint import CheckpointError, load_model_files
from ..io.confined import confined_path
from ..models.autoencoder import LatentCodec, load_codec, resolve_codec_path
from ..models.dit import DiT
from ..models.text_dit import build_model
from ..models.text_encoder import TextEncoder, load_text_encoder
from .folder import IMAGE_KIND, QUANTIZED_KIND, SamplingDefaults, codec_from_info, float_network, folder_kind, read_weights
from .options import ImageOptions
from .options import resolve as resolve_options
from .schema import FolderSpec, read_model_folder


@dataclass
class Pipeline:
    model: DiT
    process: FlowMatching | GaussianDiffusion
    class_names: list[str] = field(default_factory=list)
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    info: dict = field(default_factory=dict)
    codec: LatentCodec | None = None  # latent models: decodes the DiT's samples to images
    text_encoder: TextEncoder | None = None  # text-to-image models: prompts -> tokens
    last_options: ImageOptions | None = field(default=None, repr=False, compare=False)  # of the last generate

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

    def resolve_options(self, options: ImageOptions | None = None, **overrides) -> ImageOptions:
        """``options`` with ``overrides`` (`ditkit.pipelines.options.resolve`) and the folder's defaults filled in."""
        return resolve_options(ImageOptions, options, overrides).with_defaults(self.defaults)

    def generate(self, labels=None, options: ImageOptions | None = None, *, prompts=None, callback=None,
                 model_wrapper=None, **overrides) -> torch.Tensor:
        """Images in [-1, 1], (N, C, H, W), for labels given as names or indices, or for a text model's
        prompts (latents decoded).

        ``options`` (an `ImageOptions`; None: the defaults) with ``overrides``, keywords naming its fields;
        None fields take the folder's defaults, and the result is kept as ``self.last_options``.
        ``callback(step_index, t, x)`` after every sampler step; ``model_wrapper(fn) -> fn`` wraps the
        network inside guidance (caches; `ditkit.sample`)."""
        opts = self.last_options = self.resolve_options(options, **overrides)
        if self.codec is None and (self.info.get("autoencoder") or {}).get("name"):
            raise ValueError(f"this model decodes with an autoencoder kept outside its folder "
                             f"({self.info['autoencoder']['name']}); give it with use_vae(DIR) (--vae DIR)")
        n = len(prompts if prompts is not None else labels if labels is not None else [])
        self.check_budget(n, opts)
        kw = dict(process=self.process, sampler=opts.sampler, steps=opts.steps, cfg_scale=opts.cfg_scale,
                  shift=opts.shift, seed=opts.seed, batch_size=opts.batch_size, progress=opts.progress,
                  guidance_interval=opts.guidance_interval, cfg_channels=opts.cfg_channels, eta=opts.eta,
                  callback=callback, model_wrapper=model_wrapper)
        if prompts is not None or self.text_encoder is not None:
            if labels is not None:
                raise ValueError("this model is text-conditioned: pass prompts=[...], not class labels"
                                 if self.text_encoder is not None else "pass class labels or prompts, not both")
            text, null_text = self.encode_prompts(prompts)
            out = sample(self.model, None, text=text, null_text=null_text, **kw)
        else:
            y = torch.tensor([self.class_index(lab) for lab in labels], dtype=torch.long)
            out = sample(self.model, y, **kw)
        return out if self.codec is None else self.decode(out, batch_size=opts.batch_size)

    def check_budget(self, n: int, opts: ImageOptions) -> None:
        """BudgetError (one line) when sampling ``n`` images with ``opts`` would exceed the machine's memory or
        any reasonable time (`ditkit.budget`), before anything is allocated."""
        pixels = 3 * self.image_shape[1] * self.image_shape[2] if self.codec is not None else 0
        device = next(self.model.parameters()).device if isinstance(self.model, torch.nn.Module) else "cpu"
        budget.check(budget.estimate_sampling(
            self.config, n, int(opts.steps), int(opts.batch_size), guided=opts.cfg_scale != 1.0, decoded_pixels=pixels,
            what=f"sampling {n} images x {opts.steps} steps"), device=str(device))

    def use_vae(self, path: str | Path) -> None:
        """Decode with the autoencoder folder `path` (e.g. a diffusers AutoencoderKL in the sd-vae-ft-ema
        layout, or a ditkit autoencoder) instead of the model folder's own; ValueError if it does not fit."""
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


# ----------------------------------------------------------------------------- loading


def load_pipeline(path: str | Path, device: str | torch.device = "cpu", **options) -> Pipeline:
    """Load an image model folder, float (`ditkit.pipelines.folder.float_network`) or quantized
    (`ditkit.compress.files.quantized_network`; ``options`` go to the network's builder, e.g. ``cache_int8``
    of a quantized one). Raises CheckpointError (one clear line) on any problem, BudgetError when the model
    would not fit in memory.

    Before any tensor is read: config.json is checked (`ditkit.pipelines.schema`), the model's memory is
    estimated (`ditkit.budget`) and the weights' shapes and dtypes are checked against the config from the
    safetensors header; the weights read are checked to be finite (`ditkit.pipelines.folder.read_weights`)."""
    folder, info, spec = read_model_folder(path)
    if spec.kind == IMAGE_KIND:
        state = read_weights(folder, spec, lambda: build_model(spec.config))
        model = float_network(state, info, path, **options)
    elif spec.kind == QUANTIZED_KIND:
        state = read_weights(folder, spec, lambda: _quantized_skeleton(spec, info, folder), float_weights=False)
        model = quantized_network(state, info, path, **options)
    else:
        raise CheckpointError(f"{path} is not a ditkit DiT folder (kind={spec.kind!r})")
    model.to(device).eval()
    config = model.config
    codec = codec_from_info(path, info)
    if isinstance(codec, torch.nn.Module):
        codec.to(device).eval()
    text_encoder = None
    if spec.text_encoder is not None:
        where = confined_path(folder, spec.text_encoder, "text_encoder.path", folder / "config.json")
        text_encoder = load_text_encoder(where).to(device).eval()
        if text_encoder.text_dim != config.text_dim:
            raise CheckpointError(f"{folder}: the text encoder gives {text_encoder.text_dim}-dim tokens, "
                                  f"the model expects {config.text_dim}")
    return Pipeline(model, spec.process, spec.class_names, spec.defaults, info, codec, text_encoder)


def load_quantized(path: str | Path, device: str | torch.device = "cpu", cache_int8: bool = False) -> Pipeline:
    """`load_pipeline` for a quantized model folder only (`ditkit.compress.files`): CheckpointError (one line)
    for any other folder."""
    if folder_kind(path) != QUANTIZED_KIND:
        kind = load_model_files(path)[1].get("kind")  # a clear error for a folder that is not a model folder
        raise CheckpointError(f"{path} is not a quantized ditkit folder (kind={kind!r})")
    return load_pipeline(path, device=device, cache_int8=cache_int8)


def _quantized_skeleton(spec: FolderSpec, info: dict, folder: Path) -> torch.nn.Module:
    """The quantized network a folder's weights must fit (built on the meta device by `expected_state`)."""
    qinfo = info.get("quantization")
    if not isinstance(qinfo, dict) or not isinstance(qinfo.get("layers", {}), dict):
        raise CheckpointError(f"{folder / 'config.json'}: quantization must be a JSON object with layers")
    return build_quantized(spec.config, qinfo)
