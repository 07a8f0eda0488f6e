"""``merge``: concatenate corpora (or shards) into one, Megatron's ``tools/merge_datasets.py`` equivalent.

Two phases. *Check*: every input is opened (validated), one at a time, and only its header and sidecar are
kept; dtypes and tokenizers must agree. *Stream*: the ``.bin`` files are copied block by block, then the
``.idx`` is written section by section (all lengths, all pointers, all document indices), each input's
arrays read in chunks with plain file reads. Memory is a few blocks whatever the number or size of the
inputs (Megatron's ``IndexedDatasetBuilder.add_index`` holds every input's lengths and document indices as
Python lists; NeMo#12993 reports merging 2,000 partitions of an 8 TB corpus past 200 GB of RAM). The bytes
equal what :class:`~data_tools.indexed.IndexedCorpusWriter` writes for the same documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass

import numpy as np

from data_tools.atomic import atomic_path, write_error, write_json
from data_tools.errors import UserError
from data_tools.indexed import (
    CODE_OF_DTYPE,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    IndexedCorpus,
    bin_path,
    idx_path,
    meta_path,
    resolve_prefixes,
)

_BLOCK = 1 << 22  # bytes of .bin per copy
_CHUNK = 1 << 20  # index entries per read


@dataclass(frozen=True)
class _Input:
    prefix: str
    dtype: np.dtype
    sequences: int
    documents: int
    tokens: int
    meta: dict | None


def _check(prefixes: list[str], output: str, force: bool) -> list[_Input]:
    """Open and validate each input in turn; keep only what the stream phase needs."""
    if output in prefixes:
        raise UserError(f"-o {output}: the output is one of the inputs; choose a new prefix")
    inputs = []
    for p in prefixes:
        c = IndexedCorpus(p)
        inputs.append(_Input(p, c.dtype, len(c), c.num_documents, c.num_tokens, c.meta))
        del c  # drop the memmaps before opening the next
    dtypes = {i.dtype.name for i in inputs}
    if len(dtypes) > 1:
        raise UserError(f"cannot merge corpora of different dtypes ({', '.join(sorted(dtypes))}): {', '.join(prefixes)}")
    tokenizers = {(i.meta or {}).get("tokenizer", {}).get("fingerprint") for i in inputs} - {None}
    if len(tokenizers) > 1 and not force:
        raise UserError(
            f"inputs were built with different tokenizers (fingerprints {', '.join(sorted(tokenizers))}); "
            "merging them mixes vocabularies (use --force if they are compatible)"
        )
    return inputs


def _read(inp: _Input, offset: int, dtype, count: int):
    """``count`` items of ``dtype`` at ``offset`` of an input's ``.idx``, in chunks (file reads, not a memmap:
    pages of a memmap read once would still count in RSS)."""
    size = np.dtype(dtype).itemsize
    with open(idx_path(inp.prefix), "rb") as fh:
        for start in range(0, count, _CHUNK):
            fh.seek(offset + start * size)
            yield np.fromfile(fh, dtype=dtype, count=min(_CHUNK, count - start))


def _lengths(inp: _Input):
    return _read(inp, HEADER_SIZE, np.int32, inp.sequences)


def _doc_indices(inp: _Input):
    return _read(inp, HEADER_SIZE + 12 * inp.sequences, np.int64, inp.documents + 1)


def _stream(inputs: list[_Input], output: str, meta: dict | None) -> None:
    dtype = inputs[0].dtype
    itemsize = dtype.itemsize
    n = sum(i.sequences for i in inputs)
    nd = sum(i.documents for i in inputs) + 1
    ipath = idx_path(output)
    with contextlib.suppress(FileNotFoundError):  # never a stale .idx beside the new .bin
        ipath.unlink()
    bin_hash, idx_hash = hashlib.sha256(), hashlib.sha256()
    top = -1
    with atomic_path(bin_path(output)) as btmp, open(btmp, "wb") as out:
        for inp in inputs:
            remaining = inp.tokens * itemsize
            with open(bin_path(inp.prefix), "rb") as src:
                while remaining:
                    block = src.read(min(_BLOCK, remaining))
                    if not block:
                        raise UserError(f"{bin_path(inp.prefix)}: shorter than its index says")
                    try:
                        out.write(block)
                    except OSError as exc:  # e.g. disk full: the temporary .bin is removed on the way out
                        raise write_error(bin_path(output), exc) from None
                    bin_hash.update(block)
                    usable = len(block) - len(block) % itemsize
                    if usable:  # the largest id, recorded for the trainer's vocabulary check
                        top = max(top, int(np.frombuffer(block[:usable], dtype).max()))
                    remaining -= len(block)
    with atomic_path(ipath) as itmp, open(itmp, "wb") as out:  # the .idx last: only now does it look complete

        def put(arr: np.ndarray | bytes) -> None:
            data = arr if isinstance(arr, bytes) else arr.tobytes()
            out.write(data)
            idx_hash.update(data)

        put(MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", CODE_OF_DTYPE[dtype]) + struct.pack("<QQ", n, nd))
        for inp in inputs:
            for lengths in _lengths(inp):
                put(lengths)
        pointer = 0  # pointers follow the lengths: bytes from the start of the merged .bin
        for inp in inputs:
            for lengths in _lengths(inp):
                ptr = np.empty(len(lengths), np.int64)
                ptr[0] = 0
                np.cumsum(lengths[:-1].astype(np.int64) * itemsize, out=ptr[1:])
                ptr += pointer
                pointer = int(ptr[-1]) + int(lengths[-1]) * itemsize
                put(ptr)
        put(np.zeros(1, np.int64))
        first = 0  # where each input's sequences start in the merged corpus
        for inp in inputs:
            for k, docs in enumerate(_doc_indices(inp)):
                put((docs[1:] if k == 0 else docs) + first)  # each input's leading 0 is the previous one's end
            first += inp.sequences
        if meta is not None:
            meta.update(dtype=dtype.name, documents=nd - 1, sequences=n, sentences=n,
                        tokens=sum(i.tokens for i in inputs), max_token_id=top)
            out.flush()
            meta["checksums"] = {"bin_sha256": bin_hash.hexdigest(), "idx_sha256": idx_hash.hexdigest(),
                                 "bin_bytes": pointer, "idx_bytes": HEADER_SIZE + 12 * n + 8 * nd}
            write_json(meta_path(output), meta)

UNKNOWN = "unknown"
"""The tokenizer fingerprint a ``--force`` merge records when its inputs do not vouch for one tokenizer."""


def compatible_meta(corpora: list, force: bool = False) -> dict | None:
    """Check that ``corpora`` (objects with ``prefix``, ``dtype``, ``meta``) can be concatenated and return the merged corpus's sidecar (None: no input has one).

    Every input must have the same dtype. Tokenizers: inputs that name the same fingerprint merge as that
    tokenizer. An input without a fingerprint (no ``.meta.json``, or one without ``tokenizer``) cannot
    vouch for its ids, so mixing it with fingerprinted inputs, or mixing different fingerprints, is
    refused unless ``force``; a forced merge records the tokenizer as ``"unknown"`` (never the first
    input's, which would make ``verify``/``inspect``/training trust ids from another vocabulary).

    Raises:
        UserError: differing dtypes; differing or missing tokenizers without ``force``.
    """
    prefixes = [c.prefix for c in corpora]
    dtypes = {c.dtype.name for c in corpora}
    if len(dtypes) > 1:
        raise UserError(f"cannot merge corpora of different dtypes ({', '.join(sorted(dtypes))}): {', '.join(prefixes)}")
    fingerprints = {c.prefix: ((c.meta or {}).get("tokenizer") or {}).get("fingerprint") for c in corpora}
    known = set(fingerprints.values()) - {None}
    unvouched = [p for p, fp in fingerprints.items() if fp in (None, UNKNOWN)]
    if len(known - {UNKNOWN}) > 1 and not force:
        raise UserError(
            f"inputs were built with different tokenizers (fingerprints {', '.join(sorted(known))}); "
            "merging them mixes vocabularies (use --force if they are compatible)"
        )
    if unvouched and known - {UNKNOWN} and not force:
        raise UserError(
            f"{unvouched[0]}: no tokenizer fingerprint (no .meta.json, or a merge of unknown tokenizers), while "
            f"other inputs were built with {', '.join(sorted(known - {UNKNOWN}))}; its ids may come from another "
            "vocabulary (rebuild it with `build`, or pass --force to merge anyway: the output's tokenizer is "
            "then recorded as unknown)"
        )
    metas = [c.meta for c in corpora if c.meta]
    if not metas:
        return None
    meta = {k: metas[0][k] for k in ("format", "splitter", "sequence") if k in metas[0]}
    for key in ("splitter", "sequence"):
        if len({m.get(key) for m in metas}) > 1 or len(metas) < len(corpora):
            meta[key] = UNKNOWN
    if len(known) == 1 and not unvouched:
        meta["tokenizer"] = metas[0]["tokenizer"]
    else:  # forced: record what the inputs said, claim none of it
        meta["tokenizer"] = {"fingerprint": UNKNOWN, "merged_fingerprints": sorted(map(str, known))}
    return meta


def merge(inputs: list[str | os.PathLike], output: str | os.PathLike, force: bool = False) -> IndexedCorpus:
    """Concatenate the documents of ``inputs`` (each a prefix or a sharded prefix), in order, into ``output``.

    Args:
        inputs: corpus prefixes.
        output: output prefix.
        force: merge even if the inputs do not vouch for one tokenizer (the output's is then "unknown").

    Returns:
        the merged corpus.

    Raises:
        UserError: differing dtypes or tokenizers (see ``compatible_meta``), output among the inputs.
    """
    prefixes = [p for prefix in inputs for p in resolve_prefixes(prefix)]
    output = os.fspath(output)
    checked = _check(prefixes, output, force)
    meta = compatible_meta(checked, force)
    if meta is not None:
        meta["merged_from"] = prefixes
    _stream(checked, output, meta)
    # Not validated again: written just now from validated inputs, and a validating open would page the
    # whole new .idx into this process's RSS.
    return IndexedCorpus(output, validate=False)
