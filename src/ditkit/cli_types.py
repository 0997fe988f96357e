"""What every `ditkit` subcommand shares: argparse value types, `UserError`, `--device` and `--threads`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# ----------------------------------------------------------------------------- argparse value types
# Every numeric option is one of these: checked for type, finiteness and range where it is read, so a bad
# value is one argparse line before any model loads. The upper bounds lie far above any sensible request
# and below what one option alone would need more than a machine for; ``--help`` shows each option's range
# (`accepts`), and a value outside it names the range in its error.

MAX_SEED = 2**32 - 1  # seeds: numpy's and torch's generators both take 0..2**32-1
MAX_SAMPLER_STEPS = 10_000  # sampler steps (and asynchronous-schedule offsets in steps)
MAX_TRAIN_STEPS = 10**9  # optimizer steps of training, search and fine-tuning
MAX_SAMPLES = 100_000  # samples, clips, reference images, calibration samples of one command
MAX_PER_CLASS = 10_000  # --n-per-class
MAX_BATCH = 65_536  # samples per model batch
MAX_FRAMES = 4_096  # frames of one clip
MAX_UPSCALE = 64  # nearest-neighbour upscaling of a saved image or clip
MAX_IMAGE_SIZE = 4_096  # pixels on an image side
MAX_THREADS = 1_024  # torch CPU threads
MAX_GUIDANCE = 100.0  # guidance scales and loss weights
MAX_SHIFT = 100.0  # flow timestep shift (and its inverse: the lower bound is 1 / MAX_SHIFT)
MAX_MINUTES = 10**7  # time budgets in minutes (about 19 years)
MAX_COUNT = 10**6  # other counts (inputs, layers, blocks, heads, shard sizes)


def _typed(name: str, parse: Callable[[str], object], accepts: str) -> Callable[[str], object]:
    parse.__name__ = name  # argparse names a type by its function's name
    parse.accepts = accepts  # what --help says the option takes
    return parse


def accepts(type_) -> str | None:
    """The range an argparse type of this module accepts, as ``--help`` shows it (None for other types)."""
    return getattr(type_, "accepts", None)


def int_in(lo: int, hi: int, expected: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi`` (``expected`` words the error, e.g. "a positive integer")."""
    words = expected or f"an integer in {lo:,}..{hi:,}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected {words}, got {v}")
        return v

    return _typed(f"int_{lo}_{hi}", parse, f"{lo:,}..{hi:,}")


def positive(hi: int) -> Callable[[str], int]:
    """An integer in ``1..hi``."""
    return int_in(1, hi, f"a positive integer (at most {hi:,})")


def nonneg(hi: int) -> Callable[[str], int]:
    """An integer in ``0..hi``."""
    return int_in(0, hi, f"an integer >= 0 (at most {hi:,})")


