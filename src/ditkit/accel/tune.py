"""Tuning to a quality budget: the fastest acceleration setting that keeps e.g. ``psnr>=30``.

A budget is one or more constraints on the metrics of ``bench.py`` — ``psnr``, ``ssim``,
``accuracy``, ``agreement`` (fractions; a ``%`` suffix divides by 100), ``fd``,
``accuracy_drop`` (points), ``fd_increase`` (%), ``speedup``, ``macs_speedup`` — joined by commas
or "and": ``"psnr>=30"``, ``"accuracy_drop<=2, fd_increase<=10"``.

The search runs on *calibration* seeds: each method family is a ladder of settings ordered
from conservative to aggressive (``bench.default_methods``), climbed until a rung breaks the quality
part of the budget (quality is assumed to fall monotonically along a ladder, which saves most runs). The
settings that met the budget are then confirmed, fastest first, on *held-out* seeds (another seed,
other noise), and the first that meets the budget there too is returned. When none does, or the best
one is hardly faster than full compute (few-step sampling leaves little to reuse), the result says so.
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass, field, replace

from ..io.progress import RunBar
from .bench import Bench, BenchSetting, Method, bench_steps, default_methods, measure_steps

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
BUDGET_METRICS = ("psnr", "ssim", "accuracy", "agreement", "fd", "accuracy_drop", "fd_increase", "speedup",
                  "macs_speedup")
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(%|db)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    metric: str
    op: str
    value: float

    def ok(self, row: dict) -> bool:
        v = row.get(self.metric)
        return v is not None and OPS[self.op](v, self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_budget(text: str) -> list[Budget]:
    """``"psnr>=30, accuracy_drop<=2"`` -> [Budget('psnr', '>=', 30.0), Budget('accuracy_drop', '<=', 2.0)]."""
    parts = [p for p in re.split(r",|\band\b", text) if p.strip()]
    if not parts:
        raise ValueError("empty budget; write e.g. 'psnr>=30'")
    budgets = []
    for part in parts:
        m = _CONSTRAINT.match(part)
        if not m:
            raise ValueError(f"cannot read the budget {part.strip()!r}; write METRIC>=VALUE, e.g. 'psnr>=30'")
        metric, op, value, unit = m.group(1).lower(), m.group(2), float(m.group(3)), (m.group(4) or "").lower()
        if metric not in BUDGET_METRICS:
            raise ValueError(f"unknown budget metric {metric!r}; choose one of {', '.join(BUDGET_METRICS)}")
        if unit == "%" and metric in ("accuracy", "agreement", "ssim"):
            value /= 100.0
        budgets.append(Budget(metric, op, value))
    return budgets


def meets(row: dict, budgets: list[Budget]) -> bool:
    return all(b.ok(row) for b in budgets)


def ladders(methods: list[Method]) -> list[list[Method]]:
    """Group methods by family, keeping their order (conservative to aggressive)."""
    groups: dict[str, list[Method]] = {}
    for m in methods:
        groups.setdefault(m.family, []).append(m)
    return list(groups.values())


@dataclass
class TuneResult:
    budget: str
    chosen: dict | None  # label, settings, configs, calibration and held-out rows
    message: str
    calibration: list[dict] = field(default_factory=list)  # every row measured on the calibration seeds
    holdout: list[dict] = field(default_factory=list)  # rows measured on the held-out seeds

    def to_dict(self) -> dict:
        return asdict(self)


def _skip(bench: Bench, measurements: int) -> None:
    """Lower the bar's total by measurements that will not be made."""
    if bench.bar is not None and measurements > 0:
        bench.bar.skip(measurements * measure_steps(bench.setting, len(bench.labels)))


def _config_dict(method: Method) -> list[dict]:
    return [{"type": type(c).__name__, **asdict(c)} for c in method.configs] + (
        [{"type": "cfg_reuse", "every": method.cfg_every}] if method.cfg_every > 1 else [])


