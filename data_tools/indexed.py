"""Megatron's MMIDIDX corpus format: the only module that knows its byte layout.

A corpus is a pair ``PREFIX.bin`` (all token ids, back to back) and ``PREFIX.idx``::

    b"MMIDIDX\\x00\\x00"        9 bytes magic
    <Q version                  always 1
    <B dtype code               Megatron's DType: uint8=1 int8=2 int16=3 int32=4 int64=5 float64=6 float32=7 uint16=8
    <Q sequence count  n
    <Q document-index count     = number of documents + 1
    int32[n]   sequence lengths (tokens)
    int64[n]   sequence byte pointers into .bin
    int64[d+1] document indices (sequence index where each document starts; first 0, last n)
    (int8[n]   sequence modes, only in Megatron's multimodal files; ignored here)

This mirrors ``megatron/core/datasets/indexed_dataset.py`` (megatron-core 0.16) so that files written here
open in ``IndexedDataset`` and files written by ``IndexedDatasetBuilder`` open here; the tests check both.
Unlike Megatron's reader (which asserts), every defect is a ``UserError`` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.atomic import atomic_path, check_output_file, ensure_parent, write_error, write_json
from data_tools.errors import UserError, reading
from data_tools.jsonfile import parse_json

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = 9 + 8 + 1 + 8 + 8  # = 34

# Megatron's DType enum codes (indexed_dataset.DType).
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF_DTYPE: dict[np.dtype, int] = {np.dtype(t): c for c, t in DTYPE_CODES.items()}

# Chunk size for whole-index checks: bounds temporary memory on corpora with 10^8+ sequences.
_CHECK_CHUNK = 1 << 20
_HASH_BLOCK = 1 << 22


def idx_path(prefix: str | os.PathLike) -> Path:
    """Return ``PREFIX.idx``."""
    return Path(f"{os.fspath(prefix)}.idx")


def bin_path(prefix: str | os.PathLike) -> Path:
    """Return ``PREFIX.bin``."""
    return Path(f"{os.fspath(prefix)}.bin")


def meta_path(prefix: str | os.PathLike) -> Path:
    """Return ``PREFIX.meta.json`` (the sidecar written by ``build``)."""
    return Path(f"{os.fspath(prefix)}.meta.json")


def shard_prefix(prefix: str | os.PathLike, shard: int) -> str:
    """Return the prefix of shard ``shard`` of ``prefix`` (``PREFIX_00003``)."""
    return f"{os.fspath(prefix)}_{shard:05d}"


def dtype_for_vocab(vocab_size: int) -> type[np.number]:
    """Smallest token dtype for ``vocab_size`` ids: uint16 when every id fits, int32 otherwise.

    Megatron's ``DType.optimal_dtype`` uses uint16 below 65500; we do the same so both tools agree.
    """
    return np.uint16 if vocab_size < 65500 else np.int32


def parse_dtype(value: str | np.dtype | type) -> np.dtype:
    """Turn ``"uint16"``/``np.int32``/... into a numpy dtype that MMIDIDX can store, or raise UserError."""
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt is None or dt not in CODE_OF_DTYPE:
        valid = ", ".join(sorted(np.dtype(t).name for t in DTYPE_CODES.values()))
        raise UserError(f"unsupported token dtype {value!r}: expected one of {valid}")
    return dt


class IndexedCorpus:
    """Random access to a Megatron MMIDIDX corpus (``PREFIX.bin`` + ``PREFIX.idx``) through numpy memmaps.

    One sequence is one sentence's token ids (no special tokens); documents are runs of sequences.

    Args:
        prefix: path without extension.
        validate: check every length and pointer against the ``.bin`` on open (O(n), chunked). Without it
            only the header, sizes and the document index end points are checked.

    Raises:
        UserError: missing, truncated or corrupt files, naming the file and what was expected.
    """

    def __init__(self, prefix: str | os.PathLike, validate: bool = True):
        self.prefix = os.fspath(prefix)
        self._validate = validate
        self._open()

    # Pickling (DataLoader workers) re-opens the memmaps instead of copying them.
    def __getstate__(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "validate": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.prefix = state["prefix"]
        self._validate = state["validate"]
        self._open()

    def _open(self) -> None:
        ipath, bpath = idx_path(self.prefix), bin_path(self.prefix)
        header = read_header(ipath)
        self.dtype: np.dtype = header["dtype"]
        n, ndoc = header["sequence_count"], header["document_count"]
        index = np.memmap(ipath, dtype=np.uint8, mode="r") if header["file_size"] else None
        off = HEADER_SIZE
        self.sequence_lengths: np.ndarray = np.frombuffer(index, np.int32, n, off) if n else _empty(np.int32)
        off += 4 * n
        self.sequence_pointers: np.ndarray = np.frombuffer(index, np.int64, n, off) if n else _empty(np.int64)
        off += 8 * n
        self.document_indices: np.ndarray = np.frombuffer(index, np.int64, ndoc, off)
        self._index_map = index
        try:
            bin_size = bpath.stat().st_size
        except FileNotFoundError:
            raise UserError(f"{bpath}: data file missing (its index {ipath} exists)") from None
        except OSError as exc:
            raise UserError(f"{bpath}: cannot read ({exc.strerror})") from None
        self.bin_size = bin_size
        self._check_documents(ipath)
        self._check_sizes(bpath, bin_size, full=self._validate)
        itemsize = self.dtype.itemsize
        if bin_size >= itemsize:
            self._bin = np.memmap(bpath, dtype=self.dtype, mode="r", shape=(bin_size // itemsize,))
        else:  # numpy cannot memmap an empty file
            self._bin = _empty(self.dtype)
        self._meta: dict | None | bool = False  # False = not read yet

    def _check_documents(self, ipath: Path) -> None:
        d, n = self.document_indices, len(self.sequence_lengths)
        if d[0] != 0 or d[-1] != n:
            raise UserError(
                f"{ipath}: corrupt index: document indices must run from 0 to the sequence count {n}, "
                f"found {int(d[0])}..{int(d[-1])}"
            )
        for start in range(0, len(d) - 1, _CHECK_CHUNK):
            chunk = np.asarray(d[start : start + _CHECK_CHUNK + 1])
            if np.any(np.diff(chunk) < 0):
                raise UserError(f"{ipath}: corrupt index: document indices decrease near document {start}")

    def _check_sizes(self, bpath: Path, bin_size: int, full: bool) -> None:
        lengths, pointers, n = self.sequence_lengths, self.sequence_pointers, len(self.sequence_lengths)
        itemsize = self.dtype.itemsize
        if n == 0:
            return
        end = int(pointers[-1]) + int(lengths[-1]) * itemsize
        if full:
            expected_start = 0
            for start in range(0, n, _CHECK_CHUNK):
                ln = np.asarray(lengths[start : start + _CHECK_CHUNK], dtype=np.int64)
                ptr = np.asarray(pointers[start : start + _CHECK_CHUNK])
                if np.any(ln < 0):
                    bad = start + int(np.argmax(ln < 0))
                    raise UserError(f"{idx_path(self.prefix)}: corrupt index: negative length at sequence {bad}")
                expect = expected_start + np.concatenate(([0], np.cumsum(ln[:-1] * itemsize)))
                if not np.array_equal(ptr, expect):
                    bad = start + int(np.argmax(ptr != expect))
                    raise UserError(
                        f"{idx_path(self.prefix)}: corrupt index: pointer of sequence {bad} is "
                        f"{int(pointers[bad])}, expected {int(expect[bad - start])} (pointers must follow lengths)"
                    )
                expected_start = int(expect[-1] + ln[-1] * itemsize)
            end = expected_start
        elif lengths[-1] < 0 or pointers[-1] < 0:
            raise UserError(f"{idx_path(self.prefix)}: corrupt index: negative length or pointer")
        if end > bin_size:
            raise UserError(
                f"{bpath}: data file is {bin_size} bytes but its index needs {end} "
                "(truncated .bin or mismatched .idx)"
            )

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Return sequence ``i``'s token ids as a read-only memmap view (no copy)."""
        return self.get(i)

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Return tokens ``[offset, offset+length)`` of sequence ``i`` (all of it by default), no copy.

        Args:
            i: sequence index (negative counts from the end).
            offset: first token within the sequence.
            length: number of tokens; ``None`` for the rest of the sequence.

        Returns:
            a 1-D array view of dtype ``self.dtype``.
        """
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {self.prefix} with {n} sequences")
        i %= n
        seq_len = int(self.sequence_lengths[i])
        if length is None:
            length = seq_len - offset
        if offset < 0 or length < 0 or offset + length > seq_len:
            raise IndexError(f"tokens [{offset}, {offset + length}) out of range for sequence {i} of length {seq_len}")
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize + offset
        return self._bin[start : start + length]

    @property
    def num_documents(self) -> int:
        """Number of documents."""
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        """Total number of tokens."""
        return int(self.sequence_lengths.sum(dtype=np.int64))

    def document_range(self, d: int) -> tuple[int, int]:
        """Return the ``[first, end)`` sequence indices of document ``d``."""
        nd = self.num_documents
        if not -nd <= d < nd:
            raise IndexError(f"document {d} out of range for {self.prefix} with {nd} documents")
        d %= nd
        return int(self.document_indices[d]), int(self.document_indices[d + 1])

    def document(self, d: int) -> list[np.ndarray]:
        """Return document ``d`` as a list of its sentences' token arrays (views, no copy)."""
        first, end = self.document_range(d)
        return [self.get(i) for i in range(first, end)]

    @property
    def meta(self) -> dict | None:
        """Contents of ``PREFIX.meta.json`` written by ``build``, or ``None`` if there is none."""
        if self._meta is False:
            self._meta = read_meta(self.prefix)
        return self._meta  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"IndexedCorpus({self.prefix!r}, dtype={self.dtype.name}, sequences={len(self)}, "
            f"documents={self.num_documents})"
        )


