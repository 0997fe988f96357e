"""Reading what a tqdm bar printed to stderr (shared by the progress tests)."""

from __future__ import annotations

import re


def bar_states(err: str) -> list[tuple[int, int]]:
    """The (done, total) states a tqdm bar printed, first to last."""
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+)", err)]


def bars(err: str) -> dict[str, list[tuple[int, int]]]:
    """The (done, total) states of each bar, by its description (the text before its colon), first to last."""
    found: dict[str, list[tuple[int, int]]] = {}
    for desc, a, b in re.findall(r"([A-Za-z][\w -]*?):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", err):
        found.setdefault(desc.strip(), []).append((int(a), int(b)))
    return found
