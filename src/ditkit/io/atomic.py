"""Atomic writes and swaps: a path holds the complete old or the complete new output, at every instant.

* ``atomic_write(path)`` yields a temporary file beside ``path``; when the block succeeds it is fsynced
  and ``os.replace``d onto ``path`` (one atomic rename: an old file stays in place until then).
* ``atomic_dir(path)`` does the same for a folder. A folder cannot be renamed over a non-empty one, so
  an old folder is swapped with the new one by ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+, one atomic
  step), then deleted. Where the exchange is unsupported (another OS, a file system without it) the
  old folder is renamed to ``.NAME.ditkit-old-<pid>`` and the new one renamed into place: between
  those two renames ``path`` is missing, and `tidy` restores the old copy on the next start.
* ``tidy(path)`` / ``tidy_dir(folder)`` clean what a killed writer left: temporary files and folders
  ``.NAME.<pid>.<random>.tmp`` of processes no longer running, and ``.NAME.ditkit-old-<pid>`` copies
  (put back when ``NAME`` is missing, deleted otherwise). Every writer here tidies its own path first.

Temporary names carry the writer's process id so that a second writer never deletes a live one's
files. New files and folders get the usual permissions (0666 / 0777 less the umask).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp names of older ditkit versions
_OLD = re.compile(r"^\.(?P<name>.+)\.ditkit-old-(?P<pid>\d+)$")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def usual_mode(directory: bool = False) -> int:
    """The permissions ``open()`` / ``mkdir()`` would give a new file (folder): 0666 (0777) less the umask
    (``mkstemp``/``mkdtemp`` make theirs 0600/0700, private to the user, whatever the umask)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _usual_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the usual permissions (writers such as safetensors' make
    their files 0600); executable files stay executable."""
    file_mode, dir_mode = usual_mode(), usual_mode(directory=True)
    os.chmod(folder, dir_mode)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), dir_mode)
        for f in files:
            p = os.path.join(root, f)
            executable = os.stat(p).st_mode & 0o100
            os.chmod(p, dir_mode if executable else file_mode)


def temp_prefix(path: Path) -> str:
    """``.NAME.<pid>.``: the start of this process's temporary names for ``path`` (they end in ``.tmp``)."""
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _leftovers(folder: Path, name: str | None = None) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(temporary entries, old copies) of dead writers in ``folder``, as (NAME, path) pairs."""
    tmps, olds = [], []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return tmps, olds
    for e in entries:
        if not e.name.startswith("."):
            continue
        m = _OLD.match(e.name)
        if m:
            if (name is None or m["name"] == name) and not _alive(int(m["pid"])):
                olds.append((m["name"], folder / e.name))
            continue
        m = _TMP.match(e.name)
        pid = int(m["pid"]) if m else None
        m = m or _LEGACY_TMP.match(e.name)
        if m and (name is None or m["name"] == name) and not _alive(pid):
            tmps.append((m["name"], folder / e.name))
    return tmps, olds


def tidy_dir(folder: str | os.PathLike, name: str | None = None) -> int:
    """Clean the leftovers of killed writers in ``folder`` (only those of ``NAME`` when given): put a
    ``.NAME.ditkit-old-<pid>`` copy back where ``NAME`` is missing, remove the rest. Returns how many
    entries it removed or restored."""
    folder = Path(folder)
    tmps, olds = _leftovers(folder, name)
    done = 0
    for n, old in sorted(olds, key=lambda t: t[1].stat().st_mtime_ns if t[1].exists() else 0, reverse=True):
        target = folder / n
        if not os.path.lexists(target):
            os.rename(old, target)  # the swap was cut between its two renames: the old output comes back
        else:
            _remove(old)
        done += 1
    for _, p in tmps:
        _remove(p)
        done += 1
    return done


def tidy(path: str | os.PathLike) -> int:
    """`tidy_dir` for the one output ``path``."""
    path = Path(path)
    return tidy_dir(path.parent, path.name)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the entries ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot (nothing changed then)."""
    global _libc
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into(new: Path, path: Path) -> None:
    """Put the complete ``new`` (beside ``path``) at ``path``; an old entry there is removed only after."""
    if not os.path.lexists(path):
        os.rename(new, path)
    elif exchange(new, path):
        _remove(new)  # now the old one; a kill while deleting leaves a dead temp name, which tidy removes
    else:
        old = path.with_name(f".{path.name}.ditkit-old-{os.getpid()}")
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            if not os.path.lexists(path):
                os.rename(old, path)
            raise
        _remove(old)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """Yield a temp file path next to ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, usual_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temp directory; on success it takes the place of ``path`` (`swap_into`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _usual_permissions(tmp)
        swap_into(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a folder without ever leaving half of it under its own name: renamed to a temporary
    name first (which `tidy` removes should a kill cut the deletion short), then removed."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    gone = path.with_name(f"{temp_prefix(path)}retired.tmp")
    os.rename(path, gone)
    _remove(gone)
