"""OpenWebText: a tar (``openwebtext.tar.xz``) of ``.xz`` archives, each an xz-compressed tar of ``.txt``
documents; also a folder of those ``.xz`` archives (the outer tar unpacked) or of plain ``.txt`` files.

Archives are streamed, never extracted. Members are still checked as an extractor would (Python's
``tarfile.data_filter``, plus: no links at all), so a crafted archive is refused rather than trusted.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
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
    inside_folder,
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


_MAGIC = ((b"\xfd7zXZ\x00", lzma.open), (b"\x1f\x8b", gzip.open), (b"BZh", bz2.open))


@contextlib.contextmanager
def _open_tar(fileobj: IO[bytes] | None, where: str, name: str | None = None) -> Iterator[tarfile.TarFile]:
    """A tar stream over ``fileobj`` (or the file ``name``), decompressed by a bounded reader.

    tarfile's own ``r|*`` decompresses each 10 KB block of input whole: on a bomb one block becomes tens of
    megabytes at once, and skipping a member re-copies that buffer per block (memory and time explode). The
    ``lzma``/``gzip``/``bz2`` file readers decompress at most what is asked for.
    """
    with contextlib.ExitStack() as stack:
        raw = fileobj if fileobj is not None else stack.enter_context(open(name, "rb"))  # noqa: SIM115
        head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
        opener = next((op for magic, op in _MAGIC if head.startswith(magic)), None)
        stream = stack.enter_context(opener(raw, "rb")) if opener else raw
        try:
            tar = stack.enter_context(tarfile.open(fileobj=stream, mode="r|"))
        except tarfile.ReadError as exc:
            raise UserError(f"{where}: not a readable tar archive ({exc})") from None
        yield tar


def _iter_tar(fileobj: IO[bytes] | None, where: str, policy: BadInputPolicy, name: str | None = None):
    """Yield ``(member, fileobj)`` for each regular member of a tar stream (any compression)."""
    with _open_tar(fileobj, where, name) as tar:
        for member in tar:
            reason = _check_member(member, where)
            if reason:
                policy.bad(reason)
                continue
            if not member.isfile():
                continue
            if member.size > policy.max_doc_bytes and not member.name.endswith(".xz"):
                policy.too_big(f"{where}/{member.name}")  # skipped by the tar stream in blocks, never held
                continue
            yield member, tar.extractfile(member)


def _xz_documents(fileobj: IO[bytes] | None, where: str, policy: BadInputPolicy, name: str | None = None):
    for member, fh in _iter_tar(fileobj, where, policy, name):
        if not member.name.endswith(".txt"):
            continue
        yield from _one_document(policy.read_capped(fh, f"{where}/{member.name}"), f"{where}/{member.name}", policy)


def _one_document(data: bytes | None, where: str, policy: BadInputPolicy) -> Iterator[Document]:
    if data is None:  # over --max-doc-bytes, already reported
        return
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
            archives = inside_folder(path, sorted(path.rglob("*.xz")), policy)
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
                yield from _one_document(policy.read_capped(fh, where), where, policy)
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
        with _open_tar(None, str(path), str(path)) as tar:
            for member in tar:
                if member.isfile():
                    return "inner" if member.name.endswith(".txt") and path.suffix == ".xz" else "outer"
    except tarfile.ReadError as exc:
        raise UserError(f"{path}: not a readable tar archive ({exc})") from None
    except DECOMPRESS_ERRORS as exc:
        raise decompress_error(path, exc) from None
    return "outer"
