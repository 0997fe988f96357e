"""Benchmark: full compute against acceleration settings on identical seeds, in one run.

For each setting ("method") the same labels and initial noise are sampled as for the baseline,
and the report gives, all measured in this one process:

* wall-clock seconds (the best of ``repeats``) and the speedup over full compute (timed before
  and after the methods; the faster of the two is the reference, so drift cannot flatter a method).
  With ``timing_samples`` the timings are of that many samples (the first labels and seeds, in
  batches of ``batch_size``: a multiple of it times the quality run's batch shape), run right
  after one untimed run over all samples, which gives every quality figure: large quality sets
  then cost one pass each, not ``repeats`` + 1 for full compute;
* multiply-accumulates executed (``Accelerated.stats``) and their ratio to full compute;
* PSNR and SSIM of each sample against its full-compute twin (``ditkit.eval.metrics``; PSNR is
  capped at 100 dB per sample so that identical images stay a finite number);
* with a classifier: class accuracy, the per-sample class agreement with full compute, and the
  Fréchet distance against reference images;
* the peak bytes held by caches (and by the guidance cache).

A progress bar on stderr (`ditkit.io.progress.RunBar`) counts every sampler step of a run — full compute
twice, every method, quality runs and timings (`bench_steps`) — so its estimate is the whole run's.

`write_report` turns the result into ``bench.json``, ``bench.md`` (a Markdown table) and, when
matplotlib is installed, ``bench.png`` (speedup versus PSNR).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..diffusion.sample import sample
from ..eval.metrics import classifier_features, frechet_distance, psnr, ssim
from ..io.progress import RunBar
from ..models.dit import macs_per_forward
from .delta import DeltaDiTConfig
from .fbcache import FirstBlockCacheConfig
from .forecast import FORAConfig, TaylorSeerConfig
from .gated import GatedTaylorConfig
from .guidance import cfg_reuse
from .ras import RASConfig
from .runner import UnsupportedCombination, accelerate, calls_per_generation
from .teacache import TeaCacheConfig

PSNR_CAP = 100.0
PLOT_PSNR_MAX = 60.0  # the plot's right edge: near-identical settings would squash the interesting range


@dataclass(frozen=True)
class Method:
    """One benchmarked setting: acceleration configs and an optional guidance-reuse period."""

    label: str
    configs: tuple = ()
    cfg_every: int = 1  # > 1: refresh the unconditional branch every this many guided calls (cfg_reuse)
    group: str | None = None  # the family name (default: from the configs); tune climbs each family in order

    @property
    def family(self) -> str:
        if self.group:
            return self.group
        names = [c.name for c in self.configs]
        if self.cfg_every > 1:
            names.append("CFG-reuse")
        return " + ".join(names) or "full compute"

    def describe(self) -> str:
        parts = [c.describe() for c in self.configs] + ([f"cfg_reuse(every={self.cfg_every})"] if self.cfg_every > 1 else [])
        return " + ".join(parts) or "full compute"


@dataclass(frozen=True)
class BenchSetting:
    sampler: str = "euler"
    steps: int = 50
    cfg_scale: float = 1.0
    shift: float = 1.0
    num_samples: int = 100
    seed: int = 0
    batch_size: int = 100
    repeats: int = 1
    timing_samples: int | None = None  # time on the first this many samples only (quality: all, untimed)

    @property
    def calls(self) -> int:
        return calls_per_generation(self.sampler, self.steps)


def measure_steps(setting: BenchSetting, n: int) -> int:
    """The sampler steps of one measurement of ``n`` samples: its runs over every sample and its timed ones."""
    k = setting.timing_samples
    if k is None or k >= n:
        return max(1, setting.repeats) * _run_steps(setting, n)
    return _run_steps(setting, n) + max(1, setting.repeats) * _run_steps(setting, k)


def bench_steps(setting: BenchSetting, n: int, methods: int) -> int:
    """The sampler steps of a benchmark of ``methods`` methods on ``n`` samples: full compute, the methods, and
    full compute timed again at the end (`Bench.finish`)."""
    k = setting.timing_samples
    again = max(1, setting.repeats) * _run_steps(setting, n if k is None or k >= n else k)
    return (methods + 1) * measure_steps(setting, n) + again


def _run_steps(setting: BenchSetting, n: int) -> int:
    return -(-n // setting.batch_size) * setting.steps


def default_methods(depth: int, calls: int, teacache_coefficients: tuple[float, ...] | None = None,
                    guided: bool = False) -> list[Method]:
    """Several settings per method family, each list ordered from conservative to aggressive."""
    half = max(1, depth // 2)
    ras_start = max(1, calls // 10)
    tea = teacache_coefficients or (1.0, 0.0)
    ms = [
        Method("FORA N=2", (FORAConfig(interval=2),)),
        Method("FORA N=3 w3", (FORAConfig(interval=3, warmup=3),)),
        Method("FORA N=4 w3", (FORAConfig(interval=4, warmup=3),)),
        Method("Δ-DiT N=2", (DeltaDiTConfig(interval=2, num_blocks=half),)),
        Method("Δ-DiT N=3", (DeltaDiTConfig(interval=3, num_blocks=half),)),
        Method("FBCache 0.05", (FirstBlockCacheConfig(0.05),)),
        Method("FBCache 0.1", (FirstBlockCacheConfig(0.1),)),
        Method("FBCache 0.2", (FirstBlockCacheConfig(0.2),)),
        Method("TeaCache 0.1", (TeaCacheConfig(0.1, tea),)),
        Method("TeaCache 0.2", (TeaCacheConfig(0.2, tea),)),
        Method("TeaCache 0.4", (TeaCacheConfig(0.4, tea),)),
        Method("TaylorSeer N=3 m=1", (TaylorSeerConfig(interval=3, order=1),)),
        Method("TaylorSeer N=4 m=1", (TaylorSeerConfig(interval=4, order=1),)),
        Method("TaylorSeer N=4 m=2", (TaylorSeerConfig(interval=4, order=2),)),
        Method("TaylorSeer N=5 m=2", (TaylorSeerConfig(interval=5, order=2),)),
        Method("TaylorSeer-trunk N=4 m=2", (TaylorSeerConfig(interval=4, order=2, granularity="trunk"),)),
        Method("GatedTaylor 0.005", (GatedTaylorConfig(0.005),)),
        Method("GatedTaylor 0.02", (GatedTaylorConfig(0.02),)),
        Method("GatedTaylor 0.05", (GatedTaylorConfig(0.05),)),
        Method("GatedTaylor 0.1", (GatedTaylorConfig(0.1),)),
        Method("RAS 0.75", (RASConfig(sample_ratio=0.75, start=ras_start),)),
        Method("RAS 0.5", (RASConfig(sample_ratio=0.5, start=ras_start),)),
        Method("RAS-high 0.75", (RASConfig(sample_ratio=0.75, start=ras_start, focus="high"),), group="RAS-high"),
        Method("RAS-high 0.5", (RASConfig(sample_ratio=0.5, start=ras_start, focus="high"),), group="RAS-high"),
        Method("TaylorSeer N=4 m=2 + RAS 0.75",
               (TaylorSeerConfig(interval=4, order=2), RASConfig(sample_ratio=0.75, start=ras_start))),
    ]
    if guided:
        ms += [Method("CFG-reuse k=2", (), cfg_every=2),
               Method("TaylorSeer N=3 m=1 + CFG-reuse k=2", (TaylorSeerConfig(interval=3, order=1),), cfg_every=2),
               Method("TaylorSeer N=4 m=2 + CFG-reuse k=2", (TaylorSeerConfig(interval=4, order=2),), cfg_every=2)]
    return ms


def select_methods(methods: list[Method], spec: str, what: str = "method") -> list[Method]:
    """The methods whose label or family contains one of the comma-separated names in ``spec``
    (case-insensitive, e.g. ``"FORA,TaylorSeer"``); ValueError when none does."""
    keep = [k.strip().lower() for k in spec.split(",") if k.strip()]
    chosen = [m for m in methods if any(k in m.label.lower() or k in m.family.lower() for k in keep)]
    if not chosen:
        raise ValueError(f"--methods {spec!r} matches no {what}")
    return chosen


@dataclass
class BenchResult:
    setting: dict
    model: dict
    rows: list[dict] = field(default_factory=list)  # the baseline first
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"setting": self.setting, "model": self.model, "rows": self.rows, "notes": self.notes}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _pair_metrics(images: torch.Tensor, reference: torch.Tensor) -> dict:
    out = {"psnr": float(psnr(images, reference).clamp(max=PSNR_CAP).mean())}
    out["ssim"] = float(ssim(images, reference).mean()) if min(images.shape[-2:]) >= 11 else None
    return out


def _class_metrics(classifier, images, labels, base_pred, reference_feats) -> dict:
    feats = classifier_features(classifier, images)
    pred = classifier.head(feats).argmax(dim=1)
    agree = 1.0 if base_pred is None else float((pred == base_pred).float().mean())
    out = {"accuracy": float((pred == labels).float().mean()), "agreement": agree}
    if reference_feats is not None:
        out["fd"] = frechet_distance(feats, reference_feats)
    return out, pred


class Bench:
    """Full compute once, then any number of methods on the same labels and seeds (see module doc).

    ``labels`` default to balanced classes. `measure` returns one row (speedups relative to the
    first full-compute timing); `finish` times full compute again and returns the `BenchResult`.
    ``bar``: a progress bar (e.g. a `RunBar` of `bench_steps`) moved by every sampler step; a measurement
    that is skipped, or a full compute loaded from ``full_store``, lowers its total by the steps not made.
    """

    def __init__(self, model, *, process, setting: BenchSetting = BenchSetting(), labels: torch.Tensor | None = None,
                 classifier=None, reference_images: torch.Tensor | None = None, decode=None,
                 full_store: str | Path | None = None, bar=None):
        cfg = self.cfg = model.config
        self.model, self.setting, self.classifier = model, setting, classifier
        self.decode = decode if decode is not None else (lambda x: x)  # a latent model's samples -> images (timed)
        n = setting.num_samples
        self.labels = torch.arange(n) % max(cfg.num_classes, 1) if labels is None else torch.as_tensor(labels)
        self.guided = setting.cfg_scale != 1.0
        self.common = dict(process=process, sampler=setting.sampler, steps=setting.steps, shift=setting.shift,
                           seed=setting.seed, batch_size=setting.batch_size, progress=False)
        self.bar = bar
        if bar is not None:
            self.common["callback"] = lambda *_: bar.update(1)
        self.ref_feats = None
        if classifier is not None and reference_images is not None:
            self.ref_feats = classifier_features(classifier, reference_images)
        self.timed = self._timing_labels(setting)
        self.base_images, seconds, reused = self._full_compute(full_store)
        self.base_macs = setting.calls * macs_per_forward(cfg, len(self.labels) * (2 if self.guided else 1))
        self.base_row = {"method": "full compute", "family": "full compute", "settings": "full compute",
                         "seconds": seconds, "macs": self.base_macs, "psnr": PSNR_CAP,
                         "ssim": 1.0 if min(self.base_images.shape[-2:]) >= 11 else None, "cache_bytes": 0}
        self.base_pred = None
        if classifier is not None:
            metrics, self.base_pred = _class_metrics(classifier, self.base_images, self.labels, None, self.ref_feats)
            self.base_row.update(metrics)
        model_info = {"depth": cfg.depth, "hidden_size": cfg.hidden_size, "tokens": cfg.num_tokens}
        self.result = BenchResult(setting=dict(setting.__dict__), model=model_info, rows=[self._derive(self.base_row)])
        if reused:
            self.result.notes.append(f"full-compute samples (quality reference) loaded from {full_store}; "
                                     "full compute timed in this run")

    def _full_compute(self, store) -> tuple[torch.Tensor, float, bool]:
        """Full-compute images and seconds; with ``store`` (see `full_store`) the images are loaded
        when that file holds this very run's samples, and written there after computing them."""
        if store is None:
            return *self._quality_and_time(self._full), False
        if self.timed is None:
            raise ValueError("a full-compute sample file needs timing_samples (without it the timed run "
                             "over all samples computes them anyway)")
        from .full_store import fingerprint, load_full, save_full

        codec = getattr(getattr(self.decode, "__self__", None), "codec", None)
        fp = fingerprint(self.model, self.setting, self.labels, codec)
        images = load_full(store, fp)
        if images is not None:
            self._skip(_run_steps(self.setting, len(self.labels)))  # the untimed run over every sample
            return images, self._best_time(lambda: self._full(self.timed))[1], True
        images, seconds = self._quality_and_time(self._full)
        save_full(store, images, self.labels, fp)
        return images, seconds, False

    def _skip(self, steps: int) -> None:
        if self.bar is not None:
            self.bar.skip(steps)

    def skip(self) -> None:
        """Lower the bar's total by one measurement that will not be made."""
        self._skip(measure_steps(self.setting, len(self.labels)))

    def _timing_labels(self, setting: BenchSetting) -> torch.Tensor | None:
        """The labels timed apart from the quality run (None: the quality run itself is timed)."""
        k = setting.timing_samples
        if k is None or k >= len(self.labels):
            return None
        if k < 1:
            raise ValueError(f"timing_samples must be >= 1, got {k}")
        return self.labels[:k]

    def _full(self, labels):
        return self.decode(sample(self.model, labels, cfg_scale=self.setting.cfg_scale, **self.common))

    def _best_time(self, fn):
        images, best = None, math.inf
        for _ in range(max(1, self.setting.repeats)):
            images, seconds = _timed(fn)
            best = min(best, seconds)
        return images, best

    def _quality_and_time(self, run, after_quality=lambda: None):
        """``run(labels)`` over every sample, and the best of ``repeats`` timings: of those very runs, or,
        with ``timing_samples``, of runs over the timed subset made after one untimed run over all."""
        if self.timed is None:
            return self._best_time(lambda: run(self.labels))
        images = run(self.labels)
        after_quality()
        return images, self._best_time(lambda: run(self.timed))[1]

    def _derive(self, row: dict) -> dict:
        row["speedup"] = self.base_row["seconds"] / row["seconds"]
        row["macs_speedup"] = self.base_macs / row["macs"]
        if self.classifier is not None:
            row["accuracy_drop"] = 100.0 * (self.base_row["accuracy"] - row["accuracy"])  # points
            if "fd" in row:
                base_fd = self.base_row["fd"]
                row["fd_increase"] = 100.0 * (row["fd"] / base_fd - 1.0) if base_fd > 0 else 0.0  # %
        return row

    def measure(self, method: Method, model=None, extra: dict | None = None) -> dict | None:
        """Sample with ``method``, append its row to the result and return it (None if not applicable).

        ``model``: another model of the same inputs and classes in place of the benchmarked one (a
        quantized or pruned variant: ``ditkit bench compress``); ``extra``: more columns for its row.
        """
        setting, cfg = self.setting, self.cfg
        if method.cfg_every > 1 and not self.guided:
            self.result.notes.append(f"skipped {method.label}: guidance reuse needs cfg_scale != 1")
            self.skip()
            return None
        try:
            fast = accelerate(self.model if model is None else model, *method.configs)
        except UnsupportedCombination as e:
            self.result.notes.append(f"skipped {method.label}: {e}")
            self.skip()
            return None
        fast.begin(setting.calls)  # lets policies always compute the last call
        guidance = []

        def wrap(fn):
            guidance[:] = [cfg_reuse(fn, setting.cfg_scale, null_label=cfg.num_classes, every=method.cfg_every)]
            return guidance[0]

        def run(labels):
            if method.cfg_every == 1:
                return self.decode(sample(fast, labels, cfg_scale=setting.cfg_scale, **self.common))
            return self.decode(sample(fast, labels, cfg_scale=1.0, model_wrapper=wrap, **self.common))

        quality_macs = []
        images, seconds = self._quality_and_time(run, lambda: quality_macs.append(fast.stats.macs))
        macs = quality_macs[0] if quality_macs else fast.stats.macs // max(1, setting.repeats)
        row = {"method": method.label, "family": method.family, "settings": method.describe(), "seconds": seconds,
               "macs": macs,
               "cache_bytes": fast.stats.peak_cache_bytes + sum(g.cache_bytes() for g in guidance),
               **_pair_metrics(images, self.base_images), **(extra or {})}
        if self.classifier is not None:
            row.update(_class_metrics(self.classifier, images, self.labels, self.base_pred, self.ref_feats)[0])
        self.result.rows.append(self._derive(row))
        return row

    def finish(self) -> BenchResult:
        """Time full compute again (the faster timing is the reference) and return the result."""
        _, again = self._best_time(lambda: self._full(self.labels if self.timed is None else self.timed))
        self.base_row["seconds"] = min(self.base_row["seconds"], again)
        for row in self.result.rows:
            self._derive(row)
        return self.result