def tune(model, budget: str | list[Budget], *, process, setting: BenchSetting | None = None,
         holdout_seed: int | None = None, holdout_samples: int | None = None, methods: list[Method] | None = None,
         classifier=None, reference_images=None, max_confirm: int = 3, min_speedup: float = 1.1,
         progress=None, decode=None, bar: bool | None = None) -> TuneResult:
    """The fastest setting meeting ``budget`` on ``setting``'s seeds, confirmed on held-out seeds.

    ``holdout_seed`` defaults to ``setting.seed + 10_000``; ``holdout_samples`` to the calibration count.
    ``min_speedup``: below this wall-clock speedup a setting is reported as not worth using.
    ``decode``: a latent model's samples -> images (`Pipeline.decode`), applied before every metric.
    ``bar``: a progress bar on stderr over every sampler step (None: only on a terminal); its total is that of
    every method on both seed sets, lowered as ladders stop early and settings are not confirmed.
    """
    setting = setting or BenchSetting()
    budgets = parse_budget(budget) if isinstance(budget, str) else list(budget)
    methods = methods if methods is not None else default_methods(model.config.depth, setting.calls,
                                                                  guided=setting.cfg_scale != 1.0)
    held = replace(setting, seed=setting.seed + 10_000 if holdout_seed is None else holdout_seed,
                   num_samples=holdout_samples or setting.num_samples)
    confirms = min(max_confirm, len(methods))
    total = bench_steps(setting, setting.num_samples, len(methods)) + bench_steps(held, held.num_samples, confirms)
    with RunBar(total, "tune", bar) as run_bar:
        return _tune(model, budgets, process, setting, held, methods, classifier, reference_images, max_confirm,
                     min_speedup, run_bar.above(progress or (lambda _line: None)), decode, run_bar)


def _tune(model, budgets, process, setting, held, methods, classifier, reference_images, max_confirm, min_speedup, say,
          decode, bar) -> TuneResult:
    text = ", ".join(str(b) for b in budgets)
    calib = Bench(model, process=process, setting=setting, classifier=classifier, reference_images=reference_images,
                  decode=decode, bar=bar)
    quality = [b for b in budgets if b.metric not in ("speedup", "macs_speedup")]
    passed: list[tuple[dict, Method]] = []
    for ladder in ladders(methods):
        for i, m in enumerate(ladder):
            row = calib.measure(m)
            if row is None:
                _skip(calib, len(ladder) - i - 1)
                break
            ok = meets(row, budgets)
            say(f"calibration {m.label}: {row['speedup']:.2f}x, PSNR {row['psnr']:.1f} dB -> {'ok' if ok else 'over budget'}")
            if ok:
                passed.append((row, m))
            elif not meets(row, quality):
                _skip(calib, len(ladder) - i - 1)
                break  # quality only falls further along a ladder
    calibration = calib.finish().rows
    few = f" ({setting.calls} model calls per sample leave little to reuse)" if setting.calls < 12 else ""
    confirms = min(max_confirm, len(methods))
    if not passed:
        bar.skip(bench_steps(held, held.num_samples, confirms))
        return TuneResult(text, None, f"no setting meets {text} on the calibration seeds{few}", calibration)

    hold = Bench(model, process=process, setting=held, classifier=classifier, reference_images=reference_images,
                 decode=decode, bar=bar)
    passed.sort(key=lambda rm: rm[0]["speedup"], reverse=True)
    tries = passed[:max_confirm]
    _skip(hold, confirms - len(tries))
    for i, (row, m) in enumerate(tries):
        hrow = hold.measure(m)
        ok = hrow is not None and meets(hrow, budgets)
        say(f"held-out {m.label}: {hrow['speedup']:.2f}x, PSNR {hrow['psnr']:.1f} dB -> {'ok' if ok else 'over budget'}")
        if ok:
            _skip(hold, len(tries) - i - 1)
            holdout = hold.finish().rows
            hrow = next(r for r in holdout if r["method"] == m.label)
            chosen = {"method": m.label, "settings": m.describe(), "configs": _config_dict(m),
                      "calibration": row, "holdout": hrow}
            if hrow["speedup"] < min_speedup:
                msg = (f"{m.label} meets {text} but is only {hrow['speedup']:.2f}x faster than full compute: "
                       f"acceleration does not help much here{few}")
            else:
                msg = f"{m.label}: {hrow['speedup']:.2f}x faster on held-out seeds, meeting {text}"
            return TuneResult(text, chosen, msg, calibration, holdout)
    return TuneResult(text, None, f"settings meeting {text} on calibration seeds failed on held-out seeds{few}",
                      calibration, hold.finish().rows)
