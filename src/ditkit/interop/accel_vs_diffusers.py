"""ditkit.accel against diffusers' own cache hooks, on the same weights, seeds, labels and sampler steps.

    result = compare("assets/shapes-dit", Setting(steps=50, num_samples=32))
    print(markdown(result))

The model folder's weights are put into a diffusers twin (`ditkit.interop.parity.diffusers_twin`: the same
function, numerics included), and both networks are sampled by the same sampler code (ditkit's Euler flow
sampler, `ditkit.diffusion.sample.sample`) from the same noise and labels: ditkit at full compute and with the
`ditkit.accel` methods of `ditkit bench accel` (TeaCache when the folder holds a matching ``teacache.json``);
diffusers at full compute and with its hooks, ``transformer.enable_cache(...)`` with ``FirstBlockCacheConfig``
and ``TaylorSeerCacheConfig`` (Liu et al. 2025, arXiv:2503.06923) at several settings. TaylorSeer's default
module patterns match no module of `DiTTransformer2DModel`, so its pre-gate attention and MLP outputs
(``transformer_blocks.<i>.attn1`` and ``.ff``) are named through ``cache_identifiers``.

Per configuration: wall time of one generation over every sample (decoding not timed), speedup over its
own side's full compute (the faster of a timing before and one after the methods) and the PSNR of its
decoded images against its own side's full-compute images (capped at 100 dB); the summary gives each side's
best speedup at PSNR >= ``Setting.psnr`` and their ratio. The command line is
``benchmarks/accel_vs_diffusers.py``. Needs diffusers.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..accel import TeaCacheFit, UnsupportedCombination, accelerate, calls_per_generation, cfg_reuse
from ..accel.bench import default_methods, select_methods
from ..accel.steps import GenerationClock
from ..diffusion.flow import FlowMatching
from ..diffusion.gaussian import GaussianDiffusion
from ..diffusion.sample import sample
from ..eval.metrics import psnr
from ..pipelines.folder import codec_from_info, load_float_network
from ..pipelines.schema import SamplingDefaults
from .parity import diffusers_twin

PSNR_CAP = 100.0


@dataclass(frozen=True)
class Setting:
    """What one comparison samples and how it is timed."""

    steps: int = 50
    num_samples: int = 32
    seed: int = 0
    batch_size: int | None = None  # None: all samples in one generation
    cfg_scale: float | None = None  # None: the model's default
    repeats: int = 1  # timed runs per configuration (the fastest counts)
    psnr: float = 30.0  # quality bar of the matched-PSNR summary (dB)
    methods: str | None = None  # comma-separated ditkit method names to keep (substring match; None: all)
    device: str = "cpu"


@dataclass
class Row:
    """One configuration's measurement."""

    side: str  # "ditkit" or "diffusers"
    method: str
    settings: str
    seconds: float  # one run over every sample (the fastest of `repeats`)
    psnr: float = PSNR_CAP
    speedup: float = 1.0
    extra: dict = field(default_factory=dict)


class DiffusersDenoiser(nn.Module):
    """``fn(x, t, y)`` over a diffusers DiT, as ditkit's samplers call a model, with diffusers' cache hooks.

    `DiTTransformer2DModel` does not inherit diffusers' ``CacheMixin`` (in 0.42.1 it has no ``enable_cache``);
    the twin's class is extended with that mixin — diffusers' own code — so ``transformer.enable_cache(...)``,
    ``disable_cache()`` and ``cache_context(...)`` work as on the models that have them. The hooks' state is
    reset at each new generation (detected from network time, as `ditkit.accel` does).
    """

    def __init__(self, transformer: nn.Module, config):
        super().__init__()
        from diffusers.models.cache_utils import CacheMixin

        if not isinstance(transformer, CacheMixin):
            cls = type(transformer)
            transformer.__class__ = type(cls.__name__, (CacheMixin, cls), {})
        self.transformer, self.config, self.clock = transformer, config, GenerationClock()

    def reset(self) -> None:
        self.clock.reset()
        if self.transformer.is_cache_enabled:
            self.transformer._reset_stateful_cache()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self.transformer.is_cache_enabled:
            return self.transformer(x, timestep=t, class_labels=y).sample  # (N, C_out, H, W)
        if self.clock.tick(t):
            self.transformer._reset_stateful_cache()
        with self.transformer.cache_context("cond"):  # guidance runs cond and uncond as one batch
            return self.transformer(x, timestep=t, class_labels=y).sample