def float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             expected: str | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number between ``lo`` and ``hi`` (closed ends unless ``lo_open``/``hi_open``);
    NaN and infinities are never accepted."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    words = expected or f"a finite number in {span}"

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {s!r}") from None
        inside = (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not math.isfinite(v) or not inside:
            raise argparse.ArgumentTypeError(f"expected {words}, got {s.strip()}")
        return v

    return _typed(f"float_{lo:g}_{hi:g}", parse, span)


def positive_float(hi: float) -> Callable[[str], float]:
    """A finite number in ``(0, hi]``."""
    return float_in(0.0, hi, lo_open=True)


def nonneg_float_upto(hi: float) -> Callable[[str], float]:
    """A finite number in ``[0, hi]``."""
    return float_in(0.0, hi)


def interval_in(hi: float, what: str = "") -> Callable[[str], tuple[float, float]]:
    """An argparse type: ``LO,HI`` with ``0 <= LO < HI <= hi``, both finite (``what`` names the unit)."""
    words = f"LO,HI with 0 <= LO < HI <= {hi:g}{f' ({what})' if what else ''}"

    def parse(s: str) -> tuple[float, float]:
        try:
            lo, up = (float(v) for v in s.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {s!r}") from None
        if not (math.isfinite(lo) and math.isfinite(up) and 0.0 <= lo < up <= hi):
            raise argparse.ArgumentTypeError(f"expected {words}, got {s!r}")
        return lo, up

    return _typed("interval", parse, f"0 <= LO < HI <= {hi:g}")


def int_list(lo: int, hi: int, what: str = "integers") -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers in ``lo..hi``, at least one."""
    one = int_in(lo, hi)

    def parse(s: str) -> list[int]:
        parts = [p.strip() for p in s.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} in {lo:,}..{hi:,}, got {s!r}")
        return [one(p) for p in parts]

    return _typed("int_list", parse, f"{lo:,}..{hi:,} each")


def power_of_two_or_zero(hi: int) -> Callable[[str], int]:
    """An argparse type: 0 or a power of two in ``2..hi``."""
    words = f"0 or a power of two in 2..{hi:,}"

    def parse(s: str) -> int:
        v = int_in(0, hi, words)(s)
        if v == 1 or v & (v - 1):
            raise argparse.ArgumentTypeError(f"expected {words}, got {v}")
        return v

    return _typed("power_of_two", parse, f"0 or a power of two up to {hi:,}")


def text(s: str) -> str:
    """An argparse type for names and paths: a non-empty string without NUL bytes."""
    if not s.strip() or "\0" in s:
        raise argparse.ArgumentTypeError(f"expected a non-empty name or path, got {s!r}")
    return s


positive_int = positive(2**31 - 1)  # the generic positive count of callers that check their own bound
nonneg_int = nonneg(2**31 - 1)
seed = int_in(0, MAX_SEED, "a seed in 0..4,294,967,295")
threads_arg = positive(MAX_THREADS)
sampler_steps = positive(MAX_SAMPLER_STEPS)
train_steps = positive(MAX_TRAIN_STEPS)
samples = positive(MAX_SAMPLES)
batch_size = positive(MAX_BATCH)
guidance = nonneg_float_upto(MAX_GUIDANCE)
shift = float_in(1 / MAX_SHIFT, MAX_SHIFT)
minutes = positive_float(MAX_MINUTES)
learning_rate = positive_float(1.0)
unit_float = float_in(0.0, 1.0, hi_open=True)  # a number in [0, 1)
probability = float_in(0.0, 1.0)  # a number in [0, 1]
nonneg_float = nonneg_float_upto(MAX_GUIDANCE)
finite = float_in(-1e6, 1e6, expected="a finite number")  # an option whose range its command checks
interval = interval_in(1000.0, "network time")  # --guidance-interval


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def device(args) -> str:
    """--device, checked: "cpu", "cuda" or "cuda:N" where a GPU is there."""
    import torch

    name = getattr(args, "device", None) or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be cpu or cuda[:N], got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda[:N], got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this torch build sees no CUDA GPU")
    return name


def threads(args) -> None:
    """--threads: torch's CPU thread count, when given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def load_image_model(model: str | None, device: str = "cpu"):
    """The image pipeline of the model folder ``model`` (default: the bundled shapes model)."""
    from .assets import default_model_dir
    from .pipelines import load_pipeline

    return load_pipeline(model or default_model_dir(), device=device)


def in_assets(path) -> bool:
    """Whether ``path`` lies in the bundled assets folder (which no command writes into by default)."""
    from pathlib import Path

    from .assets import assets_dir

    try:
        Path(path).resolve().relative_to(assets_dir().resolve())
    except ValueError:
        return False
    return True


def new_output(path, overwrite: bool, *, inputs=(), ditkit_wrote=None, ask: bool = False, flag: str = "--out",
               folder: bool | None = None):
    """``path`` as a `Path` once `ditkit.io.outputs.claim`'s rules allow writing it (never an input, never an
    existing output ditkit did not write unless ``overwrite``; ``ask``: every existing one needs ``overwrite``),
    else `UserError`."""
    from .io.outputs import OutputError, claim

    try:
        return claim(path, overwrite=overwrite, inputs=inputs, ditkit_wrote=ditkit_wrote, ask=ask, flag=flag,
                     folder=folder)
    except OutputError as e:
        raise UserError(str(e)) from None
