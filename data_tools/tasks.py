"""Split inputs into N tasks of about equal bytes, and read a task's documents.

The inputs, taken in order, are one stream of bytes; task ``k`` owns bytes ``[k·B/N, (k+1)·B/N)`` of it.
What a task reads of each file it overlaps:

- uncompressed JSONL: the lines that *start* in its byte range (Hadoop's rule), so the ranges of all
  tasks together read every line exactly once whatever the cut points;
- a ``…-multistream.xml.bz2`` Wikipedia dump with its ``…-multistream-index.txt.bz2`` beside it: the bz2
  streams that start in its range (cut points snapped to stream starts);
- anything else (compressed JSONL, text, OpenWebText, a dump without index): the whole file, owned by the
  task whose range holds the file's first byte.

So the documents of tasks 0, 1, … N-1 in order are exactly the documents of the inputs in order, for any N;
some tasks may own nothing (N larger than the inputs allow) and then write an empty shard. The plan
depends only on the inputs' sizes and N, so every process (a Slurm array task, a Ray worker, a rerun)
computes the same one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from data_tools.errors import UserError
from data_tools.sources import BadInputPolicy, Document, input_kind
from data_tools.sources.multistream import StreamLayout, index_for, open_stream_range, read_layout, snap

_PLAIN_JSONL = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Piece:
    """One input, or a byte range of it, read by one task.

    Attributes:
        path: the input.
        kind: its reader (``jsonl``, ``text``, ``wiki``, ``owt``).
        start: first byte (JSONL: of the lines starting here; wiki: of the first stream).
        end: end byte, or -1 for the whole file.
        header_end: wiki multistream only: where the header stream ends.
    """

    path: str
    kind: str
    start: int = 0
    end: int = -1
    header_end: int = 0


@dataclass(frozen=True)
class _Input:
    path: Path
    kind: str
    size: int
    layout: StreamLayout | None = None  # multistream dumps

    @property
    def splittable(self) -> bool:
        return self.layout is not None or (self.kind == "jsonl" and self.path.suffix.lower() in _PLAIN_JSONL)


def _describe(paths: list[Path], kind: str) -> list[_Input]:
    out = []
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: input not found")
        k = input_kind(p) if kind == "auto" else kind
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        index = index_for(p) if k == "wiki" and p.is_file() else None
        out.append(_Input(p, k, size, read_layout(p, index) if index else None))
    return out


def plan_tasks(inputs: list[str | os.PathLike], num_tasks: int, kind: str = "auto") -> list[list[Piece]]:
    """The pieces each of ``num_tasks`` tasks reads, in input order (see the module docstring).

    Raises:
        UserError: a missing input, a bad multistream index, ``num_tasks`` < 1.
    """
    if num_tasks < 1:
        raise UserError(f"--tasks {num_tasks}: expected at least 1")
    files = _describe([Path(p) for p in inputs], kind)
    total = sum(f.size for f in files)
    bounds = [k * total // num_tasks for k in range(num_tasks + 1)]  # global byte where each task starts
    tasks: list[list[Piece]] = [[] for _ in range(num_tasks)]
    offset = 0
    for f in files:
        lo, hi = offset, offset + f.size
        offset = hi
        if not f.splittable:
            owner = _owner(bounds, lo, num_tasks)
            tasks[owner].append(Piece(str(f.path), f.kind))
            continue
        first = f.layout.header_end if f.layout else 0
        for k in range(num_tasks):
            a, b = max(bounds[k], lo) - lo, min(bounds[k + 1], hi) - lo
            if f.layout is not None:  # whole streams only; the header stream is read by every piece
                a, b = snap(f.layout, max(a, first)), snap(f.layout, max(b, first))
            if b > a:
                tasks[k].append(Piece(str(f.path), f.kind, a, b, first))
    return tasks


def _owner(bounds: list[int], byte: int, n: int) -> int:
    """The task whose range holds ``byte`` (the last task for the end of the input)."""
    import bisect

    return min(max(bisect.bisect_right(bounds, byte) - 1, 0), n - 1)


def read_piece(piece: Piece, json_key: str, policy: BadInputPolicy, stats: dict | None = None) -> Iterator:
    """Documents of a piece in order; wiki pieces yield uncleaned :class:`~data_tools.sources.wiki.Page`."""
    from data_tools.sources import jsonl, owt, text, wiki

    path = Path(piece.path)
    if piece.kind == "jsonl":
        yield from jsonl.read_jsonl(path, json_key, policy, start=piece.start, end=piece.end)
    elif piece.kind == "wiki":
        fh = open_stream_range(path, piece.header_end, piece.start, piece.end) if piece.end >= 0 else None
        yield from wiki.iter_articles(path, policy, stats, fh=fh)
    elif piece.kind == "text":
        yield from text.read_text(path, policy)
    elif piece.kind == "owt":
        yield from owt.read_owt(path, policy)
    else:
        raise UserError(f"--input-kind {piece.kind!r}: expected auto, jsonl, text, wiki or owt")


def read_pieces(pieces: list[Piece], json_key: str, policy: BadInputPolicy) -> Iterator[Document]:
    """Documents of every piece in order."""
    for piece in pieces:
        yield from read_piece(piece, json_key, policy)


def pieces_json(pieces: list[Piece]) -> list[dict]:
    """Pieces as JSON-able dicts (for plans and sidecars)."""
    return [asdict(p) for p in pieces]
