"""What every `ditkit` subcommand shares: argparse value types, `UserError`, `--device` and `--threads`."""

from __future__ import annotations

import argparse


def _int(s: str, ok, expected: str) -> int:
    """``int(s)`` when ``ok`` holds for it, else an argparse error naming what was ``expected``."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
    return v


def positive_int(s: str) -> int:
    return _int(s, lambda v: v > 0, "a positive integer")


def nonneg_int(s: str) -> int:
    return _int(s, lambda v: v >= 0, "an integer >= 0")


def _float(s: str, ok, expected: str) -> float:
    """``float(s)`` when ``ok`` holds for it, else an argparse error naming what was ``expected``."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
    return v


def unit_float(s: str) -> float:
    """A number in [0, 1)."""
    return _float(s, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def nonneg_float(s: str) -> float:
    """A finite number >= 0."""
    return _float(s, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0")


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def interval(s: str) -> tuple[float, float]:
    """``LO,HI`` in network time (0-1000)."""
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in network time (0-1000), got {s!r}") from None
    return lo, hi


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


def new_output(path, overwrite: bool):
    """``path`` as a `Path`, refused (`UserError`) when something is there already and ``overwrite`` is off."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists: give --overwrite to replace it, or another --out")
    return path
