"""``extract-wiki`` and ``extract-owt``: raw dumps → documents as JSON lines ``{"id", "title", "text"}``.

The JSONL is what ``build`` and ``train-tokenizer`` read (like WikiExtractor's ``--json`` output and
Megatron's preprocess_data.py input). Output appears atomically when the whole input has been read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data_tools.atomic import atomic_open, remove_stale_tmp
from data_tools.errors import UserError
from data_tools.parallel import ordered_map, worker_pool
from data_tools.sources import BadInputPolicy, Document
from data_tools.sources.multistream import index_for, read_layout
from data_tools.sources.owt import read_owt
from data_tools.sources.wiki import Page, iter_articles, page_document
from data_tools.tasks import Piece, plan_tasks, read_piece


@dataclass
class ExtractResult:
    """Counts for the summary line."""

    output: str
    documents: int = 0
    characters: int = 0
    pages: int = 0
    redirects: int = 0
    other_namespace: int = 0
    disambiguation: int = 0
    too_short: int = 0
    skipped: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        """One human-readable line."""
        pages = (
            f" from {self.pages:,} pages ({self.redirects:,} redirects, {self.other_namespace:,} other namespaces, "
            f"{self.disambiguation:,} disambiguation, {self.too_short:,} too short dropped)"
            if self.pages
            else ""
        )
        skipped = f", {self.skipped} bad skipped" if self.skipped else ""
        return (
            f"wrote {self.output}: {self.documents:,} documents, {self.characters:,} characters{pages}{skipped} "
            f"in {self.elapsed:.1f}s"
        )


_HEADINGS = False


def _init(headings: bool) -> None:
    global _HEADINGS
    _HEADINGS = headings


def _clean_many(pages: list[Page]) -> list[Document]:
    return [page_document(p, _HEADINGS) for p in pages]


def _extract_piece(piece: Piece) -> tuple[list[Document], dict]:
    """Read and clean one run of multistream streams in a worker: the parent only writes."""
    stats: dict = {}
    docs = [page_document(p, _HEADINGS) for p in read_piece(piece, "text", BadInputPolicy(), stats)]
    return docs, stats


# A run of streams per worker task: ~4 MB of bz2 (~40 streams, ~20 MB of XML): a few seconds of work, and
# what is in flight (2 per worker) stays a few tens of MB whatever the dump's size.
PIECE_BYTES = 4 << 20


def _multistream_docs(dump: Path, index: Path, pool, workers: int, stats: dict) -> Iterator[Document]:
    layout = read_layout(dump, index)
    n = max(workers, min(len(layout.offsets), -(-layout.size // PIECE_BYTES)))
    pieces = [p for task in plan_tasks([dump], n, "wiki") for p in task]
    for docs, piece_stats in ordered_map(pool, _extract_piece, pieces, in_flight=2 * workers):
        for key, value in piece_stats.items():
            stats[key] = stats.get(key, 0) + value
        yield from docs


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_jsonl(docs: Iterable[Document], output: str | os.PathLike, result: ExtractResult, min_chars: int,
                 bar: tqdm, stats: dict | None = None) -> None:
    start = time.perf_counter()
    remove_stale_tmp(output)  # left by a killed run writing the same output
    with atomic_open(output, "w", encoding="utf-8") as fh:
        for doc in docs:
            bar.update(1)
            if stats and bar.n % 64 == 0:  # pages read include the redirects and other pages we drop
                bar.set_postfix_str(f"{stats['pages'] / (time.perf_counter() - start):,.0f} pages/s", refresh=False)
            if len(doc.text) < max(min_chars, 1):
                result.too_short += 1
                continue
            record = {"id": doc.id, "title": doc.title, "text": doc.text} if doc.title else {"id": doc.id,
                                                                                              "text": doc.text}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            result.documents += 1
            result.characters += len(doc.text)
    if result.documents == 0:
        Path(output).unlink(missing_ok=True)
        raise UserError(f"{output}: no documents extracted (the input holds no article with text)")


def extract_wiki(
    dump: str | os.PathLike,
    output: str | os.PathLike,
    workers: int = 1,
    headings: bool = False,
    min_chars: int = 1,
    progress: bool = True,
    index: str | os.PathLike | None = None,
) -> ExtractResult:
    """Extract main-namespace articles of a MediaWiki XML dump (``.xml`` or ``.xml.bz2``) to JSONL.

    With a multistream index (``index``, or ``…-multistream-index.txt.bz2`` found beside the dump) and
    ``workers`` > 1, each worker decompresses, parses and cleans its own runs of bz2 streams; otherwise this
    process reads the XML and the workers clean the pages. The output is the same either way.

    Args:
        dump: the dump file.
        output: JSONL to write.
        workers: processes (see above).
        headings: keep section headings as lines.
        min_chars: drop articles shorter than this after cleaning.
        progress: progress bar with pages/s on stderr.

    Returns:
        counts for the summary.
    """
    dump = Path(dump)
    if not dump.is_file():
        raise UserError(f"{dump}: dump not found")
    if workers < 1:
        raise UserError(f"--workers {workers}: expected at least 1")
    index = Path(index) if index is not None else index_for(dump)
    if index is not None and not index.is_file():
        raise UserError(f"--index {index}: multistream index not found")
    result = ExtractResult(output=str(output))
    stats: dict = {}
    start = time.perf_counter()
    pages = iter_articles(dump, stats=stats)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(worker_pool(workers, _init, (headings,)))
        if workers > 1 and index is not None:
            docs = _multistream_docs(dump, index, pool, workers, stats)
        elif workers > 1:
            docs: Iterator[Document] = (
                d for chunk in ordered_map(pool, _clean_many, _chunks(pages, 8), in_flight=4 * workers) for d in chunk
            )
        else:
            docs = (page_document(p, headings) for p in pages)
        with tqdm(desc="extract-wiki", unit=" articles", disable=not progress, file=sys.stderr, mininterval=1) as bar:
            _write_jsonl(docs, output, result, min_chars, bar, stats)
    for key in ("pages", "redirects", "other_namespace", "disambiguation"):
        setattr(result, key, stats.get(key, 0))
    result.elapsed = time.perf_counter() - start
    return result


def extract_owt(
    source: str | os.PathLike,
    output: str | os.PathLike,
    dedup: bool = False,
    skip_bad: bool = False,
    min_chars: int = 1,
    progress: bool = True,
    max_doc_bytes: int = 0,
) -> ExtractResult:
    """Extract OpenWebText (tar of ``.xz`` archives, a folder of them, or a folder of ``.txt``) to JSONL.

    Args:
        source: archive or folder.
        output: JSONL to write.
        dedup: drop exact duplicate documents.
        skip_bad: skip unsafe members and non-UTF-8 documents (counted) instead of stopping.
        min_chars: drop documents shorter than this.
        progress: progress bar on stderr.
        max_doc_bytes: largest document read (0: ``sources.MAX_DOC_BYTES``); bigger ones are bad input.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source}: input not found")
    policy = BadInputPolicy(skip=skip_bad, max_doc_bytes=max_doc_bytes)
    result = ExtractResult(output=str(output))
    start = time.perf_counter()
    with tqdm(desc="extract-owt", unit=" docs", disable=not progress, file=sys.stderr, mininterval=1) as bar:
        _write_jsonl(read_owt(source, policy, dedup=dedup), output, result, min_chars, bar)
    result.skipped = policy.skipped
    result.elapsed = time.perf_counter() - start
    return result
