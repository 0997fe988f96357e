"""The options of `Pipeline.generate` and `VideoPipeline.generate`: one frozen dataclass per modality.

Both methods take ``generate(inputs, options=None, **overrides)``: ``options`` is an `ImageOptions` /
`VideoOptions` (default: all defaults) and each override replaces one of its fields
(`dataclasses.replace`, so an unknown name is a TypeError that names it). The fields both share have
the same names and meaning (`SamplingOptions`); a field left None takes the model folder's value
(``config.json``'s ``"sampling"``, `ditkit.pipelines.folder.SamplingDefaults`), and the pipeline keeps
the options it resolved, every default filled in, as ``pipe.last_options`` (``as_dict()`` for JSON).

    opts = ImageOptions(steps=20, cfg_scale=2.0)
    images = pipe.generate(["circle", "star"], opts, seed=3)   # opts with seed=3
    pipe.last_options.as_dict()                                # {"sampler": "euler", "steps": 20, ...}

Seeding (both modalities): sample i's noise does not depend on the other samples computed beside it,
so ``batch_size`` never changes a result (`ditkit.diffusion.noise`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .folder import SamplingDefaults

LONG_MODES = ("rollout", "chunked", "extrapolate")
I2V_GUIDANCE = ("joint", "text")


@dataclass(frozen=True)
class SamplingOptions:
    """The fields every modality has.

    ``sampler``, ``steps``, ``cfg_scale`` (classifier-free guidance weight; 1 = none) and ``shift`` (the
    flow timestep shift) default to the model folder's. ``seed``: sample i's noise comes from it and i
    alone. ``batch_size``: samples per model call (memory, not results). ``progress``: a bar on stderr
    over the whole call (None: only when stderr is a terminal)."""

    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    shift: float | None = None
    seed: int = 0
    batch_size: int = 64
    progress: bool | None = None

    def __post_init__(self):
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.cfg_scale is not None and self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    def with_defaults(self, defaults: SamplingDefaults, **more):
        """These options with every None of the shared fields taken from the folder's ``defaults`` (and ``more``)."""
        filled = {k: getattr(defaults, k) for k in ("sampler", "steps", "cfg_scale", "shift")
                  if getattr(self, k) is None}
        return dataclasses.replace(self, **filled, **more)

    def as_dict(self) -> dict:
        """The fields as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class ImageOptions(SamplingOptions):
    """`Pipeline.generate`'s options: the shared ones and

    ``guidance_interval`` (lo, hi) in network time: guidance only there (Kynkäänniemi et al. 2024);
    ``cfg_channels``: 3 reproduces the reference DiT's guidance of the first three channels only;
    ``eta``: DDIM's noise (0 = deterministic)."""

    guidance_interval: tuple[float, float] | None = None
    cfg_channels: int | None = None
    eta: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", tuple(self.guidance_interval))


@dataclass(frozen=True)
class VideoOptions(SamplingOptions):
    """`VideoPipeline.generate`'s options: the shared ones (the sampler is Euler steps over per-frame times,
    ``"euler"``; 16 clips per batch by default) and

    ``frames``: the clip length (default the training window); beyond the window ``long_mode`` makes it:
    ``"rollout"`` (windows overlapping by ``overlap`` frames, default half the window, the context frames
    fed with ``context_noise``), ``"chunked"`` (independent windows) or ``"extrapolate"`` (one pass with
    UltraViCo's attention decay ``ultravico_alpha``). ``history_guidance`` > 0 guides a rollout's later
    windows on their context frames too. ``i2v_guidance``: image-to-video's guidance, ``"joint"`` (STIV's
    JIT-CFG) or ``"text"``. ``ar_step`` > 0: SkyReels-V2's asynchronous schedule. ``image_expert_scale``
    and ``image_expert_interval`` (lo, hi) in process time: the image expert's weight and where it acts.
    ``first_frame_redraws``: rounds of redrawing a first-frame model's frames that fail the check.
    ``latents``: return latent clips instead of decoded frames."""

    batch_size: int = 16
    frames: int | None = None
    overlap: int | None = None
    context_noise: float = 0.0
    long_mode: str = "rollout"
    ultravico_alpha: float = 0.9
    i2v_guidance: str = "joint"
    history_guidance: float = 0.0
    ar_step: int = 0
    image_expert_scale: float = 1.0
    image_expert_interval: tuple[float, float] | None = None
    first_frame_redraws: int = 0
    latents: bool = False

    def __post_init__(self):
        if self.long_mode not in LONG_MODES:
            raise ValueError(f"long_mode must be one of {', '.join(LONG_MODES)}, got {self.long_mode!r}")
        if self.i2v_guidance not in I2V_GUIDANCE:
            raise ValueError(f"i2v_guidance must be 'joint' or 'text', got {self.i2v_guidance!r}")
        if self.sampler not in (None, "euler"):
            raise ValueError(f"the video pipeline samples with Euler steps (sampler 'euler'), got {self.sampler!r}")
        if (self.steps is not None and self.steps <= 0) or (self.frames is not None and self.frames <= 0) \
                or self.batch_size <= 0:
            raise ValueError("steps, frames and batch_size must be positive")
        super().__post_init__()
        for name in ("history_guidance", "ar_step", "first_frame_redraws"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_expert_interval is not None:
            object.__setattr__(self, "image_expert_interval", tuple(self.image_expert_interval))


def resolve(cls, options, overrides: dict):
    """``options`` (an instance of ``cls`` or None: the defaults) with ``overrides`` applied. An override of
    None means the field's default: it is kept for a field whose default is None, skipped for the others.
    TypeError for options of another class and for a name that is not a field."""
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {unknown[0]!r} (options: {', '.join(fields)})")
    given = {k: v for k, v in overrides.items() if v is not None or fields[k].default is None}
    return dataclasses.replace(options, **given) if given else options


__all__ = ["I2V_GUIDANCE", "ImageOptions", "LONG_MODES", "SamplingOptions", "VideoOptions", "resolve"]