def diffusers_configs() -> list[tuple[str, object]]:
    """(label, diffusers cache config) pairs, conservative to aggressive within each hook."""
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    branches = [r"transformer_blocks\.\d+\.attn1", r"transformer_blocks\.\d+\.ff"]
    out = [(f"FirstBlockCache {th}", FirstBlockCacheConfig(threshold=th)) for th in (0.05, 0.1, 0.2)]
    for n, m in ((3, 1), (4, 2), (5, 2)):
        out.append((f"TaylorSeer N={n} m={m}", TaylorSeerCacheConfig(
            cache_interval=n, max_order=m, disable_cache_before_step=3, taylor_factors_dtype=torch.float32,
            cache_identifiers=branches)))
    out.append(("TaylorSeer N=4 m=2 bf16 factors", TaylorSeerCacheConfig(
        cache_interval=4, max_order=2, disable_cache_before_step=3, cache_identifiers=branches)))
    return out


def unsupported_hooks(transformer: nn.Module) -> list[str]:
    """Notes for diffusers hook settings that do not apply to this DiTTransformer2DModel (not run)."""
    from diffusers.hooks import TaylorSeerCacheConfig
    from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

    names = [n for n, _ in transformer.named_modules()]
    notes = []
    if not any(re.fullmatch(p, n) for p in _TRANSFORMER_BLOCK_IDENTIFIERS for n in names):
        notes.append(f"diffusers {TaylorSeerCacheConfig.__name__} with its default module patterns hooks no module of "
                     "DiTTransformer2DModel (the patterns want names ending in 'attn'; the DiT's are 'attn1'), so "
                     "it would compute fully: measured with cache_identifiers on attn1 and ff instead")
    if "proj_out" not in names:
        notes.append("diffusers TaylorSeer lite mode (use_lite_mode=True) caches 'proj_out' and returns zeros for "
                     "whole blocks; DiTTransformer2DModel has no 'proj_out' (it has proj_out_1/proj_out_2), so it "
                     "would sample from zeroed blocks: not run")
    return notes


def hooked_modules(transformer: nn.Module) -> int:
    """Modules of `transformer` that carry a diffusers hook."""
    return sum(1 for _, m in transformer.named_modules() if getattr(m, "_diffusers_hook", None) is not None
               and m._diffusers_hook.hooks)


# ----------------------------------------------------------------------------- measuring


