"""``build``: documents → sentences → token ids → MMIDIDX corpus (optionally sharded).

Workers tokenize batches of documents in parallel; results come back in input order (``imap``), and a
document's shard depends only on its position, so the bytes written do not depend on ``--workers``.
Each shard is written by an :class:`~data_tools.indexed.IndexedCorpusWriter` (temp files renamed at the
end, ``.idx`` last), so a killed build leaves no pair that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools.atomic import ensure_parent
from data_tools.errors import UserError
from data_tools.indexed import (
    IndexedCorpusWriter,
    bin_path,
    dtype_for_vocab,
    idx_path,
    meta_path,
    parse_dtype,
    shard_prefix,
)
from data_tools.parallel import ordered_map, worker_pool
from data_tools.sentences import split_sentences
from data_tools.sources import BadInputPolicy, read_documents
from data_tools.sources.wiki import Page, page_document
from data_tools.tokenizer import Tokenizer, load_tokenizer

# A task for a worker: ~256K characters (a few Wikipedia articles, dozens of web pages): large enough to
# amortise pickling, small enough to keep both workers busy to the end of a small input.
BATCH_CHARS = 1 << 18
BATCH_DOCS = 512

_WORKER_TOK: Tokenizer | None = None
_WORKER_SPLIT = True


@dataclass
class BuildResult:
    """What ``build`` wrote (also printed as the summary line)."""

    prefixes: list[str]
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    bytes: int = 0
    empty_documents: int = 0
    skipped: int = 0
    elapsed: float = 0.0
    shard_documents: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable line."""
        rate = self.elapsed or 1e-9
        shards = f"{len(self.prefixes)} shard(s)" if len(self.prefixes) > 1 else self.prefixes[0]
        extra = f", {self.empty_documents} empty document(s) dropped" if self.empty_documents else ""
        extra += f", {self.skipped} bad document(s) skipped" if self.skipped else ""
        return (
            f"built {shards}: {self.documents:,} documents, {self.sentences:,} sentences, {self.tokens:,} tokens, "
            f"{self.bytes / 2**20:.1f} MiB in {self.elapsed:.1f}s ({self.documents / rate:,.0f} docs/s, "
            f"{self.tokens / rate:,.0f} tokens/s){extra}"
        )


def _init_worker(tokenizer_path: str, split: bool) -> None:
    global _WORKER_TOK, _WORKER_SPLIT
    # One process per core already; a Rust thread pool inside each would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_TOK = load_tokenizer(tokenizer_path)
    _WORKER_SPLIT = split