def _empty(dtype: Any) -> np.ndarray:
    arr = np.zeros(0, dtype=dtype)
    arr.flags.writeable = False
    return arr


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check an ``.idx`` header against the file's size.

    Returns:
        dict with ``dtype``, ``dtype_code``, ``version``, ``sequence_count``, ``document_count``,
        ``file_size`` and ``expected_size`` (bytes the arrays need, without optional modes).

    Raises:
        UserError: naming the file and what was expected.
    """
    path = Path(path)
    with reading(path, "index file", "an MMIDIDX .idx file"):
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(HEADER_SIZE)
    if head[:9] != MAGIC[: len(head[:9])]:
        raise UserError(f"{path}: not a Megatron MMIDIDX index (bad magic {head[:9]!r}, expected {MAGIC!r})")
    if len(head) < HEADER_SIZE:
        raise UserError(f"{path}: truncated index: {size} bytes, a header needs {HEADER_SIZE}")
    version = struct.unpack_from("<Q", head, 9)[0]
    if version != VERSION:
        raise UserError(f"{path}: unsupported MMIDIDX version {version}, expected {VERSION}")
    code = head[17]
    if code not in DTYPE_CODES:
        raise UserError(f"{path}: unknown dtype code {code} (expected one of {sorted(DTYPE_CODES)})")
    n, ndoc = struct.unpack_from("<QQ", head, 18)
    if ndoc < 1:
        raise UserError(f"{path}: corrupt index: document-index count is 0, expected at least 1")
    expected = HEADER_SIZE + 12 * n + 8 * ndoc
    # Megatron's multimodal files append one int8 mode per sequence.
    if size not in (expected, expected + n):
        raise UserError(
            f"{path}: index is {size} bytes but its header ({n} sequences, {ndoc - 1} documents) "
            f"needs {expected} (truncated or corrupt .idx)"
        )
    if n >= 2**31:
        raise UserError(f"{path}: corrupt index: {n} sequences exceeds what int32 lengths allow")
    return {
        "dtype": np.dtype(DTYPE_CODES[code]),
        "dtype_code": code,
        "version": version,
        "sequence_count": n,
        "document_count": ndoc,
        "file_size": size,
        "expected_size": expected,
    }


def read_meta(prefix: str | os.PathLike) -> dict | None:
    """Return the parsed ``PREFIX.meta.json``, ``None`` if absent; UserError if it is not a JSON object."""
    path = meta_path(prefix)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read corpus metadata ({exc})") from None
    meta = parse_json(text, path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object")
    return meta


def max_token_id(corpus: IndexedCorpus) -> int:
    """The largest token id in ``corpus``: ``max_token_id`` from its ``.meta.json`` (written at build time),
    else computed once by a bounded-memory scan of the ``.bin`` (-1 for an empty corpus)."""
    recorded = (corpus.meta or {}).get("max_token_id")
    if isinstance(recorded, int):
        return recorded
    data = np.memmap(bin_path(corpus.prefix), dtype=corpus.dtype, mode="r", shape=(corpus.num_tokens,)) \
        if corpus.num_tokens else np.zeros(0, corpus.dtype)
    top, step = -1, 1 << 24
    for start in range(0, data.size, step):
        top = max(top, int(data[start:start + step].max()))
    return top


def resolve_prefixes(prefix: str | os.PathLike) -> list[str]:
    """Expand a corpus prefix to the prefixes holding data.

    Returns:
        ``[prefix]`` if ``prefix.idx`` exists, else the sorted shard prefixes ``prefix_00000``, ``prefix_00001``…

    Raises:
        UserError: if neither exists.
    """
    prefix = os.fspath(prefix)
    if idx_path(prefix).is_file():
        return [prefix]
    parent, name = os.path.split(prefix)
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        entries = []
    pattern = re.compile(re.escape(name) + r"_\d{5}\.idx")
    shards = [os.path.join(parent, e[:-4]) for e in entries if pattern.fullmatch(e)]
    if not shards:
        raise UserError(f"{prefix}: no corpus found (expected {prefix}.idx or shards {prefix}_00000.idx, …)")
    return sorted(shards)


class IndexedCorpusWriter:
    """Write an MMIDIDX corpus: sequences are appended to a temporary ``.bin``; on a clean exit the ``.bin``
    is renamed into place, then the optional ``.meta.json``, and the ``.idx`` last, so a pair that looks
    complete never exists before the end. An old ``.idx`` under the same prefix is removed first, so a
    killed rewrite cannot leave a stale index next to a new ``.bin``.

    Args:
        prefix: output path without extension (parent directories are created).
        dtype: token dtype (``np.uint16``, ``np.int32``, ``"uint16"``, …).
        meta: if given, written to ``PREFIX.meta.json`` with ``checksums`` (sha256 of ``.bin``/``.idx``) and
            ``sequences``/``documents``/``tokens``/``dtype`` filled in.

    Use as a context manager::

        with IndexedCorpusWriter("corpus/wiki", np.uint16) as w:
            w.add_sequence([5, 6, 7]); w.add_sequence([8]); w.end_document()
    """

    def __init__(self, prefix: str | os.PathLike, dtype: Any = np.int32, meta: dict | None = None):
        self.prefix = os.fspath(prefix)
        self.dtype = parse_dtype(dtype)
        self.meta = meta
        info = np.iinfo(self.dtype) if self.dtype.kind in "iu" else None
        self._max = info.max if info else None
        self._min = info.min if info else None
        self._lengths: list[np.ndarray] = []
        self._doc_ends: list[int] = [0]
        self._count = 0
        self._tokens = 0
        self._max_id = -1  # largest token id written: training checks it against the vocabulary on load
        self._hash = hashlib.sha256()
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> IndexedCorpusWriter:
        ensure_parent(idx_path(self.prefix))
        self._stack = contextlib.ExitStack()
        for path in (bin_path(self.prefix), idx_path(self.prefix), meta_path(self.prefix)):
            check_output_file(path)
        try:
            self._bin_tmp = self._stack.enter_context(atomic_path(bin_path(self.prefix)))
            self._fh = self._stack.enter_context(open(self._bin_tmp, "wb"))
        except OSError as exc:
            self._stack.close()
            raise write_error(bin_path(self.prefix), exc) from None
        return self

    def add_sequence(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one sequence (one sentence's token ids)."""
        arr = np.asarray(tokens)
        self._write(arr, (arr.size,))

    def add_document(self, tokens: np.ndarray, lengths: Sequence[int] | np.ndarray) -> None:
        """Append a whole document: its sentences' tokens concatenated, and their lengths; ends the document."""
        self._write(np.asarray(tokens), lengths)
        self.end_document()

    def append_corpus(self, corpus: IndexedCorpus) -> None:
        """Append every document of ``corpus`` (same dtype), copying its ``.bin`` in blocks."""
        if corpus.dtype != self.dtype:
            raise UserError(f"{corpus.prefix}: dtype {corpus.dtype.name} differs from the output's {self.dtype.name}")
        if self._doc_ends[-1] != self._count:
            self.end_document()
        end = int(corpus.num_tokens) * self.dtype.itemsize
        with open(bin_path(corpus.prefix), "rb") as src:
            remaining = end
            while remaining:
                block = src.read(min(_HASH_BLOCK, remaining))
                if not block:
                    raise UserError(f"{bin_path(corpus.prefix)}: shorter than its index says")
                try:
                    self._fh.write(block)
                except OSError as exc:  # e.g. disk full: the temporary .bin is removed on the way out
                    raise write_error(bin_path(self.prefix), exc) from None
                self._hash.update(block)
                usable = len(block) - len(block) % self.dtype.itemsize
                if usable:
                    self._max_id = max(self._max_id, int(np.frombuffer(block[:usable], self.dtype).max()))
                remaining -= len(block)
        self._lengths.append(np.asarray(corpus.sequence_lengths, dtype=np.int32))
        self._doc_ends.extend((np.asarray(corpus.document_indices[1:]) + self._count).tolist())
        self._count += len(corpus)
        self._tokens += int(corpus.num_tokens)

    def _write(self, arr: np.ndarray, lengths: Iterable[int]) -> None:
        if self._stack is None:
            raise RuntimeError("IndexedCorpusWriter must be used as a context manager")
        if arr.size and self._max is not None:
            lo, hi = arr.min(), arr.max()
            self._max_id = max(self._max_id, int(hi))
            if hi > self._max or lo < self._min:
                raise UserError(
                    f"{bin_path(self.prefix)}: token id {int(hi if hi > self._max else lo)} does not fit the "
                    f"corpus dtype {self.dtype.name} (range {self._min}..{self._max}); use a wider --dtype"
                )
        data = arr.astype(self.dtype, copy=False).tobytes(order="C")
        try:
            self._fh.write(data)
        except OSError as exc:  # e.g. disk full: the temporary .bin is removed on the way out
            raise write_error(bin_path(self.prefix), exc) from None
        self._hash.update(data)
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if int(lengths.sum()) != arr.size:
            raise ValueError("lengths do not add up to the number of tokens")
        self._lengths.append(lengths.astype(np.int32))
        self._count += len(lengths)
        self._tokens += arr.size

    def end_document(self) -> None:
        """Close the current document (the sequences added since the last call)."""
        self._doc_ends.append(self._count)

    @property
    def sequences(self) -> int:
        """Sequences written so far."""
        return self._count

    @property
    def documents(self) -> int:
        """Documents closed so far."""
        return len(self._doc_ends) - 1

    @property
    def tokens(self) -> int:
        """Tokens written so far."""
        return self._tokens

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        if exc_type is not None:
            stack.__exit__(exc_type, exc, tb)  # removes the temporary .bin
            return
        try:
            self._finish(stack)
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise

    def _finish(self, stack: contextlib.ExitStack) -> None:
        if self._doc_ends[-1] != self._count:  # sequences after the last end_document form a document
            self.end_document()
        try:
            self._fh.flush()
        except OSError as exc:
            raise write_error(bin_path(self.prefix), exc) from None
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        docs = np.asarray(self._doc_ends, np.int64)
        idx_bytes = b"".join(
            [
                MAGIC,
                struct.pack("<Q", VERSION),
                struct.pack("<B", CODE_OF_DTYPE[self.dtype]),
                struct.pack("<Q", len(lengths)),
                struct.pack("<Q", len(docs)),
                lengths.tobytes(),
                pointers.tobytes(),
                docs.tobytes(),
            ]
        )
        ipath = idx_path(self.prefix)
        # A stale .idx beside the new .bin could pass for a complete pair if we died between the renames.
        with contextlib.suppress(FileNotFoundError):
            ipath.unlink()
        try:
            stack.close()  # fsync + rename the .bin
            with atomic_path(ipath) as itmp:
                itmp.write_bytes(idx_bytes)
                if self.meta is not None:
                    meta = dict(self.meta)
                    meta.update(
                        dtype=self.dtype.name,
                        documents=len(docs) - 1,
                        sequences=len(lengths),
                        sentences=len(lengths),  # INTERFACES.md name: one sequence per sentence
                        tokens=self._tokens,
                        max_token_id=self._max_id,  # -1: no tokens
                        checksums={
                            "bin_sha256": self._hash.hexdigest(),
                            "idx_sha256": hashlib.sha256(idx_bytes).hexdigest(),
                            "bin_bytes": self._tokens * self.dtype.itemsize,
                            "idx_bytes": len(idx_bytes),
                        },
                    )
                    write_json(meta_path(self.prefix), meta)
        except OSError as exc:
            raise write_error(ipath, exc) from None

