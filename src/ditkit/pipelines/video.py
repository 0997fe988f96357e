"""A text-to-video model folder and sampling from it: text-to-video, image-to-video, long videos.

A video model folder holds ``model.safetensors`` (the `VideoDiT`), ``config.json``::

    {"kind": "ditkit-video-dit", "config": {VideoDiTConfig}, "process": {"type": "flow", ...},
     "sampling": {"sampler": "euler", "steps": 50, "cfg_scale": 4.0, "shift": 1.0}, ...}

plus ``text_encoder/`` (the word encoder trained with it) and ``autoencoder/`` (the per-frame image
autoencoder). Captions enter as the pooled encoder output and, where the model cross-attends, as its
tokens (`ditkit.models.text_video`).

Sampling runs `ditkit.diffusion.forcing.forcing_sample` (Euler steps over per-frame times):

* text-to-video, up to the training length: every frame on the same schedule;
* image-to-video (STIV frame replacement, Lin et al. 2025): the given image's latent is the clean
  first frame (process time 0) in every model call and the remaining frames are generated. Guidance
  is STIV's joint image-text CFG (``i2v_guidance="joint"``: the unconditional pass has neither the
  image, its frame replaced by noise at process time 1, nor the text) or text-only (``"text"``: the
  image in both passes);
* longer clips (``frames`` > the training window), by ``long_mode``: ``"rollout"``, diffusion forcing
  over overlapping windows (`rollout`); ``"chunked"``, independent windows (`chunked_sample`, the
  baseline); ``"extrapolate"``, one pass over all frames with UltraViCo's training-free attention decay
  beyond the training window (Zhao et al. 2025; `ditkit.models.video_attention.UltraViCoConfig`,
  ``ultravico_alpha``; 1.0 is plain extrapolation of 3D RoPE).

Options are a `VideoOptions` (`ditkit.pipelines.options`), overridable by keyword:

    clips = pipe.generate(["a red circle moving left"], frames=16, seed=3)

Noise: clip i draws all of its noise from its own generator, seeded ``seed + i``
(`ditkit.diffusion.noise`), so results depend neither on ``batch_size`` nor on the other prompts of
a batch.

What depends on the captions a model was trained on — the image caption of a video prompt, the check
that a drawn first frame suits its prompt — comes from the caller as functions (``caption_for_image``,
``first_frame_check``); the moving-shapes ones are in `ditkit.shapes.moving`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import budget
from ..accel.attention import WithAttention
from ..diffusion.flow import FlowMatching
from ..diffusion.forcing import chunked_sample, forcing_sample, rollout, step_matrix
from ..diffusion.guidance import cfg as cfg_wrapper
from ..diffusion.noise import randn, sample_generators
from ..diffusion.sample import progress_bar
from ..io.checkpoint import CheckpointError, check_state_dict
from ..io.confined import confined_path
from ..models.text_encoder import TextEncoder, load_text_encoder
from ..models.text_video import check_text_dims, null_labels, text_conditioning
from ..models.video_attention import UltraViCoConfig, VideoAttention
from ..models.video_dit import VideoDiT, VideoDiTConfig
from .folder import VIDEO_KIND, SamplingDefaults, codec_from_info, read_weights
from .image_models import expert_guidance, first_frames, image_captions, redraw_first_frames
from .options import VideoOptions
from .options import resolve as resolve_options
from .schema import read_model_folder


@dataclass
class VideoPipeline:
    model: VideoDiT
    process: FlowMatching
    text_encoder: TextEncoder
    codec: object | None = None  # per-frame autoencoder (a LatentCodec); None = pixel-space clips
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    info: dict = field(default_factory=dict)
    last_options: VideoOptions | None = field(default=None, repr=False, compare=False)  # of the last generate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> VideoPipeline:
        """Move the model, text encoder and autoencoder to ``device`` (e.g. "cuda"); clips come back on the CPU."""
        self.model.to(device)
        self.text_encoder.to(device)
        if isinstance(self.codec, torch.nn.Module):
            self.codec.to(device)
        return self

    @property
    def config(self) -> VideoDiTConfig:
        return self.model.config

    @property
    def caption_style(self) -> str:
        """How the model's training captions read (a caption style of its dataset, e.g.
        `ditkit.shapes.moving.CAPTION_STYLES`), from its training recipe; "motion-first" for folders written
        before the style was recorded. Prompts in that style are the ones it follows best."""
        video = self.info.get("training", {}).get("recipe", {}).get("video") or {}
        return video.get("caption_style", "motion-first")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the decoded frames."""
        cfg = self.config.dit
        h, w = cfg.hw
        if self.codec is None:
            return cfg.in_channels, h, w
        return 3, h * self.codec.downsample, w * self.codec.downsample

    # ------------------------------------------------------------------ conditioning
    def encode_prompts(self, prompts) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model's text keywords for the prompts (leading dim N) and for the empty prompt (leading
        dim 1): ``pooled_text`` (N, D_txt) and / or ``text`` (N, L, D_txt) with ``text_mask`` (N, L)."""
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("pass prompts as a non-empty list of strings")
        with torch.inference_mode():
            tokens, mask = self.text_encoder.encode([*prompts, ""])  # (N+1, L, D), (N+1, L)
            cond = text_conditioning(self.config, tokens.float().cpu(), mask.cpu())
        return {k: v[:-1].clone() for k, v in cond.items()}, {k: v[-1:].clone() for k, v in cond.items()}

    def model_fn(self, null_text: dict[str, torch.Tensor], cfg_scale: float, null_context: torch.Tensor | None = None,
                 *, model=None):
        """``fn(x (N, F, C, H, W), t (N, F), **text) -> velocity``, guided when cfg_scale != 1.

        ``text`` are the keywords of `encode_prompts`. Guidance is on the text (the empty prompt's
        ``null_text`` is the unconditional input).
        With ``null_context`` (N, Fc, C, H, W) — noise for the first Fc frames, the given frames of
        image-to-video — it is STIV's joint image-text guidance (JIT-CFG): the unconditional pass
        also drops the image, its first Fc frames replaced by that noise at process time 1.
        ``model``: what is called in place of the bare `VideoDiT` (e.g. a `ditkit.accel.attention.WithAttention`).
        """
        dit = self.model
        model = dit if model is None else model

        def fn(x: torch.Tensor, t: torch.Tensor, **text) -> torch.Tensor:
            return model(x, t, null_labels(dit, x.shape[0], x.device), **text)

        if cfg_scale == 1.0:
            return fn
        if null_context is None:
            return cfg_wrapper(fn, cfg_scale, null_cond=null_text)
        t_noise = float(self.process.network_time(torch.ones(())))
        pt = self.config.temporal_patch

        def joint(x: torch.Tensor, t: torch.Tensor, **text) -> torch.Tensor:
            x_null, t_null = _drop_context(x, t, null_context, t_noise, pt)  # no image
            both = {k: torch.cat([v, null_text[k].to(v).expand_as(v)]) for k, v in text.items()}  # 2N rows
            out = fn(torch.cat([x, x_null]), torch.cat([t, t_null]), **both)  # (2N, F, C, H, W)
            cond, uncond = out.chunk(2)
            return uncond + cfg_scale * (cond - uncond)

        return joint

    def history_model_fn(self, null_text: dict[str, torch.Tensor], cfg_scale: float, history_scale: float,
                         noise: torch.Tensor, *, model=None):
        """A rollout window's guided model function with history guidance (Song et al. 2025, "History-Guided
        Video Diffusion", DFoT): the window's first Fc context frames (``noise`` (N, Fc, C, H, W) has their
        shape) are the condition of a second guidance term, composed with the text's:

            v = u + cfg_scale * (c - u) + history_scale * (c - c_nh)

        with c, u the outputs with and without the caption (context kept) and c_nh the output with the
        caption whose context is replaced by ``noise`` at process time 1 (no history). Three passes, one
        batch of 3N rows; ``history_scale`` 0 gives the text guidance alone at that extra cost.
        """
        fn = self.model_fn(null_text, 1.0, model=model)
        t_noise = float(self.process.network_time(torch.ones(())))
        pt = self.config.temporal_patch

        def guided(x: torch.Tensor, t: torch.Tensor, **text) -> torch.Tensor:
            x_nh, t_nh = _drop_context(x, t, noise, t_noise, pt)  # no history
            rows = {k: torch.cat([v, null_text[k].to(v).expand_as(v), v]) for k, v in text.items()}  # 3N rows
            out = fn(torch.cat([x, x, x_nh]), torch.cat([t, t, t_nh]), **rows)  # (3N, F, C, H, W)
            c, u, c_nh = out.chunk(3)
            return u + cfg_scale * (c - u) + history_scale * (c - c_nh)

        return guided

    # ------------------------------------------------------------------ pixels <-> latents
    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> latent frames (N, 1, C, h, w)."""
        c, h, w = self.frame_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
            raise ValueError(f"the first frame must be {c}x{h}x{w} (this model's frame size), got "
                             f"{tuple(images.shape[1:])}")
        if self.codec is None:
            return images.float().unsqueeze(1).to(self.device)
        with torch.inference_mode():
            return self.codec.encode(images.float().to(self.device)).float().unsqueeze(1)  # (N, 1, C, h, w)

    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Latent clips (N, F, C, h, w) -> frames (N, F, 3, H, W) clamped to [-1, 1]."""
        if self.codec is None:
            return latents.clamp(-1, 1).cpu()
        n, f = latents.shape[:2]
        flat = latents.flatten(0, 1).to(self.device)  # (N*F, C, h, w)
        with torch.inference_mode():
            out = torch.cat([self.codec.decode(flat[i:i + batch_size]).float().clamp(-1, 1).cpu()
                             for i in range(0, len(flat), batch_size)])
        return out.unflatten(0, (n, f))  # (N, F, 3, H, W)

    # ------------------------------------------------------------------ sampling
    def resolve_options(self, options: VideoOptions | None = None, **overrides) -> VideoOptions:
        """``options`` with ``overrides`` (`ditkit.pipelines.options.resolve`) and every default filled in: the
        folder's steps, cfg_scale and shift, ``frames`` the training window and ``overlap`` half of it (whole
        temporal patches). ValueError for history guidance outside a rollout."""
        opts = resolve_options(VideoOptions, options, overrides)
        window, pt = self.config.num_frames, self.config.temporal_patch
        opts = dataclasses.replace(opts, sampler="euler").with_defaults(
            self.defaults, frames=window if opts.frames is None else opts.frames,
            overlap=max(pt, (window // 2) // pt * pt) if opts.overlap is None else opts.overlap)
        if opts.history_guidance and (opts.frames <= window or opts.long_mode != "rollout"):
            raise ValueError("history guidance applies to rollouts: frames beyond the window with long_mode 'rollout'")
        return opts

    def generate(self, prompts, options: VideoOptions | None = None, *, image: torch.Tensor | None = None,
                 image_prompts=None, image_expert=None, first_frame_model=None,
                 first_frame_check: Callable[[torch.Tensor, str], bool] | None = None,
                 caption_for_image: Callable[[str], str] | None = None, attention=None, bar=None,
                 **overrides) -> torch.Tensor:
        """Clips (N, frames, 3, H, W) in [-1, 1] for the prompts (latents (N, frames, C, h, w) with ``latents``).

        ``options`` (a `VideoOptions`; None: the defaults) with ``overrides``, keywords naming its fields (frames,
        steps, seed, long_mode, ...; see `VideoOptions`); the resolved options are kept as ``self.last_options``.
        The other keywords are what a call conditions on or samples with:

        ``image`` (N, 3, H, W) or (3, H, W): image-to-video, the given first frame of every clip (guided by
        ``i2v_guidance``). ``attention``: an attention core for this call (`ditkit.models.video_attention.VideoAttention`,
        or `ditkit.accel.far_cache.FarCachedAttention`, whose refresh schedule wraps the model function), applied
        by `ditkit.accel.attention.WithAttention`. ``image_expert``: a text-to-image `ditkit.pipelines.Pipeline` on
        the same autoencoder that guides every frame (`ditkit.diffusion.image_expert`) on ``caption_for_image(p)``
        for each ``p`` of ``image_prompts`` (default: the prompts; ``caption_for_image`` default: the prompt as it
        is; e.g. `ditkit.shapes.moving.image_caption`, the prompt without its motion phrase).
        ``first_frame_model``: factorized text-to-video (Emu Video, Girdhar et al. 2023, "Factorizing
        Text-to-Video Generation by Explicit Image Conditioning"): a text-to-image `ditkit.pipelines.Pipeline`
        draws each clip's first frame from the image captions (as for the image expert) with its own steps and
        guidance and this call's ``seed``, then this model continues it as image-to-video (the image model need
        not share the autoencoder: its frames are decoded and re-encoded). With ``first_frame_redraws`` > 0 each
        first frame that fails ``first_frame_check(frame, prompt)`` (e.g. `ditkit.shapes.moving.first_frame_fits`:
        room for the caption's straight motion) is drawn again, with seed + r in round r; a frame that never
        passes keeps its last draw.

        Clip i's noise comes from a generator seeded ``seed + i`` (`ditkit.diffusion.noise`), so ``batch_size``
        does not change the clips. The progress bar counts every model call — all batches, all windows of a long
        video, the first-frame model's steps and its redraws — so that its ETA is the whole run's. ``bar``: a
        caller's bar (a tqdm) counted on instead, e.g. one over several calls (`progress_total` sizes each).
        """
        opts = self.last_options = self.resolve_options(options, **overrides)
        _check_parts(opts, self.config.num_frames, image, first_frame_model, first_frame_check, attention)
        if self.codec is None and (self.info.get("autoencoder") or {}).get("name"):
            raise ValueError(f"this model decodes with an autoencoder kept outside its folder "
                             f"({self.info['autoencoder']['name']}); it cannot be loaded from the folder")
        self.check_budget(len(prompts) if not isinstance(prompts, str) else 1, opts)
        text, null = self.encode_prompts(prompts)
        text, null = ({k: v.to(self.device) for k, v in d.items()} for d in (text, null))
        n = len(prompts)
        expert = image_expert is not None and opts.image_expert_scale != 0
        captions = None  # the image model's captions (first-frame model, image expert), one per clip
        if first_frame_model is not None or expert:
            captions = image_captions(prompts if image_prompts is None else image_prompts, n, caption_for_image)
        total = self._progress_total(n, opts, image is not None, first_frame_model)
        with progress_bar(total, opts.progress, "video") if bar is None else contextlib.nullcontext(bar) as bar:
            if first_frame_model is not None:
                image = first_frames(first_frame_model, self.frame_shape, captions, opts.seed, opts.batch_size, bar)
                if opts.first_frame_redraws:
                    image = redraw_first_frames(first_frame_model, self.frame_shape, image, captions, list(prompts),
                                                opts.seed, opts.batch_size, opts.first_frame_redraws,
                                                first_frame_check, bar)
            first = self._first_latents(image, n, opts.frames)
            guide = expert_guidance(self, image_expert, opts, captions, text) if expert else None
            fns = self._model_functions(opts, null, first is not None, attention, guide, bar)
            out = torch.cat(self._sample(fns, text, n, first, opts))  # (N, frames, C, h, w)
            return out.cpu() if opts.latents else self.decode(out)

    def progress_total(self, n: int, options: VideoOptions | None = None, *, image: bool = False, first_frame_model=None,
                       **overrides) -> int | None:
        """The count of `generate`'s bar for ``n`` clips (given first frames with ``image``): every model call, plus
        the first-frame model's sampler steps before any redraw; None when not known up front."""
        return self._progress_total(n, self.resolve_options(options, **overrides), image, first_frame_model)

    def _progress_total(self, n: int, opts: VideoOptions, image: bool, first_frame_model) -> int | None:
        total = self._model_calls(n, opts, given=image or first_frame_model is not None)
        if total is not None and first_frame_model is not None:
            total += -(-n // opts.batch_size) * first_frame_model.defaults.steps  # the first frames' sampler steps
        return total

    def check_budget(self, n: int, opts: VideoOptions) -> None:
        """BudgetError (one line) when ``n`` clips with ``opts`` would exceed the machine's memory or any reasonable
        time (`ditkit.budget`): a window's attention (all frames' for an extrapolated clip), the model calls of
        every window, the whole clips' tensors and the step schedule, counted without building any of them."""
        window, pt = self.config.num_frames, self.config.temporal_patch
        mode = _mode(opts, window)
        frames = opts.frames if mode == "single" else window
        blocks = max(1, -(-frames // pt))
        iterations = opts.steps + opts.ar_step * (blocks - 1)  # `step_matrix` rows of one window
        if mode == "single":
            windows = 1
        elif mode == "chunked":
            windows = -(-opts.frames // window)
        else:
            windows = 1 + max(0, -(-(opts.frames - window) // max(1, window - opts.overlap)))
        c, h, w = self.frame_shape
        est = budget.estimate_sampling(self.config, n, iterations * windows, opts.batch_size,
                                       guided=opts.cfg_scale != 1.0 or bool(opts.history_guidance), frames=frames,
                                       decoded_pixels=c * h * w * opts.frames,
                                       what=f"sampling {n} clips of {opts.frames} frames x {opts.steps} steps")
        lc, (lh, lw) = self.config.dit.in_channels, self.config.dit.hw
        whole = n * max(0, opts.frames - frames) * lc * lh * lw * 4 * 3  # the clips beyond one window
        schedule = (iterations + 1) * blocks * 16.0  # the step matrix
        budget.check(budget.Estimate(est.what, est.memory + whole + schedule, est.macs, est.calls),
                     device=str(self.device))

    def _first_latents(self, image: torch.Tensor | None, n: int, frames: int) -> torch.Tensor | None:
        """The given first frames (N, 1, C, h, w) of image-to-video from ``image`` (1 or N, 3, H, W) or (3, H, W)."""
        if image is None:
            return None
        image = image.unsqueeze(0) if image.ndim == 3 else image
        if image.shape[0] not in (1, n):
            raise ValueError(f"give one first frame or one per prompt ({n}), got {image.shape[0]}")
        first = self.encode_frames(image).expand(n, -1, -1, -1, -1)  # (N, 1, C, h, w)
        if frames < 2:
            raise ValueError("image-to-video needs at least 2 frames")
        return first

    def _model_functions(self, opts: VideoOptions, null: dict, i2v: bool, attention, guide, bar) -> _ModelFunctions:
        """The stack the sampler calls, innermost first: the network, called with this run's attention core (the
        given one, or UltraViCo's for an extrapolated clip; `WithAttention`) <- guidance (text; image-to-video's
        joint guidance; a rollout's history guidance) <- the core's per-call schedule <- the image expert
        (``guide``) <- the progress count."""
        core = attention
        if opts.frames > self.config.num_frames and opts.long_mode == "extrapolate":
            core = VideoAttention(ultravico=UltraViCoConfig(self.config.latent_frames, opts.ultravico_alpha),
                                  backend="dense")
        net = self.model if core is None else WithAttention(self.model, core)
        if core is not None:
            net.reset()
        self.model.eval()
        wrappers = [] if core is None else [lambda f: net.schedule(f, self.process)]
        wrappers += ([] if guide is None else [guide]) + [lambda f: _counted(f, bar)]

        def wrap(f):
            for w in wrappers:
                f = w(f)
            return f

        cfg = opts.cfg_scale
        joint = history = None
        if i2v and opts.i2v_guidance == "joint":
            def joint(noise):
                return wrap(self.model_fn(null, cfg, noise, model=net))
        if opts.history_guidance:
            def history(noise):
                return wrap(self.history_model_fn(null, cfg, opts.history_guidance, noise, model=net))
        return _ModelFunctions(wrap(self.model_fn(null, cfg, model=net)), joint, history)

    def _model_calls(self, n: int, opts: VideoOptions, given: bool) -> int | None:
        """How many model calls `_sample` makes (one per `forcing_sample` iteration, `step_matrix`): every
        window of every batch; None when the window layout is invalid (the sampler then says why)."""
        window, pt = self.config.num_frames, self.config.temporal_patch
        frames, overlap = opts.frames, opts.overlap
        fc = 1 if given else 0  # the given first frame: context of the first window
        mode = _mode(opts, window)
        if mode == "single":
            windows = [(fc, frames - fc)]
        elif mode == "chunked":
            windows = [(0, window)] * -(-frames // window)
        else:  # rollout: the first window, then windows of `overlap` context frames and new ones
            later = max(0, -(-(frames - window) // (window - overlap))) if 0 < overlap < window else 0
            windows = [(fc, window - fc)] + [(overlap, window - overlap)] * later
        try:
            per_batch = sum(step_matrix((c + f) // pt, opts.steps, opts.ar_step, c // pt).shape[0] - 1
                            for c, f in windows)
        except ValueError:
            return None
        return -(-n // opts.batch_size) * per_batch

    def _sample(self, fns: _ModelFunctions, text: dict, n: int, first: torch.Tensor | None,
                opts: VideoOptions) -> list[torch.Tensor]:
        """Latent clips per batch, by `_mode`: "single" (one pass over all frames), "chunked" or "rollout".

        Clip i draws all its noise from its own generator (``seed + i``). ``fns.joint(noise)``: image-to-video's
        joint guidance for one window, built per batch with noise for the given frame; a rollout's later windows
        have the previous frames as context, so rollouts guide on the text only unless ``fns.history(noise)``
        (history guidance) builds their model functions."""
        cfg, window = self.config.dit, self.config.num_frames
        dev = self.device
        c, (h, w), pt = cfg.in_channels, cfg.hw, self.config.temporal_patch
        mode = _mode(opts, window)
        outs = []
        with torch.inference_mode():
            for lo in range(0, n, opts.batch_size):
                hi = min(lo + opts.batch_size, n)
                gens = sample_generators(opts.seed, lo, hi)
                ctx = None if first is None else first[lo:hi]
                common = dict(steps=opts.steps, shift=opts.shift, ar_step=opts.ar_step, block_frames=pt,
                              model_kwargs={k: v[lo:hi] for k, v in text.items()}, generator=gens)
                shape = (hi - lo, c, h, w)
                if mode == "single":
                    noise = randn((hi - lo, opts.frames - (0 if ctx is None else 1), c, h, w), gens, dev)
                    step_fn = fns.fn if fns.joint is None else fns.joint(randn((hi - lo, 1, c, h, w), gens, dev))
                    clip = forcing_sample(step_fn, noise, self.process, context=ctx, **common)
                    clip = clip if ctx is None else torch.cat([ctx, clip], dim=1)
                elif mode == "chunked":
                    if ctx is not None:
                        raise ValueError("chunk-by-chunk generation is the text-to-video baseline: no first image")
                    clip = chunked_sample(fns.fn, self.process, shape, total_frames=opts.frames, window=window,
                                          device=dev, **common)
                else:
                    clip = rollout(fns.fn, self.process, shape, total_frames=opts.frames, window=window,
                                   overlap=opts.overlap, context_noise=opts.context_noise, first_context=ctx,
                                   device=dev, context_fn=fns.history, **common)
                outs.append(clip.float())
        return outs


@dataclass(frozen=True)
class _ModelFunctions:
    """What `VideoPipeline._sample` calls: the model function of a window, and the builders ``noise -> fn`` of
    image-to-video's joint guidance and of a rollout window's history guidance (None when not used)."""

    fn: Callable
    joint: Callable | None = None
    history: Callable | None = None


def _mode(opts: VideoOptions, window: int) -> str:
    """How the clip is sampled: "single" (every frame at once: up to the window, or extrapolated), else the long mode."""
    return "single" if opts.frames <= window or opts.long_mode == "extrapolate" else opts.long_mode


def _check_parts(opts: VideoOptions, window: int, image, first_frame_model, first_frame_check, attention) -> None:
    """ValueError for options that need a part the call lacks, or parts that exclude each other."""
    if opts.first_frame_redraws and first_frame_model is None:
        raise ValueError("first_frame_redraws redraws a first-frame model's frames: give first_frame_model")
    if opts.first_frame_redraws and first_frame_check is None:
        raise ValueError("first_frame_redraws redraws the frames that fail a check: give first_frame_check")
    if first_frame_model is not None and image is not None:
        raise ValueError("give a first frame (image) or a first-frame model, not both")
    if attention is not None and opts.frames > window and opts.long_mode == "extrapolate":
        raise ValueError("extrapolate sets its own attention (UltraViCo); pass no attention core with it")


def _counted(fn, bar):
    """``fn`` moving ``bar`` by one after every call."""
    def counted(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        out = fn(x, t, **kwargs)
        bar.update(1)
        return out

    return counted


def _drop_context(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, t_noise: float, block_frames: int = 1):
    """(x, t) with the first Fc frames (``noise`` is (N, Fc, C, H, W)) replaced by that noise at network
    time ``t_noise`` (the noise end of the process): the unconditional input of image or history guidance.
    A temporal patch (``block_frames``) shared with generated frames keeps their time: its context frames
    become noise at that time."""
    fc = noise.shape[1]
    x, t = x.clone(), t.clone()
    x[:, :fc] = noise.to(x.dtype)
    t[:, : fc // block_frames * block_frames] = t_noise  # whole context patches only
    return x, t


# ----------------------------------------------------------------------------- loading


def load_video_pipeline(path: str | Path, device: str | torch.device = "cpu") -> VideoPipeline:
    """Load a video model folder (written by `ditkit.pipelines.folder.save_video_pipeline`) onto ``device``.
    Raises CheckpointError (one clear line) on any problem, BudgetError when the model would not fit in memory.

    As for image folders (`ditkit.pipelines.image.load_pipeline`), config.json is checked, the memory estimated
    and the weights checked against the config from the safetensors header before any tensor is read."""
    folder, info, spec = read_model_folder(path)
    if spec.kind != VIDEO_KIND:
        raise CheckpointError(f"{path} is not a ditkit video model folder (kind={spec.kind!r})")
    config = spec.config
    state = read_weights(folder, spec, lambda: VideoDiT(config))  # memory, header and finite values checked
    model = VideoDiT(config)
    check_state_dict(state, model.state_dict(), path)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    where = confined_path(folder, spec.text_encoder, "text_encoder.path", folder / "config.json")
    encoder = load_text_encoder(where).eval()
    try:
        check_text_dims(encoder.text_dim, config)
    except ValueError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    info_for_codec = {**info, "config": config.dit.to_dict()}  # the codec is checked against the per-frame trunk
    codec = codec_from_info(path, info_for_codec)
    if isinstance(codec, torch.nn.Module):
        codec.eval()
    return VideoPipeline(model, spec.process, encoder, codec, spec.defaults, info).to(device)
