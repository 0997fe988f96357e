"""Paths named inside a folder's own metadata, kept inside that folder.

A model folder's config.json names its autoencoder and text encoder, a training run's
``checkpoints/latest`` names its newest checkpoint, a latent cache's manifest names its shards.
Such a name is resolved against the folder that holds the metadata and nothing else (never the
working directory, never the assets directory), and it must stay inside that folder:

* a relative path: no absolute path, no ``..`` component, not empty;
* after resolving symlinks, the target still lies inside the (resolved) folder.

Paths the user gives on the command line are not metadata and are not confined.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from .checkpoint import CheckpointError


def confined_path(folder: str | Path, name, what: str, source: str | Path) -> Path:
    """``folder / name`` for a ``name`` read from ``source`` (the metadata file), refused with a
    CheckpointError naming ``what`` and ``source`` unless it stays inside ``folder``."""
    if not isinstance(name, str) or not name.strip():
        raise CheckpointError(f"{source}: {what} must be a relative path inside {folder}, got {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise CheckpointError(f"{source}: {what} must be a relative path inside {folder}, got the absolute path {name!r}")
    if ".." in posix.parts or ".." in windows.parts:
        raise CheckpointError(f"{source}: {what} must stay inside {folder}, got {name!r} (no '..')")
    root = Path(folder).resolve()
    target = (root / posix).resolve()
    if target != root and root not in target.parents:
        raise CheckpointError(f"{source}: {what} {name!r} leads outside {folder} (through a symlink)")
    return Path(folder) / posix


def read_pointer(pointer: str | Path, what: str) -> Path | None:
    """The folder a pointer file (e.g. a run's ``checkpoints/latest``) names, inside the pointer's own folder;
    None when there is no pointer; CheckpointError for a name that leads outside or an unreadable pointer."""
    pointer = Path(pointer)
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {pointer}: {e}") from None
    return confined_path(pointer.parent, name, what, pointer)