@dataclass
class Source:
    """A float model folder as the benchmark reads it (`ditkit.pipelines.folder.load_float_network`)."""

    model: nn.Module
    process: FlowMatching | GaussianDiffusion  # compare runs flow models only
    defaults: SamplingDefaults
    codec: nn.Module | None  # latent models: decodes samples to images

    @classmethod
    def read(cls, folder: Path, device: str) -> Source:
        model, info, spec = load_float_network(folder, device=device)
        codec = codec_from_info(folder, info)
        if isinstance(codec, nn.Module):
            codec.to(device).eval()
        return cls(model, spec.process, spec.defaults, codec)

    @property
    def config(self):
        return self.model.config

    def decode(self, samples: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Samples (N, C, h, w) -> images in [-1, 1] on the CPU (decoded for a latent model)."""
        if self.codec is None:
            return samples
        device = next(self.codec.parameters()).device if isinstance(self.codec, nn.Module) else "cpu"
        with torch.inference_mode():
            return torch.cat([self.codec.decode(samples[i:i + batch_size].to(device)).float().clamp(-1, 1).cpu()
                              for i in range(0, len(samples), batch_size)])


class Side:
    """Times sampling runs of one side and scores them against that side's full compute."""

    def __init__(self, name: str, pipe, setting: Setting, labels: torch.Tensor, cfg_scale: float):
        self.name, self.pipe, self.setting, self.labels, self.cfg_scale = name, pipe, setting, labels, cfg_scale
        self.common = dict(process=pipe.process, sampler="euler", steps=setting.steps, shift=pipe.defaults.shift,
                           seed=setting.seed, batch_size=setting.batch_size or len(labels), progress=False)
        self.base_images: torch.Tensor | None = None
        self.base_seconds = math.inf
        self.rows: list[Row] = []

    def _sync(self) -> None:
        if self.setting.device.startswith("cuda"):
            torch.cuda.synchronize()

    def time(self, run) -> tuple[torch.Tensor, float]:
        """(decoded images, fastest seconds) of ``run() -> samples`` over `repeats` runs."""
        best, out = math.inf, None
        for _ in range(max(1, self.setting.repeats)):
            self._sync()
            t0 = time.perf_counter()
            out = run()
            self._sync()
            best = min(best, time.perf_counter() - t0)
        return self.pipe.decode(out).clamp(-1, 1), best

    def sample(self, model, cfg_scale: float | None = None, model_wrapper=None) -> torch.Tensor:
        scale = self.cfg_scale if cfg_scale is None else cfg_scale
        return sample(model, self.labels, cfg_scale=scale, model_wrapper=model_wrapper, **self.common)

    def baseline(self, run) -> None:
        images, seconds = self.time(run)
        if self.base_images is None:
            self.base_images = images
            self.rows.insert(0, Row(self.name, "full compute", "full compute", seconds))
        self.base_seconds = min(self.base_seconds, seconds)

    def add(self, method: str, settings: str, images: torch.Tensor, seconds: float, **extra) -> Row:
        value = float(psnr(images, self.base_images).clamp(max=PSNR_CAP).mean())
        row = Row(self.name, method, settings, seconds, psnr=value, extra=extra)
        self.rows.append(row)
        return row

    def finish(self) -> list[Row]:
        self.rows[0].seconds = self.base_seconds
        for r in self.rows:
            r.speedup = self.base_seconds / r.seconds
        return self.rows


def run_ditkit(side: Side, methods, notes: list[str], say) -> None:
    model, cfg = side.pipe.model, side.pipe.config
    calls = calls_per_generation("euler", side.setting.steps)
    for m in methods:
        if m.cfg_every > 1 and side.cfg_scale == 1.0:
            continue
        try:
            fast = accelerate(model, *m.configs)
        except UnsupportedCombination as e:
            notes.append(f"ditkit {m.label} skipped: {e}")
            continue

        def run(fast=fast, m=m):
            fast.begin(calls)  # fresh caches; lets policies compute the last call
            if m.cfg_every == 1:
                return side.sample(fast)
            wrap = lambda fn: cfg_reuse(fn, side.cfg_scale, null_label=cfg.num_classes, every=m.cfg_every)  # noqa: E731
            return side.sample(fast, cfg_scale=1.0, model_wrapper=wrap)

        images, seconds = side.time(run)
        row = side.add(m.label, m.describe(), images, seconds, compute_fraction=round(fast.stats.compute_fraction, 4))
        say(f"ditkit {m.label}: {side.base_seconds / seconds:.2f}x, PSNR {row.psnr:.1f} dB")


def run_diffusers(side: Side, denoiser: DiffusersDenoiser, configs, notes: list[str], say) -> None:
    for label, hook in configs:
        try:
            denoiser.transformer.enable_cache(hook)
        except Exception as e:  # noqa: BLE001 - a hook that cannot attach is reported, not fatal
            notes.append(f"diffusers {label}: could not be applied to DiTTransformer2DModel ({type(e).__name__}: {e})")
            continue
        try:
            if not hooked_modules(denoiser.transformer):
                notes.append(f"diffusers {label}: attached to no module of DiTTransformer2DModel; not run")
                continue

            def run():
                denoiser.reset()
                return side.sample(denoiser)

            images, seconds = side.time(run)
        except Exception as e:  # noqa: BLE001 - a hook that breaks this model is reported, not fatal
            first = str(e).splitlines()[0] if str(e) else ""
            notes.append(f"diffusers {label}: failed on DiTTransformer2DModel ({type(e).__name__}: {first})")
            continue
        finally:
            if denoiser.transformer.is_cache_enabled:
                denoiser.transformer.disable_cache()
        row = side.add(label, repr(hook), images, seconds)
        say(f"diffusers {label}: {side.base_seconds / seconds:.2f}x, PSNR {row.psnr:.1f} dB")


def best_at(rows: list[Row], target: float) -> Row:
    """The fastest row with PSNR >= target (full compute always qualifies)."""
    return max((r for r in rows if r.psnr >= target), key=lambda r: r.speedup)


def teacache_fit(folder: Path, steps: int, cfg_scale: float):
    """The folder's TeaCache fit if it was made for this sampler, step count and guidance scale, else None."""
    path = folder / "teacache.json"
    if not path.is_file():
        return None
    fit = TeaCacheFit.load(path)
    want = {"sampler": "euler", "steps": steps, "cfg_scale": cfg_scale}
    return fit if all(fit.setting.get(k) == v for k, v in want.items()) else None


def compare(folder: str | Path, setting: Setting = Setting(), say=lambda s: None) -> dict:
    """Run both sides (see module doc) and return rows, summary and notes as a JSON-ready dict."""
    try:
        import diffusers
    except ImportError:
        raise ValueError("this benchmark needs diffusers (pip install diffusers)") from None
    diffusers.utils.logging.set_verbosity_error()  # its dtype advice on .to() is noise here
    folder = Path(folder)
    pipe = Source.read(folder, setting.device)
    if not isinstance(pipe.process, FlowMatching):
        raise ValueError(f"{folder} is not a flow-matching model; this benchmark runs the Euler flow sampler")
    cfg = pipe.config
    cfg_scale = pipe.defaults.cfg_scale if setting.cfg_scale is None else setting.cfg_scale
    labels = torch.arange(setting.num_samples) % max(cfg.num_classes, 1)
    transformer, notes = diffusers_twin(pipe.model)  # ValueError if diffusers' DiT cannot express the model
    transformer.eval()
    notes += unsupported_hooks(transformer)
    denoiser = DiffusersDenoiser(transformer, cfg)

    fit = teacache_fit(folder, setting.steps, cfg_scale)
    methods = default_methods(cfg.depth, setting.steps, fit.coefficients if fit else None, guided=cfg_scale != 1.0)
    if setting.methods:
        methods = select_methods(methods, setting.methods, what="ditkit method")
    if fit is None:
        methods = [m for m in methods if m.family != "TeaCache"]
        notes.append("ditkit TeaCache left out: no teacache.json for this setting in the model folder "
                     "(ditkit calibrate-teacache fits one)")

    ours = Side("ditkit", pipe, setting, labels, cfg_scale)
    theirs = Side("diffusers", pipe, setting, labels, cfg_scale)

    def full_diffusers():
        denoiser.reset()
        return theirs.sample(denoiser)

    ours.baseline(lambda: ours.sample(pipe.model))
    theirs.baseline(full_diffusers)
    say(f"full compute: ditkit {ours.base_seconds:.2f}s, diffusers {theirs.base_seconds:.2f}s")
    run_ditkit(ours, methods, notes, say)
    run_diffusers(theirs, denoiser, diffusers_configs(), notes, say)
    ours.baseline(lambda: ours.sample(pipe.model))  # again: the faster full-compute timing is the reference
    theirs.baseline(full_diffusers)
    rows = ours.finish() + theirs.finish()

    agree = float(psnr(theirs.base_images, ours.base_images).clamp(max=PSNR_CAP).mean())
    b_ours, b_theirs = best_at(ours.rows, setting.psnr), best_at(theirs.rows, setting.psnr)
    steps = setting.steps
    summary = {
        "psnr_target": setting.psnr,
        "ditkit_best": {"method": b_ours.method, "speedup": b_ours.speedup, "psnr": b_ours.psnr},
        "diffusers_best": {"method": b_theirs.method, "speedup": b_theirs.speedup, "psnr": b_theirs.psnr},
        "speedup_ratio": b_ours.speedup / b_theirs.speedup,  # ditkit / diffusers, each over its own baseline
        "baseline_ms_per_step": {"ditkit": 1e3 * ours.base_seconds / steps, "diffusers": 1e3 * theirs.base_seconds / steps},
        "best_ms_per_step": {"ditkit": 1e3 * b_ours.seconds / steps, "diffusers": 1e3 * b_theirs.seconds / steps},
        "baseline_psnr": agree,  # diffusers' full compute against ditkit's (same function: ~100)
    }
    model_info = {"folder": str(folder), "depth": cfg.depth, "hidden_size": cfg.hidden_size, "tokens": cfg.num_tokens,
                  "in_channels": cfg.in_channels, "latent": pipe.codec is not None,
                  "parameters": pipe.model.num_parameters()}
    run_info = {**asdict(setting), "sampler": "euler", "cfg_scale": cfg_scale, "shift": pipe.defaults.shift,
                "threads": torch.get_num_threads(), "torch": torch.__version__, "diffusers": diffusers.__version__}
    return {"setting": run_info, "model": model_info, "rows": [asdict(r) for r in rows], "summary": summary,
            "notes": notes}


# ----------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    s, steps, n = result["setting"], result["setting"]["steps"], result["setting"]["num_samples"]
    lines = [f"{n} samples, Euler {steps} steps, cfg {s['cfg_scale']}, seed {s['seed']}, {s['threads']} thread(s), "
             f"{s['device']}; diffusers {s['diffusers']}, torch {s['torch']}", "",
             "| side | method | s / sample | ms / step | speedup | PSNR dB |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['side']} | {r['method']} | {r['seconds'] / n:.4f} | {1e3 * r['seconds'] / steps:.1f} | "
                     f"{r['speedup']:.2f}x | {r['psnr']:.1f} |")
    m = result["summary"]
    a, b = m["ditkit_best"], m["diffusers_best"]
    lines += ["", f"Best speedup at PSNR >= {m['psnr_target']:g} dB (each over its own full compute): "
              f"ditkit {a['speedup']:.2f}x ({a['method']}, {a['psnr']:.1f} dB), diffusers {b['speedup']:.2f}x "
              f"({b['method']}, {b['psnr']:.1f} dB); ratio ditkit/diffusers **{m['speedup_ratio']:.2f}**.",
              f"Step time, full compute: ditkit {m['baseline_ms_per_step']['ditkit']:.1f} ms, diffusers "
              f"{m['baseline_ms_per_step']['diffusers']:.1f} ms; at the best settings: ditkit "
              f"{m['best_ms_per_step']['ditkit']:.1f} ms, diffusers {m['best_ms_per_step']['diffusers']:.1f} ms.",
              f"Sanity: diffusers' full compute vs ditkit's, PSNR {m['baseline_psnr']:.1f} dB (same weights and "
              "numerics; capped at 100)."]
    lines += [f"- note: {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


