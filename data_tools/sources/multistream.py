"""Wikipedia's multistream dumps: ``X-multistream.xml.bz2`` is many bz2 streams back to back (the first holds
the ``<mediawiki>`` header and ``<siteinfo>``, then about 100 pages per stream, then one holding
``</mediawiki>``), and ``X-multistream-index.txt.bz2`` lists ``offset:page_id:title`` per page, ``offset``
being the byte where the page's stream starts. Any run of streams can therefore be decompressed on its own,
so a dump can be read by many processes (or machines) at once, each from its own byte range.

:func:`open_stream_range` gives a range of streams as a file-like XML document (header + those pages +
``</mediawiki>``), which :func:`data_tools.sources.wiki.iter_articles` parses like a whole dump.
:func:`write_multistream` writes a dump and index in Wikipedia's layout (tests and benchmarks make theirs so).
"""

from __future__ import annotations

import bz2
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_tools.atomic import atomic_open
from data_tools.errors import UserError

_END = b"</mediawiki>"
_READ_BLOCK = 1 << 20


def index_for(dump: Path) -> Path | None:
    """The ``…-multistream-index.txt.bz2`` beside a ``…-multistream.xml.bz2`` dump, if there is one."""
    name = dump.name
    if not name.endswith(".xml.bz2"):
        return None
    cand = dump.with_name(name[: -len(".xml.bz2")] + "-index.txt.bz2")
    return cand if cand.is_file() else None


@dataclass(frozen=True)
class StreamLayout:
    """Where the streams of a multistream dump are.

    Attributes:
        header_end: first byte of the first page stream (bytes before it are the header stream).
        offsets: start of every page stream, increasing (the last stream runs to ``size``).
        size: the dump's size in bytes.
    """

    header_end: int
    offsets: tuple[int, ...]
    size: int


def read_layout(dump: Path, index: Path) -> StreamLayout:
    """Read the stream offsets of ``dump`` from its ``index``.

    Raises:
        UserError: an unreadable index, a malformed line (naming it) or offsets outside the dump.
    """
    size = dump.stat().st_size
    offsets: list[int] = []
    lineno = 0
    try:
        with bz2.open(index, "rb") as fh:
            for lineno, line in enumerate(fh, 1):  # noqa: B007 - lineno names the bad line below
                head = line.split(b":", 1)[0]
                if not head.strip():
                    continue
                off = int(head)
                if not offsets or off != offsets[-1]:
                    if offsets and off < offsets[-1]:
                        raise UserError(f"{index}:{lineno}: stream offset {off} is below the previous {offsets[-1]}")
                    offsets.append(off)
    except ValueError:
        raise UserError(f"{index}:{lineno}: expected 'offset:page_id:title'") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{index}: cannot read multistream index ({exc})") from None
    if not offsets:
        raise UserError(f"{index}: empty multistream index")
    if offsets[0] <= 0 or offsets[-1] >= size:
        raise UserError(f"{index}: stream offsets {offsets[0]}..{offsets[-1]} do not fit {dump} ({size} bytes)")
    return StreamLayout(header_end=offsets[0], offsets=tuple(offsets), size=size)


def snap(layout: StreamLayout, byte: int) -> int:
    """The first stream start at or after ``byte`` (``layout.size`` past the last one)."""
    import bisect

    i = bisect.bisect_left(layout.offsets, byte)
    return layout.offsets[i] if i < len(layout.offsets) else layout.size


def _decompress_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Decompressed bytes of the streams in ``[start, end)``, one stream at a time (memory: one stream)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = end - start
        dec, fed, pending = bz2.BZ2Decompressor(), False, b""
        while True:
            if dec.eof:  # a stream ended; what follows it starts the next one
                pending, dec, fed = dec.unused_data, bz2.BZ2Decompressor(), False
            if not pending:
                if remaining == 0:
                    break
                pending = fh.read(min(_READ_BLOCK, remaining))
                if not pending:
                    raise UserError(f"{path}: ends at byte {end - remaining}, its index says {end}")
                remaining -= len(pending)
            try:
                out = dec.decompress(pending)
            except OSError as exc:
                raise UserError(f"{path}: corrupt bz2 data in bytes {start}..{end} ({exc})") from None
            pending, fed = b"", True
            if out:
                yield out
        if fed and not dec.eof:
            raise UserError(f"{path}: bytes {start}..{end} end inside a bz2 stream (index does not match dump)")


class _ChainReader:
    """``read(n)`` over an iterator of byte chunks (what ``ElementTree.iterparse`` needs of a file)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""
        self._pos = 0  # read position in _buf: slicing off the front would copy a whole stream per read

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) - self._pos < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        end = len(self._buf) if n < 0 else self._pos + n
        out = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return out

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close:
            close()


def _range_chunks(path: Path, header_end: int, start: int, end: int) -> Iterator[bytes]:
    header = b"".join(_decompress_range(path, 0, header_end))
    yield header.replace(_END, b"")
    for chunk in _decompress_range(path, start, end):
        # Only the dump's last stream holds the closing tag (inside a page it would be escaped as &lt;).
        yield chunk.replace(_END, b"") if _END in chunk else chunk
    yield _END + b"\n"


def open_stream_range(path: Path, header_end: int, start: int, end: int) -> _ChainReader:
    """The streams ``[start, end)`` of a multistream dump as one XML document (header stream first)."""
    return _ChainReader(_range_chunks(path, header_end, start, end))


_TITLE = re.compile(rb"<title>(.*?)</title>")
_ID = re.compile(rb"<id>(\d+)</id>")


def write_multistream(xml: bytes, dump: str | os.PathLike, index: str | os.PathLike, pages_per_stream: int = 100) -> int:
    """Write ``xml`` (a whole MediaWiki export) as a multistream bz2 dump and its index, like Wikipedia's.

    Returns:
        the number of page streams written.
    """
    first = xml.find(b"<page>")
    last = xml.rfind(b"</page>")
    if first < 0 or last < 0:
        raise UserError(f"{dump}: the XML holds no <page>")
    head, body, tail = xml[:first], xml[first : last + len(b"</page>")], xml[last + len(b"</page>") :]
    pages = [p + b"</page>" for p in body.split(b"</page>")[:-1]]
    streams = 0
    with atomic_open(dump, "wb") as out, atomic_open(index, "wb") as idx_raw, bz2.open(idx_raw, "wb") as idx:
        out.write(bz2.compress(head))
        for i in range(0, len(pages), pages_per_stream):
            offset = out.tell()
            group = pages[i : i + pages_per_stream]
            for page in group:
                title = _TITLE.search(page)
                pid = _ID.search(page)
                idx.write(b"%d:%s:%s\n" % (offset, pid.group(1) if pid else b"0", title.group(1) if title else b""))
            out.write(bz2.compress(b"".join(group)))
            streams += 1
        out.write(bz2.compress(tail))
    return streams
