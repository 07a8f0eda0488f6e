"""OpenWebText: a tar (``openwebtext.tar.xz``) of ``.xz`` archives, each an xz-compressed tar of ``.txt``
documents; also a folder of those ``.xz`` archives (the outer tar unpacked) or of plain ``.txt`` files.

Archives are streamed, never extracted. Members are still checked as an extractor would (Python's
``tarfile.data_filter``, plus: no links at all), so a crafted archive is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from data_tools.errors import UserError
from data_tools.sources import (
    DECOMPRESS_ERRORS,
    BadInputPolicy,
    Document,
    decompress_error,
    document_from_bytes,
)
from data_tools.sources.text import read_text

_NOWHERE = "/nonexistent-extract-root"


def _check_member(member: tarfile.TarInfo, where: str) -> str | None:
    """Return why ``member`` is refused (path traversal, absolute path, link, device), or None."""
    if member.issym() or member.islnk():
        return f"{where}: refusing link member {member.name!r} -> {member.linkname!r}"
    try:
        tarfile.data_filter(member, _NOWHERE)
    except tarfile.FilterError as exc:
        return f"{where}: refusing unsafe member {member.name!r} ({type(exc).__name__}: {exc})"
    if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts:
        return f"{where}: refusing member {member.name!r} whose path escapes the archive"
    return None


def _iter_tar(fileobj: IO[bytes] | None, where: str, policy: BadInputPolicy, name: str | None = None):
    """Yield ``(member, fileobj)`` for each regular member of a tar stream (any compression)."""
    try:
        tar = tarfile.open(name=name, fileobj=fileobj, mode="r|*")  # noqa: SIM115 - closed by the with below
    except tarfile.ReadError as exc:
        raise UserError(f"{where}: not a readable tar archive ({exc})") from None
    with tar:
        for member in tar:
            reason = _check_member(member, where)
            if reason:
                policy.bad(reason)
                continue
            if not member.isfile():
                continue
            yield member, tar.extractfile(member)


def _xz_documents(fileobj: IO[bytes] | None, where: str, policy: BadInputPolicy, name: str | None = None):
    for member, fh in _iter_tar(fileobj, where, policy, name):
        if not member.name.endswith(".txt"):
            continue
        yield from _one_document(fh.read(), f"{where}/{member.name}", policy)


def _one_document(data: bytes, where: str, policy: BadInputPolicy) -> Iterator[Document]:
    doc = document_from_bytes(data, where, where, policy)
    if doc is not None:
        yield doc


def read_owt(path: Path, policy: BadInputPolicy | None = None, dedup: bool = False) -> Iterator[Document]:
    """Yield the documents of an OpenWebText tar, a folder of its ``.xz`` archives, or a folder of ``.txt``.

    Args:
        path: the archive or folder.
        policy: bad-member handling; unsafe members, non-UTF-8 documents are "bad".
        dedup: drop documents whose text exactly repeats an earlier one (16-byte hashes kept in memory).

    Raises:
        UserError: truncated/corrupt archive (always), bad members (unless skipped).
    """
    policy = policy or BadInputPolicy()
    seen: set[bytes] = set()
    for doc in _read(path, policy):
        if dedup:
            h = hashlib.blake2b(doc.text.encode("utf-8"), digest_size=16).digest()
            if h in seen:
                continue
            seen.add(h)
        yield doc


def _read(path: Path, policy: BadInputPolicy) -> Iterator[Document]:
    try:
        if path.is_dir():
            archives = sorted(p for p in path.rglob("*.xz") if p.is_file())
            if not archives:
                yield from read_text(path, policy)
                return
            for arc in archives:
                current = arc
                yield from _xz_documents(None, str(arc), policy, name=str(arc))
            return
        current = path
        outer = list_kind(path)
        if outer == "inner":  # a single urlsf_subset*.xz
            yield from _xz_documents(None, str(path), policy, name=str(path))
            return
        for member, fh in _iter_tar(None, str(path), policy, name=str(path)):
            where = f"{path}/{member.name}"
            current = Path(where)
            if member.name.endswith(".xz"):
                yield from _xz_documents(fh, where, policy)
            elif member.name.endswith(".txt"):
                yield from _one_document(fh.read(), where, policy)
    except UserError:
        raise
    except tarfile.ReadError as exc:
        raise UserError(f"{current}: corrupt or truncated archive ({exc})") from None
    except DECOMPRESS_ERRORS as exc:
        raise decompress_error(current, exc) from None


def list_kind(path: Path) -> str:
    """``"outer"`` for the OpenWebText tar (holding ``.xz`` or ``.txt`` members), ``"inner"`` for one subset
    archive (a ``.xz`` tar holding ``.txt``). Decided by the first member."""
    try:
        with tarfile.open(str(path), mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    return "inner" if member.name.endswith(".txt") and path.suffix == ".xz" else "outer"
    except tarfile.ReadError as exc:
        raise UserError(f"{path}: not a readable tar archive ({exc})") from None
    except DECOMPRESS_ERRORS as exc:
        raise decompress_error(path, exc) from None
    return "outer"
