"""Atomic writes: write to a temporary file beside the target, fsync, then rename.

A killed job therefore never leaves a file under its final name that looks complete. Used by every writer
in the project (corpora, caches, configs, checkpoints' markers, metrics, exports).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from data_tools.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes 0600 files; the final file should get the permissions a plain open() would give it.
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(name)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_parent(path: str | os.PathLike) -> Path:
    """Create ``path``'s parent directory, or raise a ``UserError`` naming it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create output directory ({exc.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path.parent}: output directory is not writable")
    return path


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_output_file(path: str | os.PathLike) -> None:
    """UserError if ``path`` exists and is not a regular file: renaming a new file onto ``/dev/null`` (as root) or
    a FIFO would replace it, and a directory cannot take a file's place."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    for test, kind in _KINDS:
        if test(mode):
            raise UserError(f"{path}: is {kind}, not a regular file; refusing to replace it (choose a file path)")


def mount_point(path: Path) -> str:
    path = path.resolve()
    with contextlib.suppress(OSError):
        dev = path.stat().st_dev
        while path.parent != path and path.parent.stat().st_dev == dev:
            path = path.parent
    return str(path)


def write_error(path: str | os.PathLike, exc: OSError) -> UserError:
    """One line for a failed write of ``path``: a full disk names the file system (and frees nothing)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(path).parent if Path(path).parent.exists() else Path(".")
        return UserError(f"no space left on {mount_point(where)} while writing {path}; free space or write "
                         "elsewhere, then rerun")
    return UserError(f"{path}: cannot write ({exc.strerror or exc})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    Raises:
        UserError: ``path`` is a device, FIFO or directory; the disk filled up (naming it and ``path``).
    """
    check_output_file(path)
    path = ensure_parent(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise write_error(path, exc) from None
        raise


def remove_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left beside it (``.NAME.XXXXXXXX.tmp``, as
    ``atomic_path`` names them); returns them. Run before writing ``path`` again."""
    path = Path(path)
    pattern = re.compile(r"\." + re.escape(path.name) + r"\.[A-Za-z0-9_]{8}\.tmp")
    try:
        stale = [path.parent / e for e in os.listdir(path.parent) if pattern.fullmatch(e)]
    except OSError:
        return []
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


@contextlib.contextmanager
def remove_new_dirs_on_error(path: str | os.PathLike) -> Iterator[None]:
    """On an error in the block, remove the directories above ``path`` that did not exist before it and are
    still empty: a failed build or extract leaves no empty output directory behind."""
    new = []
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists():
        new.append(parent)
        parent = parent.parent
    try:
        yield
    except BaseException:
        for d in new:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` that only makes ``path`` appear, complete, when the block succeeds."""
    if "w" not in mode:
        raise ValueError("atomic_open is for writing")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` (a directory), else removed.

    An existing ``path`` is moved aside first and deleted only after the new one is in place, so a reader
    sees the old complete directory or the new complete one, never a mix.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path}: exists and is not a directory; refusing to replace it")
    path = ensure_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
