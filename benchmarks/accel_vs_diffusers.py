"""ditkit.accel against diffusers' own cache hooks, on the same weights, seeds, labels and sampler steps.

A ditkit model folder (default: the bundled assets/shapes-dit) is loaded, and the same weights are put
into diffusers' `DiTTransformer2DModel` through ditkit's explicit key table (`ditkit.interop.diffusers_dit`).
Both networks are then sampled by the *same* sampler code (ditkit's Euler flow sampler, `ditkit.sample`,
the model's default guidance scale; one generation per run), from the same initial noise and labels:

  * ditkit:    full compute, and `ditkit.accel` methods (FORA, Δ-DiT, first-block cache, TeaCache when the
               folder holds a matching ``teacache.json``, TaylorSeer, gated Taylor, RAS, guidance reuse) at
               the settings `ditkit bench accel` uses;
  * diffusers: full compute, and diffusers' hooks enabled with ``transformer.enable_cache(...)``:
               ``FirstBlockCacheConfig`` (ParaAttention's first-block cache) and ``TaylorSeerCacheConfig``
               (Liu et al. 2025, arXiv:2503.06923) at several settings. TaylorSeer's default module patterns
               (names ending in ``attn``) match nothing in `DiTTransformer2DModel`, whose attention is ``attn1``;
               the benchmark says so and hooks ``transformer_blocks.<i>.attn1`` and ``.ff`` — the pre-gate
               attention and MLP outputs, the features the TaylorSeer paper caches for DiT — through
               ``cache_identifiers``. Its lite mode needs a ``proj_out`` module, which the DiT lacks (noted).

Per configuration: wall time per sample (sampling only; decoding a latent model's samples is the same
for every configuration and not timed), milliseconds per sampler step, speedup over its *own side's*
full compute (measured before and after the methods in this run; the faster baseline counts), and the
PSNR of its decoded images against its own side's full-compute images (capped at 100 dB). The summary
gives each side's best speedup at PSNR >= --psnr (default 30 dB) and the ratio ditkit / diffusers.

    python benchmarks/accel_vs_diffusers.py --threads 1                     # bundled model, 50 steps
    python benchmarks/accel_vs_diffusers.py --model runs/m --num-samples 64 --json accel_vs_diffusers.json

Same function on both sides. diffusers' DiT defaults differ from the reference numerics in its
timestep-frequency divisor and one LayerNorm eps (REFERENCE.md §4); the twin's ``Timesteps`` shift and
LayerNorm eps are set to the model's own values, so both sides compute the model as it was trained, and
the PSNR between the two full-compute baselines is printed as a sanity line (100 dB = identical up to
float rounding). `DiTTransformer2DModel` has no 2D RoPE, no QK-norm and no Mix-FFN;
for a model that uses them (ditkit's shapes presets do), the diffusers side gets diffusers' own
``RMSNorm`` as ``attn1.norm_q``/``norm_k``, a short attention processor that applies the same rotary
tables (`RotaryAttnProcessor`), and a copy of the Mix-FFN as each block's ``.ff`` (`GridFeedForward`);
the hooks are unaffected (they wrap blocks, attention and feed-forward modules).
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ditkit.models.layers import apply_rope, grid_positions, rope_tables

PSNR_CAP = 100.0


@dataclass(frozen=True)
class Setting:
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
    side: str  # "ditkit" or "diffusers"
    method: str
    settings: str
    seconds: float  # one run over every sample (the fastest of `repeats`)
    psnr: float = PSNR_CAP
    speedup: float = 1.0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- diffusers twin


class RotaryAttnProcessor:
    """Self-attention for diffusers' `Attention` with the ditkit model's 2D RoPE (and QK-norm if the module
    has ``norm_q``/``norm_k``): to_q/k/v -> heads -> norm -> rotary -> SDPA -> to_out."""

    def __init__(self, head_dim: int, grid: tuple[int, int], theta: float):
        self.cos, self.sin = rope_tables(head_dim, grid_positions(*grid), theta)  # (T, hd) each

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        n, t, _ = hidden_states.shape
        q, k, v = (proj(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (N, H, T, hd)
                   for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        cos, sin = self.cos.to(q.device), self.sin.to(q.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, hd)
        out = out.transpose(1, 2).reshape(n, t, -1)  # (N, T, D)
        return attn.to_out[1](attn.to_out[0](out))


class GridFeedForward(nn.Module):
    """A copy of the model's Mix-FFN as a block's ``.ff``: diffusers calls ``ff(hidden_states)`` and the
    depthwise conv needs the token grid, which is fixed for this benchmark's model."""

    def __init__(self, mlp: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.mlp, self.grid = copy.deepcopy(mlp), grid

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.mlp(hidden_states, self.grid)


def diffusers_twin(model) -> tuple[nn.Module, list[str]]:
    """A `DiTTransformer2DModel` holding `model`'s weights and numerics, and notes on what was added."""
    from diffusers.models.normalization import RMSNorm

    from ditkit.interop.diffusers_dit import to_diffusers_model

    cfg, notes = model.config, []
    mixffn = cfg.mlp_type == "mixffn"
    extras = {k for k in model.state_dict() if ".q_norm." in k or ".k_norm." in k or ".mlp.dwconv." in k}
    if not (cfg.use_rope or cfg.qk_norm or mixffn):
        return _same_numerics(to_diffusers_model(model, allow_numerics_change=True), cfg, notes), notes
    from ditkit.models.dit import DiT

    with torch.device("meta"):  # Mix-FFN's fc1/fc2 have the plain MLP's shapes; its dwconv is added below
        plain = DiT(cfg.replace(use_rope=False, qk_norm=False, mlp_type="gelu" if mixffn else cfg.mlp_type))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in extras}, assign=True)
    twin = to_diffusers_model(plain, allow_numerics_change=True)
    first = next(model.parameters())
    grid = (cfg.hw[0] // cfg.patch_size, cfg.hw[1] // cfg.patch_size)
    for i, block in enumerate(twin.transformer_blocks):
        if mixffn:
            block.ff = GridFeedForward(model.blocks[i].mlp, grid)
        attn = block.attn1
        if cfg.qk_norm:
            src = model.blocks[i].attn
            attn.norm_q = RMSNorm(cfg.head_dim, eps=src.q_norm.eps).to(first)
            attn.norm_k = RMSNorm(cfg.head_dim, eps=src.k_norm.eps).to(first)
            with torch.no_grad():
                attn.norm_q.weight.copy_(src.q_norm.weight)
                attn.norm_k.weight.copy_(src.k_norm.weight)
        if cfg.use_rope:
            attn.set_processor(RotaryAttnProcessor(cfg.head_dim, grid, cfg.rope_theta))
    _same_numerics(twin, cfg, notes)
    added = [name for name, on in (("QK-norm (diffusers RMSNorm as attn1.norm_q/norm_k)", cfg.qk_norm),
                                   ("2D RoPE (RotaryAttnProcessor)", cfg.use_rope),
                                   ("Mix-FFN (GridFeedForward as .ff)", mixffn)) if on]
    notes.append("the model uses " + " and ".join(added) + ", which DiTTransformer2DModel has no switch for; "
                 "added to the diffusers twin")
    return twin, notes


def _same_numerics(twin: nn.Module, cfg, notes: list[str]) -> nn.Module:
    """Set the twin's timestep-frequency shift and LayerNorm eps to the model's (REFERENCE.md §4), so that
    both sides compute the function the model was trained as; diffusers' defaults are shift 1, eps 1e-6."""
    from ditkit.interop.diffusers_dit import numerics_changes

    changes = numerics_changes(cfg)
    if not changes:
        return twin
    for block in twin.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = cfg.timestep_freq_shift  # Timesteps(..., shift)
        block.norm1.norm.eps = cfg.norm_eps  # pre-attention LayerNorm
    twin.norm_out.eps = cfg.norm_eps
    notes.append("diffusers' DiT defaults differ from this model's numerics (" + "; ".join(changes) + "): the twin's "
                 "Timesteps.downscale_freq_shift and LayerNorm eps are set to the model's values")
    return twin


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

        from ditkit.accel.steps import GenerationClock

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


class Side:
    """Times sampling runs of one side and scores them against that side's full compute."""

    def __init__(self, name: str, pipe, setting: Setting, labels: torch.Tensor, cfg_scale: float):
        self.name, self.pipe, self.setting, self.labels, self.cfg_scale = name, pipe, setting, labels, cfg_scale
        self.common = dict(process=pipe.process, sampler="euler", steps=setting.steps, shift=pipe.defaults.shift,
                           seed=setting.seed, batch_size=setting.batch_size or len(labels))
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
        from ditkit.pipeline import sample

        scale = self.cfg_scale if cfg_scale is None else cfg_scale
        return sample(model, self.labels, cfg_scale=scale, model_wrapper=model_wrapper, **self.common)

    def baseline(self, run) -> None:
        images, seconds = self.time(run)
        if self.base_images is None:
            self.base_images = images
            self.rows.insert(0, Row(self.name, "full compute", "full compute", seconds))
        self.base_seconds = min(self.base_seconds, seconds)

    def add(self, method: str, settings: str, images: torch.Tensor, seconds: float, **extra) -> Row:
        from ditkit.eval.metrics import psnr

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
    from ditkit.accel import UnsupportedCombination, accelerate, calls_per_generation, cfg_reuse

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
    from ditkit.accel import TeaCacheFit

    path = folder / "teacache.json"
    if not path.is_file():
        return None
    fit = TeaCacheFit.load(path)
    want = {"sampler": "euler", "steps": steps, "cfg_scale": cfg_scale}
    return fit if all(fit.setting.get(k) == v for k, v in want.items()) else None


def compare(folder: str | Path, setting: Setting = Setting(), say=lambda s: None) -> dict:
    """Run both sides (see module doc) and return rows, summary and notes as a JSON-ready dict."""
    from ditkit.accel.bench import default_methods, select_methods
    from ditkit.diffusion.flow import FlowMatching
    from ditkit.pipeline import load_pipeline

    try:
        import diffusers
    except ImportError:
        raise ValueError("this benchmark needs diffusers (pip install diffusers)") from None
    diffusers.utils.logging.set_verbosity_error()  # its dtype advice on .to() is noise here
    folder = Path(folder)
    pipe = load_pipeline(folder, device=setting.device)
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

    from ditkit.eval.metrics import psnr

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


def main(argv: list[str] | None = None) -> int:
    from ditkit.assets import default_model_dir
    from ditkit.cli_types import positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="ditkit model folder (default: the bundled assets/shapes-dit)")
    p.add_argument("--num-samples", type=positive_int, default=Setting.num_samples, help="samples, classes balanced")
    p.add_argument("--steps", type=positive_int, default=Setting.steps, help="Euler steps")
    p.add_argument("--cfg-scale", type=float, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, help="samples per generation (default: all at once)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed runs per configuration (fastest counts)")
    p.add_argument("--psnr", type=float, default=Setting.psnr, help="quality bar of the summary, dB")
    p.add_argument("--methods", help="ditkit methods to run, comma-separated substrings (default: all of "
                                     "ditkit bench accel's)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", help="also write the full result to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = Setting(steps=args.steps, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                      cfg_scale=args.cfg_scale, repeats=args.repeats, psnr=args.psnr, device=args.device,
                      methods=args.methods)
    try:
        result = compare(args.model or default_model_dir(), setting, say=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as e:  # CheckpointError included: one line, exit status 2
        print(f"accel_vs_diffusers: error: {e}", file=sys.stderr)
        return 2
    result["command"] = "python benchmarks/accel_vs_diffusers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(markdown(result))
    if args.json:
        from ditkit.io.checkpoint import save_json

        save_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
