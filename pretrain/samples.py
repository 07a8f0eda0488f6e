"""Masked-LM samples over indexed corpora: a cached sample index, BERT/RoBERTa sample making, and blending.

A sample is a run of consecutive sentences ``[first, end)`` of one corpus (``data_tools.indexed``). Like
Megatron's cached sample maps (``*_indexmap_*.npy``) the runs are computed once (``pretrain.sample_index``:
compiled, streaming, one builder per file) and cached beside the corpus as ``PREFIX.<key>.npy`` (or in
``cache_dir``); row 0 holds the corpus' signature (sequences, documents, tokens) so that a rebuilt corpus
invalidates its cache. Every process memory-maps the cached files (sample indices and blend maps) instead of
holding its own copy. Everything random is seeded from (seed, sample id[, epoch]), never from call order, so
any sample can be made on any rank, in any order, and again after a resume.

Styles:
- ``bert`` (Devlin et al. 2019, Megatron's BERT dataset): runs stay within a document and aim at
  ``max_seq_len - 3`` tokens (10% of the time a shorter random target, ``short_seq_prob``). A run is split at
  a random sentence into segments A and B: ``[CLS] A [SEP] B [SEP]``, token types 0/1. With NSP, half of the
  samples replace B by sentences from a random other document (label 1). The pair is truncated as BERT does.
- ``roberta`` (Liu et al. 2019, FULL-SENTENCES): runs fill ``max_seq_len - 2`` tokens and cross document
  boundaries, with an extra separator between documents; no NSP, token types all 0.

Masking (``pretrain.masking``) is dynamic: ``get(sample_id, epoch)`` masks with an RNG seeded by
(seed, sample_id, epoch), so every epoch sees a fresh mask. Samples are padded to ``max_seq_len``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import atomic_path
from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus
from data_tools.tokenizer import Tokenizer
from pretrain.corpora import open_corpora
from pretrain.masking import IGNORE, Masker, MaskingConfig
from pretrain.sample_index import (  # noqa: F401 - re-exported: the index's API before it had a module
    INDEX_VERSION,
    STYLES,
    build_sample_index,
    cached_array,
    load_or_build_index,
)

BLEND_VERSION = 1
# Separate RNG streams, so that the sample structure and the mask never share draws.
_STREAM_PAIR, _STREAM_MASK = 2, 3


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator):
    """BERT's ``truncate_seq_pair``: shorten the longer segment one token at a time, each from the front or
    the back with equal odds, until both fit. Computed in closed form: the final lengths, then a binomial
    front/back split of each segment's removals (the same distribution as the token-by-token loop)."""
    la, lb = len(a), len(b)
    excess = la + lb - max_tokens
    if excess <= 0:
        return a, b
    if la > lb and la - lb >= excess:
        fa, fb = la - excess, lb
    elif lb >= la and lb - la >= excess:
        fa, fb = la, lb - excess
    else:  # both end up about half; on ties BERT shortens B first, so A keeps the odd token
        fa, fb = max_tokens - max_tokens // 2, max_tokens // 2

    def cut(x: np.ndarray, keep: int) -> np.ndarray:
        drop = len(x) - keep
        front = int(rng.binomial(drop, 0.5)) if drop else 0
        return x[front : front + keep]

    return cut(a, fa), cut(b, fb)


