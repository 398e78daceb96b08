"""Atomic file writes: a temporary file in the target folder, then a rename over the target.

An interrupted write (crash, Ctrl-C, full disk) never leaves a truncated checkpoint or JSON behind: the
target is either the complete new file or untouched. The file gets the permissions any other new file
of the user would get (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``. A folder or file
that cannot be written raises :class:`~fcpose.errors.OutputError` with one line naming the path."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import OutputError, one_line

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (briefly the strictest mask, never a looser one)
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(exc, blank=type(exc).__name__)


def missing_dirs(path: str | Path) -> list[Path]:
    """The folders that creating the folder ``path`` would make: ``path`` and each missing parent, deepest
    first (empty when ``path`` exists)."""
    path = Path(path).absolute()
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_dirs(dirs: Iterable[str | Path]) -> None:
    """Remove each folder of ``dirs`` (deepest first, as :func:`missing_dirs` lists them) that is empty;
    a folder holding anything, or already gone, is left as it is. For undoing the folders a failed
    command created, and only those."""
    for folder in dirs:
        try:
            os.rmdir(folder)
        except OSError:
            pass


@contextmanager
def undo_new_dirs(folder: str | Path) -> Iterator[list[Path]]:
    """Around a block that creates ``folder`` (and its missing parents) and writes into it: if the block
    raises (an error, Ctrl-C), the folders that were missing before it are removed again if they are still
    empty, so a failed command leaves no empty folder behind. Yields those folders (deepest first)."""
    new = missing_dirs(folder)
    try:
        yield new
    except BaseException:
        remove_empty_dirs(new)
        raise


def prepare_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) if needed and check it is a writable folder; one-line
    :class:`OutputError` otherwise (a file in the way, no permission, read-only file system); a failure
    removes the folders this call made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    with undo_new_dirs(path):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {what} {path}: {_reason(exc)}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {path} is not writable (permission denied)")
    return path


@contextmanager
def output_dir(path: str | Path, what: str = "output folder") -> Iterator[Path]:
    """:func:`prepare_output_dir` for the length of a ``with`` block: when the block raises (an error,
    Ctrl-C) the folders this created are removed again if they are still empty, so a failed command
    leaves no empty output folder behind. A folder that existed before is never removed."""
    with undo_new_dirs(path):
        yield prepare_output_dir(path, what)


def _cannot_write_in(folder: Path) -> str | None:
    """Why no file can be created in the existing folder ``folder`` (None: one can). Asks the permissions,
    then tries: a hidden temporary file is created and removed at once, which also catches what
    ``os.access`` does not see (root on a folder that refuses new entries, some network file systems)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, probe = tempfile.mkstemp(prefix=".fcpose-probe.", dir=folder)
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check, leaving nothing behind, that ``path`` is a writable folder or can be created as one:
    one-line :class:`OutputError` otherwise. Lets a command fail before its slow work starts."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{what} {path} is a file, not a folder")
        reason = _cannot_write_in(path)
        if reason:
            raise OutputError(f"{what} {path} is not writable ({reason})")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {what} {path}: {parent} is a file, not a folder")
    reason = _cannot_write_in(parent)
    if reason:
        raise OutputError(f"cannot create {what} {path}: {parent} is not writable ({reason})")
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check, without creating anything, that ``path`` can be written as a file (not a folder; its folder
    exists and is writable or can be created); one-line :class:`OutputError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is a folder")
    try:
        check_output_dir(path.parent, "folder")
    except OutputError as exc:
        raise OutputError(f"cannot write {what} {path}: {exc}") from None
    return path


def atomic_file(path: str | Path, write: Callable[[str], None], what: str = "file") -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path``, then rename it over ``path``
    (any exception, Ctrl-C included, removes the temporary file and leaves ``path`` as it was)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is a folder")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {path.parent} is a file, not a folder")
    with undo_new_dirs(path.parent):  # a failed write leaves no empty folder it made
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder of {what} {path}: {_reason(exc)}") from None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {path}: {_reason(exc)}") from None
        try:
            try:
                os.fchmod(fd, default_file_mode())  # mkstemp makes 0o600; give the user's usual mode
            finally:
                os.close(fd)
            write(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {path}: {_reason(exc)}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def atomic_save(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """``torch.save(obj, path)``, atomically."""

    def write(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk / I/O error as RuntimeError
            if "write" not in str(exc).lower():
                raise
            raise OSError(errno.EIO, one_line(exc)) from None

    return atomic_file(path, write, what)


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    return atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what)


def unique_output_path(out_dir: Path, source: str | Path, suffix: str, used: set[str]) -> Path:
    """``out_dir / (stem + suffix)`` for ``source``, numbered (``stem_1``, ``stem_2``...) past the names in
    ``used`` (which records the chosen one): outputs of same-named inputs never overwrite each other."""
    stem = Path(source).stem
    name, i = stem + suffix, 1
    while name in used:
        name = f"{stem}_{i}{suffix}"
        i += 1
    used.add(name)
    return Path(out_dir) / name