def run_bench(model, *, process, setting: BenchSetting = BenchSetting(), methods: list[Method] | None = None,
              labels: torch.Tensor | None = None, classifier=None, reference_images: torch.Tensor | None = None,
              progress=None, decode=None, bar: bool | None = None) -> BenchResult:
    """Full compute and every method (default: `default_methods`) on identical seeds.

    ``progress(str)`` is called with one line per method and for full compute, each with the seconds
    the result keeps; the speedups come with the result only, as full compute is timed again at the
    end and the faster of its two timings is their reference. ``decode`` turns a
    latent model's samples into images (e.g. `Pipeline.decode`), inside the timing, before any metric.
    ``bar``: a progress bar on stderr over every sampler step of the run (`bench_steps`; None: only on a terminal).
    """
    if methods is None:
        methods = default_methods(model.config.depth, setting.calls, guided=setting.cfg_scale != 1.0)
    n = setting.num_samples if labels is None else len(labels)
    with RunBar(bench_steps(setting, n, len(methods)), "bench", bar) as run_bar:
        return _run_bench(model, process, setting, methods, labels, classifier, reference_images,
                          run_bar.above(progress or (lambda line: None)), decode, run_bar)


def _run_bench(model, process, setting, methods, labels, classifier, reference_images, say, decode, bar) -> BenchResult:
    bench = Bench(model, process=process, setting=setting, labels=labels, classifier=classifier,
                  reference_images=reference_images, decode=decode, bar=bar)
    say("full compute: sampled (timed again after the methods; the faster timing is the reference)")
    for m in methods:
        row = bench.measure(m)
        if row is not None:
            say(f"{m.label}: {row['seconds']:.2f} s, MACs {row['macs_speedup']:.2f}x, PSNR {row['psnr']:.1f} dB")
    result = bench.finish()
    say(f"full compute: {bench.base_row['seconds']:.2f} s")
    return result


