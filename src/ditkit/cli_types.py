"""argparse value types shared by every `ditkit` subcommand."""

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
