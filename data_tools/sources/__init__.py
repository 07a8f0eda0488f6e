"""Document sources: one module per input kind, each yielding :class:`Document` in input order.

Nothing outside this package knows an input format. :func:`read_documents` picks the reader from the path:
``.jsonl``/``.json`` (optionally ``.gz``/``.bz2``/``.xz``) → JSON lines, ``.xml``/``.xml.bz2`` → MediaWiki
dump, ``.tar``/``.tar.*``/``.xz`` → OpenWebText archives, directory → ``.txt`` files (one document each)
or OpenWebText ``.xz`` archives, anything else → plain text (documents separated by blank lines).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from data_tools.errors import UserError, reading


@dataclass(frozen=True)
class Document:
    """One document: ``id`` says where it came from (page id, ``file:line``, archive member)."""

    id: str
    text: str
    title: str = ""


@dataclass
class BadInputPolicy:
    """What to do with a bad document: raise (default) or, with ``--skip-bad``, count it and go on.

    Attributes:
        skip: skip bad documents instead of stopping.
        skipped: how many were skipped.
        examples: the first few messages, for the summary.
    """

    skip: bool = False
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    max_doc_bytes: int = 0
    """Largest document (or JSONL/text line) read, in bytes; a bigger one is bad input, found while streaming so
    memory stays bounded on a decompression bomb. 0 = ``MAX_DOC_BYTES``."""

    def __post_init__(self) -> None:
        if self.max_doc_bytes < 0:
            raise UserError(f"--max-doc-bytes {self.max_doc_bytes}: expected a positive number of bytes")
        self.max_doc_bytes = self.max_doc_bytes or MAX_DOC_BYTES

    def too_big(self, where: str) -> None:
        """Report a document over ``max_doc_bytes`` (raises unless skipping)."""
        self.bad(f"{where}: document larger than --max-doc-bytes {self.max_doc_bytes:,} (a decompression bomb, or "
                 "not text); raise --max-doc-bytes if it is real")

    def read_capped(self, fh: IO[bytes], where: str) -> bytes | None:
        """Read a whole member/file, at most ``max_doc_bytes``; None (reported) if it is bigger."""
        data = fh.read(self.max_doc_bytes + 1)
        if len(data) > self.max_doc_bytes:
            del data
            self.too_big(where)
            return None
        return data

    def lines(self, fh: IO[bytes], where: str) -> Iterator[tuple[int, bytes | None]]:
        """``(line number, raw line)`` of a stream, each read with the cap: an over-long line is reported,
        skipped in bounded blocks, and yielded as None (so its document can be dropped)."""
        limit = self.max_doc_bytes
        lineno = 0
        while raw := fh.readline(limit + 1):
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                self.too_big(f"{where}:{lineno}")
                yield lineno, None
                continue
            yield lineno, raw

    def bad(self, message: str) -> None:
        """Report a bad document: raises ``UserError(message)`` unless skipping."""
        if not self.skip:
            raise UserError(message)
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(message)
            print(f"warning: skipped: {message}", file=sys.stderr)

    def summary(self) -> str:
        """One line for the end-of-run summary ("" when nothing was skipped)."""
        return f"skipped {self.skipped} bad document(s) (--skip-bad)" if self.skipped else ""


MAX_DOC_BYTES = 64 << 20
"""Default ``--max-doc-bytes``: far above any real article or web page, far below a machine's memory."""

COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing ``.gz``/``.bz2``/``.xz`` transparently."""
    with reading(path, "input file", "a file"):
        opener = COMPRESSED.get(path.suffix.lower())
        return opener(path, "rb") if opener else open(path, "rb")


DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


def decompress_error(path: Path, exc: BaseException) -> UserError:
    """A one-line error for a truncated or corrupt compressed/unreadable input."""
    if isinstance(exc, EOFError):
        what = "truncated (compressed stream ends early)"
    elif isinstance(exc, (lzma.LZMAError, zlib.error)) or "invalid data stream" in str(exc).lower():
        what = f"corrupt compressed data ({exc})"
    else:
        what = f"read error ({exc})"
    return UserError(f"{path}: {what}")


def _looks_like_mediawiki(path: Path) -> bool:
    """Sniff the first (decompressed) kilobytes for a MediaWiki export root element."""
    if path.suffix.lower() not in ("", ".bz2", ".gz", ".xz", ".txt", ".dump"):
        return False
    try:
        with open_binary(path) as fh:
            head = fh.read(4096)
    except (UserError, *DECOMPRESS_ERRORS):
        return False
    return b"<mediawiki" in head


def input_kind(path: Path) -> str:
    """Name the reader for ``path``: ``jsonl``, ``wiki``, ``owt`` or ``text``."""
    name = path.name.lower()
    stem = name
    for ext in (".gz", ".bz2", ".xz"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    if path.is_dir():
        return "owt" if any(path.glob("*.xz")) else "text"
    if stem.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    # Wikipedia's own names put ".xml" mid-name: enwiki-latest-pages-articles1.xml-p1p41242.bz2
    if stem.endswith(".xml") or ".xml-" in name or _looks_like_mediawiki(path):
        return "wiki"
    if stem.endswith(".tar") or name.endswith((".tgz", ".xz")):
        return "owt"
    return "text"


def read_documents(
    paths: list[str | os.PathLike] | str | os.PathLike,
    json_key: str = "text",
    policy: BadInputPolicy | None = None,
    kind: str = "auto",
    raw_wiki: bool = False,
) -> Iterator[Document]:
    """Yield the documents of every input in order.

    Args:
        paths: input files or directories.
        json_key: the JSONL field holding the text.
        policy: bad-document handling (default: raise on the first).
        kind: ``auto`` (from the path), ``jsonl``, ``text``, ``wiki`` or ``owt``.
        raw_wiki: yield wiki pages uncleaned (:class:`~data_tools.sources.wiki.Page`, ``.text`` is the
            wikitext) so that a process pool can clean them in parallel with ``wiki.page_document``.

    Raises:
        UserError: bad input (unless skipped), or no document at all.
    """
    from data_tools.sources import jsonl, owt, text, wiki

    policy = policy or BadInputPolicy()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    readers = {
        "jsonl": lambda p: jsonl.read_jsonl(p, json_key, policy),
        "text": lambda p: text.read_text(p, policy),
        "wiki": lambda p: wiki.iter_articles(p, policy) if raw_wiki else wiki.read_wiki(p, policy),
        "owt": lambda p: owt.read_owt(p, policy),
    }
    if kind != "auto" and kind not in readers:
        raise UserError(f"--input-kind {kind!r}: expected auto, {', '.join(readers)}")
    count = 0
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: input not found")
        for doc in readers[input_kind(p) if kind == "auto" else kind](p):
            count += 1
            yield doc
    if count == 0:
        raise UserError(f"{', '.join(map(str, paths))}: no documents found (empty input)")


def inside_folder(root: Path, paths: list[Path], policy: BadInputPolicy) -> list[Path]:
    """The regular files among ``paths`` (found under folder ``root``) that stay inside it.

    A symbolic link whose target lies outside ``root`` (``notes.txt -> /etc/passwd``), or is not a regular
    file (a FIFO, a device), is bad input: reading it would put data from elsewhere on the machine into the
    output, or block forever. Links inside the folder are followed.
    """
    top = root.resolve()
    kept = []
    for p in paths:
        real = p.resolve()
        if p.is_symlink() and real != top and top not in real.parents:
            policy.bad(f"{p}: symbolic link to {real}, outside the input folder {root}; refusing to read it "
                       "(copy the file into the folder if it belongs to the corpus)")
        elif not real.is_file():
            if not real.is_dir():  # a FIFO or device would block or never end; a broken link has nothing
                policy.bad(f"{p}: not a regular file; refusing to read it")
        else:
            kept.append(p)
    return kept


def decode_utf8(data: bytes, where: str) -> str:
    """Decode ``data`` as UTF-8 or raise a UserError naming ``where`` and the bad byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 (invalid byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def document_from_bytes(data: bytes, where: str, doc_id: str, policy: BadInputPolicy) -> Document | None:
    """A whole file as one document; non-UTF-8 bytes go to ``policy`` naming ``where`` and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        policy.bad(f"{where}:{line}: not UTF-8 (invalid byte 0x{data[exc.start]:02x})")
        return None
    text = text.strip()
    return Document(id=doc_id, text=text) if text else None


__all__ = ["Document", "BadInputPolicy", "inside_folder", "MAX_DOC_BYTES", "read_documents", "open_binary", "decode_utf8", "document_from_bytes", "input_kind"]