# ----------------------------------------------------------------------------- reports

COLUMNS = [  # key, header, format of the value (fractions shown in %, bytes in MiB)
    ("method", "method", "{}"), ("speedup", "speedup", "{:.2f}x"), ("macs_speedup", "MACs ratio", "{:.2f}x"),
    ("psnr", "PSNR dB", "{:.1f}"), ("ssim", "SSIM", "{:.3f}"), ("accuracy", "acc %", "{:.1f}"),
    ("agreement", "agree %", "{:.1f}"), ("fd", "FD", "{:.2f}"), ("cache_bytes", "cache MiB", "{:.2f}"),
    ("seconds", "seconds", "{:.2f}"),
]
SCALE = {"accuracy": 100.0, "agreement": 100.0, "cache_bytes": 1.0 / 2**20}


def markdown_table(result: BenchResult, columns=COLUMNS, scale=SCALE) -> str:
    """The rows as a Markdown table (columns without values are left out)."""
    cols = [c for c in columns if any(r.get(c[0]) is not None for r in result.rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in result.rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("" if v is None else fmt.format(v * scale[key] if key in scale else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: BenchResult, path: str | Path) -> bool:
    """Speedup versus PSNR, one colour per family; False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = sorted({r["family"] for r in result.rows})
    for fam in families:
        rows = [r for r in result.rows if r["family"] == fam]
        ax.scatter([min(r["psnr"], PLOT_PSNR_MAX) for r in rows], [r["speedup"] for r in rows], label=fam)
    ax.axvline(30.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"PSNR vs full compute (dB; {PLOT_PSNR_MAX:g} and above drawn at {PLOT_PSNR_MAX:g})")
    ax.set_ylabel("wall-clock speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(result: BenchResult, out_dir: str | Path, command: str | None = None, table=markdown_table,
                 plot=plot) -> dict:
    """Write bench.json, bench.md and (with matplotlib) bench.png into ``out_dir``; return the paths.

    A new folder, an empty one or one of an earlier benchmark is replaced as a whole
    (`ditkit.io.atomic.atomic_dir`); into a folder holding other files the three are moved one by one,
    each atomically, and nothing else there is touched.
    ``table(result) -> str`` and ``plot(result, path) -> bool`` default to the acceleration ones."""
    import os
    import shutil
    import tempfile

    from ..io.atomic import atomic_dir, temp_prefix, tidy_dir
    from ..io.outputs import bench_folder

    out = Path(out_dir)
    data = result.to_dict()
    if command:
        data["command"] = command
    if not out.exists() or bench_folder(out) or (out.is_dir() and not any(out.iterdir())):
        with atomic_dir(out) as tmp:
            paths = _write_files(result, tmp, data, command, table, plot)
    else:
        tidy_dir(out)
        staged = Path(tempfile.mkdtemp(prefix=temp_prefix(out / "bench.json"), suffix=".tmp", dir=out))
        try:
            paths = _write_files(result, staged, data, command, table, plot)
            for p in paths.values():
                os.replace(p, out / Path(p).name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return {k: str(out / Path(v).name) for k, v in paths.items()}


def _write_files(result: BenchResult, out: Path, data: dict, command: str | None, table, plot) -> dict:
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    s = result.setting
    timed = s.get("timing_samples")
    header = (f"{s['num_samples']} samples, {s['sampler']} {s['steps']} steps, cfg {s['cfg_scale']}, seed {s['seed']}"
              + (f"; times of the first {timed} samples" if timed and timed < s["num_samples"] else "")
              + (f"\n\n`{command}`" if command else ""))
    paths["markdown"].write_text(header + "\n\n" + table(result) + "".join(f"\n{n}" for n in result.notes))
    if plot(result, out / "bench.png"):
        paths["png"] = out / "bench.png"
    return {k: str(v) for k, v in paths.items()}