def encode_documents(
    texts: list[str | Page], tok: Tokenizer, split: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split each text into sentences and tokenize them in one batch call.

    Args:
        texts: document texts, or wiki pages still to be cleaned (cleaning then runs in the worker too).

    Returns:
        per document ``(tokens int32[total], lengths int32[sentences])``, empty sentences dropped.
    """
    sentences: list[str] = []
    counts: list[int] = []
    for text in texts:
        if isinstance(text, Page):
            text = page_document(text).text
        sents = split_sentences(text) if split else ([text.strip()] if text.strip() else [])
        sentences.extend(sents)
        counts.append(len(sents))
    flat, lengths = tok.encode_flat(sentences)
    sent_bounds = np.concatenate(([0], np.cumsum(counts)))
    tok_bounds = np.concatenate(([0], np.cumsum(lengths)))
    out = []
    for d in range(len(texts)):
        a, b = sent_bounds[d], sent_bounds[d + 1]
        doc_lengths = lengths[a:b]
        out.append((flat[tok_bounds[a] : tok_bounds[b]], doc_lengths[doc_lengths > 0].astype(np.int32)))
    return out


def _encode_in_worker(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert _WORKER_TOK is not None
    return encode_documents(texts, _WORKER_TOK, _WORKER_SPLIT)


def _batches(docs, max_docs: int = BATCH_DOCS, max_chars: int = BATCH_CHARS):
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc if isinstance(doc, Page) else doc.text)
        chars += len(doc.text)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def choose_dtype(requested: str, vocab_size: int) -> np.dtype:
    """``auto`` → uint16 when the vocabulary fits (Megatron's rule), else int32; explicit dtypes are checked."""
    if requested == "auto":
        return np.dtype(dtype_for_vocab(vocab_size))
    dt = parse_dtype(requested)
    if dt.kind not in "iu":
        raise UserError(f"--dtype {requested}: token ids need an integer dtype (uint16 or int32)")
    if vocab_size - 1 > np.iinfo(dt).max:
        raise UserError(
            f"--dtype {requested}: the tokenizer's vocabulary of {vocab_size:,} ids is too large "
            f"(max id {np.iinfo(dt).max:,}); use --dtype int32 or auto"
        )
    return dt


def _stale_outputs(output: str) -> list[Path]:
    """Temp files of killed builds writing ``output`` (or its shards)."""
    parent, name = os.path.split(output)
    pat = re.compile(r"\." + re.escape(name) + r"(_\d{5})?\.(bin|idx|meta\.json)\..+\.tmp")
    return [Path(parent or ".", e) for e in os.listdir(parent or ".") if pat.fullmatch(e)]


def _remove_corpus(prefix: str) -> None:
    for path in (idx_path(prefix), bin_path(prefix), meta_path(prefix)):  # .idx first: never a stale pair
        path.unlink(missing_ok=True)


def _remove_other_layouts(output: str, kept: list[str]) -> None:
    """Drop corpora under ``output`` from earlier builds that ``resolve_prefixes`` would otherwise pick up."""
    parent, name = os.path.split(output)
    pat = re.compile(re.escape(name) + r"_\d{5}\.idx")
    candidates = [output] + [os.path.join(parent, e[:-4]) for e in os.listdir(parent or ".") if pat.fullmatch(e)]
    for prefix in candidates:
        if prefix not in kept:
            _remove_corpus(prefix)


def _write_all(encoded, writer_for, result: BuildResult, shards: int | None, shard_size: int | None,
               progress: bool) -> None:
    """Write encoded batches in order; a document's shard depends only on its position."""
    start = time.perf_counter()
    with tqdm(desc="build", unit=" docs", disable=not progress, file=sys.stderr, mininterval=1.0) as bar:
        for batch in encoded:
            for tokens, lengths in batch:
                if not len(lengths):
                    result.empty_documents += 1
                    continue
                n = result.documents
                k = n % shards if shards is not None else (n // shard_size if shard_size else 0)
                writer_for(k).add_document(tokens, lengths)
                result.documents += 1
                result.sentences += len(lengths)
                result.tokens += len(tokens)
            bar.update(len(batch))
            bar.set_postfix_str(f"{result.tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s", False)


def _check_args(output: str | os.PathLike, workers: int, shards: int | None, shard_size: int | None) -> str:
    if workers < 1:
        raise UserError(f"--workers {workers}: expected at least 1")
    if shards is not None and shard_size is not None:
        raise UserError("--shards and --shard-size are exclusive: give one")
    if shards is not None and shards < 1:
        raise UserError(f"--shards {shards}: expected at least 1")
    if shard_size is not None and shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: expected at least 1 document")
    output = os.fspath(output)
    if not os.path.basename(output):
        raise UserError(f"-o {output!r}: expected a corpus prefix such as corpus/wiki, not a directory")
    return output


def _corpus_meta(tok, inputs: list, split_sentences: bool) -> dict:
    """What every shard's ``.meta.json`` records about how it was made."""
    return {
        "format": "MMIDIDX",
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint,
                      "path": str(Path(tok.path).resolve())},
        "splitter": f"blingfire-{version('blingfire')}" if split_sentences else "none",
        "sequence": "sentence" if split_sentences else "document",
        "inputs": [str(p) for p in inputs],
    }


def build(
    inputs: list[str | os.PathLike],
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    workers: int = 1,
    shards: int | None = None,
    shard_size: int | None = None,
    dtype: str = "auto",
    json_key: str = "text",
    skip_bad: bool = False,
    split_sentences: bool = True,
    input_kind: str = "auto",
    progress: bool = True,
    max_doc_bytes: int = 0,
) -> BuildResult:
    """Tokenize documents into a Megatron MMIDIDX corpus.

    Args:
        inputs: JSONL / text / wiki dump / OpenWebText inputs (see :mod:`data_tools.sources`).
        tokenizer: anything :func:`~data_tools.tokenizer.load_tokenizer` accepts.
        output: corpus prefix; with sharding, shards are ``OUTPUT_00000`` …
        workers: tokenizer processes (1 = in this process). Output is identical for any value.
        shards: write exactly this many shards, documents dealt round-robin.
        shard_size: or: start a new shard every ``shard_size`` documents.
        dtype: ``auto`` (uint16 if the vocabulary fits, else int32), ``uint16`` or ``int32``.
        json_key: JSONL field with the text.
        skip_bad: skip bad documents (counted) instead of stopping at the first.
        split_sentences: one sequence per sentence (BERT pairs); False = one per document.
        input_kind: force a reader (``jsonl``, ``text``, ``wiki``, ``owt``).
        progress: show a progress bar on stderr.
        max_doc_bytes: largest document read (0: ``sources.MAX_DOC_BYTES``); bigger ones are bad input.

    Returns:
        a :class:`BuildResult`.

    Raises:
        UserError: bad arguments or input (see the sources), unwritable output.
    """
    output = _check_args(output, workers, shards, shard_size)
    tok = load_tokenizer(tokenizer)
    dt = choose_dtype(dtype, tok.vocab_size)
    sharded = shards is not None or shard_size is not None
    policy = BadInputPolicy(skip=skip_bad, max_doc_bytes=max_doc_bytes)
    docs = read_documents(inputs, json_key=json_key, policy=policy, kind=input_kind, raw_wiki=True)
    meta = _corpus_meta(tok, inputs, split_sentences)
    writers: dict[int, IndexedCorpusWriter] = {}
    ensure_parent(output)
    for stale in _stale_outputs(output):
        stale.unlink(missing_ok=True)
    result = BuildResult(prefixes=[])
    start = time.perf_counter()
    # Every writer and the worker pool leave through the stack: on an error each writer discards its partial
    # files and the pool is terminated; on success the pool is drained and every writer completes its shard.
    with contextlib.ExitStack() as stack:

        def writer_for(k: int) -> IndexedCorpusWriter:
            if k not in writers:
                path = shard_prefix(output, k) if sharded else output
                writers[k] = stack.enter_context(IndexedCorpusWriter(path, dt, meta=dict(meta, shard=k)))
            return writers[k]

        if shards is not None:
            for k in range(shards):  # every requested shard exists, even if there are fewer documents
                writer_for(k)
        if workers > 1:
            pool = stack.enter_context(worker_pool(workers, _init_worker, (str(tokenizer), split_sentences)))
            encoded = ordered_map(pool, _encode_in_worker, _batches(docs), in_flight=3 * workers)
        else:
            encoded = (encode_documents(b, tok, split_sentences) for b in _batches(docs))
        _write_all(encoded, writer_for, result, shards, shard_size, progress)
        if result.documents == 0:
            raise UserError(f"{', '.join(map(str, inputs))}: no document produced any token (empty input?)")
        writer_for(0)
        for w in writers.values():
            w.meta["num_shards"] = len(writers) if sharded else 1
    for k in sorted(writers):
        result.prefixes.append(writers[k].prefix)
        result.shard_documents.append(writers[k].documents)
    _remove_other_layouts(output, result.prefixes)
    result.bytes = result.tokens * dt.itemsize
    result.skipped = policy.skipped
    result.elapsed = time.perf_counter() - start
    return result