class MLMDataset(torch.utils.data.Dataset):
    """Masked-LM samples over one or more indexed corpora (concatenated in the order given).

    Args:
        corpora: opened corpora, already checked against ``tokenizer`` (``pretrain.corpora.open_corpora``;
            :meth:`from_prefixes` opens and checks them).
        tokenizer: the tokenizer the corpora were built with.
        max_seq_len: sample length including special tokens; samples are padded to it.
        style: "bert" or "roberta" (see the module docstring).
        nsp: next-sentence prediction labels (BERT style only).
        seed: seeds the sample index, the pair structure and the masks.
        masking: masking options (default: BERT's 15%, 80/10/10, no whole-word).
        short_seq_prob: BERT: share of samples with a random shorter target length.
        cache_dir: where to cache sample indices (default: beside each corpus).

    ``ds[i]`` with ``i >= len(ds)`` means sample ``i % len(ds)`` in epoch ``i // len(ds)`` (how
    :class:`pretrain.sampler.RankSampler` numbers samples of later epochs); ``ds.get(i, epoch)`` is explicit.
    """

    def __init__(
        self,
        corpora: Sequence[IndexedCorpus],
        tokenizer: Tokenizer,
        max_seq_len: int = 128,
        style: str = "bert",
        nsp: bool = False,
        seed: int = 1234,
        masking: MaskingConfig | None = None,
        short_seq_prob: float = 0.1,
        cache_dir: str | os.PathLike | None = None,
    ):
        if style not in STYLES:
            raise UserError(f"data.style: got {style!r}, expected one of {', '.join(STYLES)}")
        if nsp and style != "bert":
            raise UserError("data.nsp: next-sentence prediction needs data.style='bert'")
        if max_seq_len < 8:
            raise UserError(f"data.max_seq_len: got {max_seq_len}, expected at least 8")
        self.corpora = list(corpora)
        if not self.corpora:
            raise ValueError("MLMDataset: expected at least one corpus")
        self.prefixes = [c.prefix for c in self.corpora]
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.style = style
        self.nsp = nsp
        self.seed = seed
        self.masking = masking or MaskingConfig()
        # Memory maps of the cached files (shared by every process through the page cache), not copies.
        self.indices = [load_or_build_index(c, style, max_seq_len, seed, short_seq_prob, cache_dir)
                        for c in self.corpora]
        self.offsets = np.cumsum([0] + [len(ix) for ix in self.indices])
        if self.offsets[-1] == 0:
            raise UserError(f"{self.prefixes[0]}: the corpus has no tokens to make samples from")
        self.masker = Masker(
            self.masking,
            tokenizer.vocab_size,
            tokenizer.mask_id,
            tokenizer.special_ids,
            tokenizer.word_start_mask() if self.masking.whole_word else None,
        )

    @classmethod
    def from_prefixes(cls, prefixes: str | os.PathLike | Sequence[str | os.PathLike], tokenizer: Tokenizer,
                      **options) -> MLMDataset:
        """The dataset over every shard of ``prefixes``, opened and checked by ``pretrain.corpora.open_corpora``;
        ``options`` as the constructor's."""
        return cls([c for group in open_corpora(prefixes, tokenizer) for c in group], tokenizer, **options)

    # DataLoader workers get the dataset pickled: a memory-mapped index travels as its file, not its rows.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["indices"] = [os.fspath(ix.filename) if isinstance(ix, np.memmap) else ix for ix in self.indices]
        return state

    def __setstate__(self, state: dict) -> None:
        state["indices"] = [_remap_index(ix) if isinstance(ix, str) else ix for ix in state["indices"]]
        self.__dict__.update(state)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        n = len(self)
        return self.get(int(i) % n, int(i) // n)

    def locate(self, sample_id: int) -> tuple[int, np.ndarray]:
        """``(corpus number, [first, end, target])`` of a sample."""
        c = int(np.searchsorted(self.offsets, sample_id, side="right")) - 1
        return c, self.indices[c][sample_id - self.offsets[c]]

    def get(self, sample_id: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Sample ``sample_id`` as masked in ``epoch``.

        Returns:
            int64 arrays of length ``max_seq_len``: ``input_ids`` (masked), ``attention_mask``,
            ``token_type_ids``, ``mlm_labels`` (-100 where nothing is predicted); with NSP also
            ``nsp_labels`` (0-d: 0 = B follows A, 1 = B is random).
        """
        if not 0 <= sample_id < len(self):
            raise IndexError(f"sample {sample_id} out of range for a dataset of {len(self)} samples")
        c, (first, end, target) = self.locate(sample_id)
        tok = self.tokenizer
        if self.style == "roberta":
            tokens, types, nsp_label = self._roberta_tokens(c, int(first), int(end)), None, None
        else:
            tokens, types, nsp_label = self._bert_tokens(c, sample_id, int(first), int(end), int(target))
        rng = np.random.default_rng([self.seed, _STREAM_MASK, sample_id, epoch])
        input_ids, labels = self.masker(tokens, rng)
        length, n = len(input_ids), self.max_seq_len
        # Filled arrays plus a slice copy: np.pad costs ~0.3 ms a call, a third of a sample's making time.
        out = {"input_ids": np.full(n, tok.pad_id, np.int64), "attention_mask": np.zeros(n, np.int64),
               "token_type_ids": np.zeros(n, np.int64), "mlm_labels": np.full(n, IGNORE, np.int64)}
        out["input_ids"][:length] = input_ids
        out["attention_mask"][:length] = 1
        if types is not None:
            out["token_type_ids"][:length] = types
        out["mlm_labels"][:length] = labels
        if self.nsp:
            out["nsp_labels"] = np.array(nsp_label, dtype=np.int64)
        return out

    def _roberta_tokens(self, c: int, first: int, end: int) -> np.ndarray:
        corpus, tok = self.corpora[c], self.tokenizer
        docs = corpus.document_indices
        # documents that start inside (first, end): a separator goes before each
        lo, hi = np.searchsorted(docs, [first, end], side="right")
        starts = set(docs[lo:hi].tolist())
        parts = [np.array([tok.cls_id])]
        for k in range(first, end):
            if k in starts:
                parts.append(np.array([tok.sep_id]))  # between documents
            parts.append(corpus[k])
        body = np.concatenate(parts).astype(np.int64)[: self.max_seq_len - 1]
        return np.concatenate([body, [tok.sep_id]])

    def _bert_tokens(self, c: int, sample_id: int, first: int, end: int, target: int):
        corpus, tok = self.corpora[c], self.tokenizer
        rng = np.random.default_rng([self.seed, _STREAM_PAIR, sample_id])  # static across epochs
        sentences = [corpus[k] for k in range(first, end)]
        split = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
        a = np.concatenate(sentences[:split]).astype(np.int64)
        b = np.concatenate(sentences[split:]).astype(np.int64) if split < len(sentences) else np.zeros(0, np.int64)
        nsp_label = 0
        if self.nsp and corpus.num_documents > 1 and (len(b) == 0 or rng.random() < 0.5):
            b = self._random_segment(c, rng, first, max(1, target - len(a)))
            nsp_label = 1
        a, b = _truncate_pair(a, b, self.max_seq_len - 3, rng)
        if len(b) == 0:
            tokens = np.concatenate([[tok.cls_id], a, [tok.sep_id]])
            types = np.zeros(len(tokens), dtype=np.int64)
        else:
            tokens = np.concatenate([[tok.cls_id], a, [tok.sep_id], b, [tok.sep_id]])
            types = np.concatenate([np.zeros(len(a) + 2, np.int64), np.ones(len(b) + 1, np.int64)])
        return tokens.astype(np.int64), types, nsp_label

    def _random_segment(self, c: int, rng: np.random.Generator, sentence: int, target: int) -> np.ndarray:
        """Sentences from a random other document, from a random start, until ``target`` tokens (BERT)."""
        corpus = self.corpora[c]
        docs = corpus.document_indices
        own = int(np.searchsorted(docs, sentence, side="right")) - 1
        other = int(rng.integers(0, corpus.num_documents - 1))
        other += other >= own
        start, stop = int(docs[other]), int(docs[other + 1])
        if stop == start:
            return np.zeros(0, np.int64)
        parts, total = [], 0
        for k in range(int(rng.integers(start, stop)), stop):
            parts.append(corpus[k])
            total += len(parts[-1])
            if total >= target:
                break
        return np.concatenate(parts).astype(np.int64)


def _remap_index(filename: str) -> np.ndarray:
    """Re-open a cached sample index (its rows after the signature row) as a memory map."""
    return np.load(filename, mmap_mode="r", allow_pickle=False)[1:]


def blend_map(sizes: Sequence[int], weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Which dataset each blended sample comes from, and which of that dataset's samples it is.

    Each dataset appears ``round(w * size)`` times (largest remainders get the leftover samples, so the counts
    sum to ``size``) in a seeded random order.

    Returns:
        int64 ``[size, 2]``: dataset, rank of the sample among that dataset's.
    """
    counts = np.floor(weights * size).astype(np.int64)
    counts[np.argsort(-(weights * size - counts))[: size - counts.sum()]] += 1
    rng = np.random.default_rng([seed, 7])
    out = np.empty((size, 2), dtype=np.int64)
    out[:, 0] = rng.permutation(np.repeat(np.arange(len(sizes)), counts))
    for d in range(len(sizes)):
        where = np.flatnonzero(out[:, 0] == d)
        out[where, 1] = np.arange(len(where))
    return out


def _choice_dtype(datasets: int) -> np.dtype:
    return np.dtype(np.uint8 if datasets <= 256 else np.uint16 if datasets <= 65536 else np.int64)


def write_blend_map(fh, sizes: Sequence[int], weights: np.ndarray, size: int, seed: int,
                    chunk: int = 1 << 20) -> None:
    """:func:`blend_map` written to an open ``.npy`` file in about 2 bytes of memory per sample plus a chunk
    (20 M samples: 87 MB against 460 MB for :func:`blend_map`).

    The dataset order is shuffled as small integers (the shuffle's draws depend on the length only, so the
    order is the one :func:`blend_map` makes), and the ranks are counted and written a chunk at a time.
    """
    from pretrain.sample_index import NpyRowWriter

    counts = np.floor(weights * size).astype(np.int64)
    counts[np.argsort(-(weights * size - counts))[: size - counts.sum()]] += 1
    rng = np.random.default_rng([seed, 7])
    choice = rng.permutation(np.repeat(np.arange(len(sizes), dtype=_choice_dtype(len(sizes))), counts))
    seen = np.zeros(len(sizes), dtype=np.int64)
    writer = NpyRowWriter(fh, 2, size)
    for start in range(0, size, chunk):
        part = choice[start : start + chunk]
        block = np.empty((len(part), 2), dtype=np.int64)
        block[:, 0] = part
        for d in np.unique(part):
            where = np.flatnonzero(part == d)
            block[where, 1] = seen[d] + np.arange(len(where))
            seen[d] += len(where)
        writer.write(block)
    writer.finish()


class BlendedDataset(torch.utils.data.Dataset):
    """Mix several datasets with weights (Megatron's ``--data-path w1 p1 w2 p2``).

    Sample ``i`` comes from dataset ``choice[i]``, where ``choice`` holds each dataset ``round(w * size)``
    times in a seeded random order; a dataset drawn more often than its length starts a new epoch of its
    own (fresh masks). The map (:func:`blend_map`) is cached like Megatron's ``dataset_index.npy``
    (``megatron/core/datasets/blended_dataset.py``, NVIDIA/Megatron-LM@064f86b): ``blend_<hash>.npy`` in
    ``cache_dir``, else beside the first dataset's first corpus; one process builds it, every one maps it.

    Args:
        datasets: the datasets (each with ``get(sample_id, epoch)``).
        weights: positive weights, normalised here.
        size: number of samples of the blend (default: the sum of the datasets' lengths).
        seed: seeds the order.
        cache_dir: where to cache the map.
    """

    def __init__(self, datasets: Sequence[MLMDataset], weights: Sequence[float], size: int | None = None,
                 seed: int = 1234, cache_dir: str | os.PathLike | None = None):
        if len(datasets) != len(weights) or not datasets:
            raise UserError(f"data.weights: expected one weight per dataset ({len(datasets)}), got {len(weights)}")
        w = np.asarray(weights, dtype=np.float64)
        if (w <= 0).any() or not np.isfinite(w).all():
            raise UserError(f"data.weights: expected positive numbers, got {list(weights)}")
        w = w / w.sum()
        self.datasets = list(datasets)
        size = int(size if size is not None else sum(len(d) for d in datasets))
        sizes = [len(d) for d in datasets]
        self.map = self._map(sizes, w, size, seed, cache_dir)
        self.choice, self.rank = self.map[:, 0], self.map[:, 1]
        self.nsp = all(getattr(d, "nsp", False) for d in datasets)

    def _map(self, sizes: list[int], w: np.ndarray, size: int, seed: int, cache_dir) -> np.ndarray:
        # The map depends on nothing but these: equal inputs share one file.
        key = hashlib.sha1(f"v{BLEND_VERSION}-{sizes}-{w.tolist()!r}-{size}-{seed}".encode()).hexdigest()[:16]
        first = getattr(self.datasets[0], "prefixes", None)
        if cache_dir is None and not first:
            return blend_map(sizes, w, size, seed)
        where = Path(cache_dir) if cache_dir is not None else Path(first[0]).parent
        path = where / f"blend_{key}.npy"

        def write(p: Path) -> None:
            with atomic_path(p) as tmp, open(tmp, "wb") as fh:
                write_blend_map(fh, sizes, w, size, seed)

        table, _ = cached_array(path, lambda a: a.shape == (size, 2), write,
                                lambda: blend_map(sizes, w, size, seed), "the blend map")
        return table

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("map", "choice", "rank"):
            state.pop(key)
        state["_map_file"] = os.fspath(self.map.filename) if isinstance(self.map, np.memmap) else None
        if state["_map_file"] is None:
            state["map"] = np.asarray(self.map)
        return state

    def __setstate__(self, state: dict) -> None:
        file = state.pop("_map_file")
        self.__dict__.update(state)
        if file is not None:
            self.map = np.load(file, mmap_mode="r", allow_pickle=False)
        self.choice, self.rank = self.map[:, 0], self.map[:, 1]

    def __len__(self) -> int:
        return len(self.map)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        n = len(self)
        return self.get(int(i) % n, int(i) // n)

    def get(self, sample_id: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Sample ``sample_id`` of the blend in (blend) ``epoch``."""
        d, r = (int(v) for v in self.map[sample_id])
        ds = self.datasets[d]
        local_len = len(ds)
        return ds.get(r % local_len, epoch + r // local_len)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack samples (already padded to one length) into int64 tensors ``[B, T]`` (``nsp_labels``: ``[B]``)."""
    if not samples:
        raise ValueError("collate: empty batch")
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
