"""``inspect``: counts, token-length histograms, and documents or sentences decoded back to text."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, resolve_prefixes
from data_tools.tokenizer import Tokenizer, load_tokenizer


def histogram(values: np.ndarray, width: int = 40) -> list[str]:
    """Text histogram over power-of-two bins: ``[lo, hi) count bar``."""
    if values.size == 0:
        return ["  (empty)"]
    top = int(values.max())
    edges = [0, 1] + [2**k for k in range(1, max(top, 1).bit_length() + 1)]
    counts, _ = np.histogram(values, bins=edges + [edges[-1] * 2])
    peak = max(int(counts.max()), 1)
    lines = []
    for lo, hi, n in zip(edges, edges[1:] + [edges[-1] * 2], counts):
        if n:
            lines.append(f"  {lo:>7}-{hi - 1:<7} {int(n):>10,}  {'#' * max(1, round(width * n / peak))}")
    return lines


def _stats(name: str, v: np.ndarray) -> str:
    if v.size == 0:
        return f"{name}: none"
    p = np.percentile(v, [50, 90, 99])
    return (f"{name}: min {int(v.min())}, mean {v.mean():.1f}, median {p[0]:.0f}, p90 {p[1]:.0f}, p99 {p[2]:.0f}, "
            f"max {int(v.max())}")


class _Corpora:
    """Shards seen as one corpus, with global document and sentence numbers."""

    def __init__(self, prefix: str | os.PathLike):
        self.parts = [IndexedCorpus(p) for p in resolve_prefixes(prefix)]
        self.seq_offsets = np.cumsum([0] + [len(c) for c in self.parts])
        self.doc_offsets = np.cumsum([0] + [c.num_documents for c in self.parts])

    def locate(self, i: int, offsets: np.ndarray, what: str) -> tuple[IndexedCorpus, int]:
        total = int(offsets[-1])
        if not 0 <= i < total:
            raise UserError(f"--{what} {i}: out of range (the corpus has {total} {what}s, numbered from 0)")
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        return self.parts[k], i - int(offsets[k])


def _tokenizer_for(corpus: IndexedCorpus, path: str | os.PathLike | None) -> Tokenizer | None:
    meta_tok = (corpus.meta or {}).get("tokenizer") or {}
    if path is None:
        stored = meta_tok.get("path")
        if not stored or not Path(stored).exists():
            return None
        path = stored
    tok = load_tokenizer(path)
    if meta_tok.get("fingerprint") not in (None, "unknown", tok.fingerprint):  # "unknown": a forced merge
        raise UserError(f"{path}: this tokenizer (fingerprint {tok.fingerprint}) did not build {corpus.prefix} "
                        f"(built with {meta_tok['fingerprint']})")
    return tok


def inspect_corpus(
    prefix: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    document: int | None = None,
    sentence: int | None = None,
    show_histogram: bool = True,
) -> str:
    """Describe a corpus (or all its shards) and optionally decode one document or sentence.

    Args:
        prefix: corpus prefix (sharded prefixes are read as one corpus).
        tokenizer: for decoding; default: the one recorded in the build's ``.meta.json``, if still there.
        document: global document number to print, sentence by sentence.
        sentence: global sentence (sequence) number to print.
        show_histogram: include the sentence-length histogram.

    Returns:
        the report text.
    """
    cs = _Corpora(prefix)
    lengths = np.concatenate([np.asarray(c.sequence_lengths) for c in cs.parts])
    doc_tokens = np.concatenate([np.add.reduceat(np.asarray(c.sequence_lengths, np.int64),
                                                 np.asarray(c.document_indices[:-1]))
                                 if len(c) and c.num_documents else np.zeros(0, np.int64) for c in cs.parts])
    doc_sents = np.concatenate([np.diff(c.document_indices) for c in cs.parts])
    first = cs.parts[0]
    meta = first.meta or {}
    lines = [
        f"corpus {os.fspath(prefix)}: {len(cs.parts)} file(s), dtype {first.dtype.name}",
        f"documents {int(cs.doc_offsets[-1]):,}  sentences {len(lengths):,}  tokens {int(lengths.sum()):,}  "
        f"bytes {sum(c.bin_size for c in cs.parts):,}",
    ]
    if meta.get("tokenizer"):
        t = meta["tokenizer"]
        lines.append(f"tokenizer {t.get('kind')} vocab {t.get('vocab_size')} fingerprint {t.get('fingerprint')} "
                     f"({t.get('path')})")
    lines += [_stats("tokens per sentence", lengths), _stats("sentences per document", doc_sents),
              _stats("tokens per document", doc_tokens)]
    if show_histogram:
        lines += ["sentence length histogram (tokens):", *histogram(lengths)]
    if document is not None or sentence is not None:
        tok = _tokenizer_for(first, tokenizer)
        show = (lambda ids: tok.decode(ids)) if tok else (lambda ids: " ".join(map(str, ids.tolist())))
        if tok is None:
            lines.append("(no tokenizer given or recorded: showing token ids; pass --tokenizer to decode)")
        if document is not None:
            c, d = cs.locate(document, cs.doc_offsets, "document")
            lines.append(f"document {document} ({c.prefix} #{d}):")
            lines += [f"  [{j}] {show(s)}" for j, s in enumerate(c.document(d))]
        if sentence is not None:
            c, s = cs.locate(sentence, cs.seq_offsets, "sentence")
            lines.append(f"sentence {sentence} ({c.prefix} #{s}): {show(c[s])}")
    return "\n".join(lines)


def unigram_entropy(prefix: str | os.PathLike, exclude: set[int] | frozenset[int] = frozenset()) -> float:
    """Entropy (nats per token) of the corpus' token distribution, ``exclude`` ids (special tokens) left out.

    It is the masked-LM loss of the best predictor that ignores the context (a unigram model): a pre-trained
    MLM has learnt something from the context only once its held-out loss is below this.

    Args:
        prefix: a corpus prefix (a sharded prefix expands to all its shards).
        exclude: token ids not counted (e.g. ``Tokenizer.special_ids``).
    Returns:
        The entropy in nats.
    """
    counts = np.zeros(0, dtype=np.int64)
    for shard in resolve_prefixes(prefix):
        corpus = IndexedCorpus(shard)
        for start in range(0, len(corpus), 4096):
            chunk = [np.asarray(corpus[i], dtype=np.int64) for i in range(start, min(start + 4096, len(corpus)))]
            c = np.bincount(np.concatenate(chunk)) if chunk else np.zeros(0, dtype=np.int64)
            size = max(len(c), len(counts))
            counts = np.pad(counts, (0, size - len(counts))) + np.pad(c, (0, size - len(c)))
    for t in exclude:
        if t < len(counts):
            counts[t] = 0
    if counts.sum() == 0:
        raise UserError(f"{prefix}: no tokens to measure")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
