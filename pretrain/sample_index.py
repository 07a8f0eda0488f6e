"""The sample index of a corpus (which runs of sentences make the MLM samples), built once and memory-mapped.

Rows are ``[first, end, target]``: sentences ``[first, end)`` of one corpus and the token count aimed at (see
``pretrain.samples`` for the two styles). This module builds them at corpus scale:

- **Compiled, streaming.** A numba kernel walks the sentences as a state machine over windows of the ``.idx``
  (read with plain file reads, so that nothing of the corpus stays resident), and each window's rows are
  appended to the ``.npy`` as they are made. Peak memory is one window, whatever the corpus size. The rows are
  exactly those of the former per-sample Python loop (kept in ``tests/pretrain/test_sample_index.py`` as the
  reference): same arithmetic on lengths, and BERT's short-target draws come from the same
  ``np.random.default_rng([seed, 1])`` stream (numba's ``Generator`` support shares NumPy's bit generator and
  its ``random``/``integers`` algorithms), so caches written before stay valid (``INDEX_VERSION`` 1).
- **One builder per file.** Like Megatron's ``--data-cache-path`` builds (rank 0 builds, a barrier, then the
  other ranks load: ``megatron/core/datasets/blended_megatron_dataset_builder.py``, ``build_generic_dataset``,
  NVIDIA/Megatron-LM@00caa53), a missing cache is built by one process while the others wait. Here the
  rendezvous is an ``flock`` on ``PATH.lock`` rather than a barrier, because ``build_data`` runs before the
  process group exists, and a lock also serialises separate jobs (or ``prepare-data`` and a job) that share a
  corpus. The first process to take the lock builds; the others block, then find the finished file.
- **Mapped, never copied.** Every process ``np.load(..., mmap_mode="r")``s the file; ranks on a node share
  its pages through the page cache.

The ``.npy`` is written through a temporary file and renamed (``data_tools.atomic``); its header is written
first for an upper bound on the row count and rewritten in place at the end (NumPy pads headers so that the
first dimension can grow in place), then the file is truncated to the rows made.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path
from data_tools.errors import UserError
from data_tools.indexed import HEADER_SIZE, bin_path, idx_path, read_header

log = logging.getLogger(__name__)

INDEX_VERSION = 1
STYLES = ("bert", "roberta")
_STREAM_INDEX = 1  # the sample-structure RNG stream of pretrain.samples
# Sentences per window: 1 M sentences is 4 MB of lengths (+ up to 24 MB of rows made from them).
WINDOW = 1 << 20
DOC_WINDOW = 1 << 18


def say(message: str) -> None:
    """One progress line on stderr, tagged with the launcher's rank when there is one."""
    rank = os.environ.get("RANK")
    print(f"[rank {rank}] {message}" if rank is not None else message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- the .idx


class IdxWindows:
    """Windows of a corpus' sentence lengths and document indices, read from the ``.idx`` with file reads.

    ``IndexedCorpus`` memory-maps the whole index; every page a full pass touches would stay in the process's
    resident set. The offsets follow the layout documented in ``data_tools.indexed`` (header, int32 lengths,
    int64 pointers, int64 document indices); ``tests/pretrain/test_sample_index.py`` checks them against
    ``IndexedCorpus``.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.path = idx_path(prefix)
        header = read_header(self.path)
        self.n = int(header["sequence_count"])
        self.num_documents = int(header["document_count"]) - 1
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()/context manager

    def __enter__(self) -> IdxWindows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _read(self, offset: int, dtype: str, count: int) -> np.ndarray:
        self._fh.seek(offset)
        out = np.fromfile(self._fh, dtype=dtype, count=count)
        if len(out) != count:
            raise UserError(f"{self.path}: truncated index (expected {count} more values at byte {offset})")
        return out

    def lengths(self, start: int, stop: int) -> np.ndarray:
        """Sentence lengths ``[start, stop)`` (int32)."""
        return self._read(HEADER_SIZE + 4 * start, "<i4", stop - start)

    def documents(self, start: int, stop: int) -> np.ndarray:
        """Document-index entries ``[start, stop)`` (int64; entry ``d`` is where document ``d`` starts)."""
        return self._read(HEADER_SIZE + 12 * self.n + 8 * start, "<i8", stop - start)


def corpus_signature(prefix: str | os.PathLike) -> np.ndarray:
    """``[sequences, documents, tokens]`` of a corpus, from its header and its ``.bin``'s size (O(1)).

    Writers (this project's and Megatron's) store tokens back to back, so the ``.bin`` holds exactly the
    tokens; the signature is the same row 0 that earlier versions computed by summing every length.
    """
    header = read_header(idx_path(prefix))
    bin_file = bin_path(prefix)
    try:
        tokens = bin_file.stat().st_size // header["dtype"].itemsize
    except OSError as exc:
        raise UserError(f"{bin_file}: cannot read ({exc.strerror})") from None
    return np.array([header["sequence_count"], header["document_count"] - 1, tokens], dtype=np.int64)


# ---------------------------------------------------------------------------------------------- kernels


def _roberta_kernel(lengths, extra, capacity, final, out):  # pragma: no cover - compiled
    """Greedy packing over one window: ``extra[k]`` is 1 where a document (other than the first) starts.

    A run takes sentences while their tokens plus separators fit ``capacity`` (at least one sentence);
    empty runs make no row. Returns (rows written, window position of the first run not finished).
    """
    m = len(lengths)
    i = 0
    r = 0
    while i < m:
        j = i
        acc = 0
        while j < m and acc + lengths[j] + extra[j] <= capacity:
            acc += lengths[j] + extra[j]
            j += 1
        if j == m and not final:
            break  # the run may go on past the window
        if j == i:
            j = i + 1  # one sentence longer than a sample
        tokens = 0
        for k in range(i, j):
            tokens += lengths[k]
        if tokens > 0:
            out[r, 0] = i
            out[r, 1] = j
            out[r, 2] = capacity
            r += 1
        i = j
    return r, i


def _bert_kernel(lengths, base, docs, docs_final, rng, short_seq_prob, max_tokens, i, pending, out):  # pragma: no cover
    """Runs within documents over one window of sentences ``[base, base + len(lengths))`` and of document
    entries ``docs`` (global sentence numbers, ``docs[0]`` the current document's start).

    Each run draws its target from ``rng`` exactly as the reference loop (``random()``, then ``integers(2,
    max_tokens + 1)`` with probability ``short_seq_prob``); a target drawn for a run the window cannot finish
    is handed back as ``pending`` so that the next window uses it instead of drawing again.
    Returns (rows, documents done, next sentence, pending target or -1, finished).
    """
    stop = base + len(lengths)
    d = 0
    r = 0
    while True:
        if d + 1 >= len(docs):
            return r, d, i, pending, docs_final
        end = docs[d + 1]
        if i >= end:
            d += 1
            continue
        if pending >= 0:
            target = pending
        else:
            target = max_tokens
            if rng.random() < short_seq_prob:
                target = rng.integers(2, max_tokens + 1)
        j = i
        acc = 0
        while j < end and acc < target and j < stop:
            acc += lengths[j - base]
            j += 1
        if j == stop and j < end and acc < target:
            return r, d, i, target, False  # the run goes on past the window
        if acc > 0:
            out[r, 0] = i
            out[r, 1] = j
            out[r, 2] = target
            r += 1
        i = j
        pending = -1


@functools.cache
def _compiled(kernel: Callable) -> Callable:
    """``kernel`` compiled by numba (loaded from its on-disk cache after the first time). numba is imported
    here, not at module import: a run whose indices are all cached never pays for it.

    Without numba (a platform it has no wheel for, an image that lacks it) the same kernel runs as plain
    Python: the same index, bit for bit (tests/pretrain/test_sample_index.py compares them), only slower.
    """
    try:
        import numba
    except ImportError:
        print("warning: numba is not installed; the sample index is built in plain Python (same result, "
              "slower): pip install numba", file=sys.stderr, flush=True)
        return kernel
    return numba.njit(cache=True, nogil=True)(kernel)


def _roberta_rows(idx: IdxWindows, max_seq_len: int, window: int) -> Iterator[np.ndarray]:
    n, num_docs, capacity = idx.n, idx.num_documents, max_seq_len - 2
    doc_window = DOC_WINDOW
    i, e = 0, 1  # e: first document entry (after the first document's) at or after sentence i
    while i < n:
        stop = min(n, i + window)
        docs = idx.documents(e, min(e + doc_window, num_docs)) if e < num_docs else np.zeros(0, np.int64)
        if e + doc_window < num_docs and len(docs):
            stop = min(stop, int(docs[-1]) + 1)  # document starts beyond are unknown
        lengths = idx.lengths(i, stop)
        extra = np.zeros(stop - i, dtype=np.int32)
        inside = docs[(docs >= i) & (docs < stop)]
        extra[inside - i] = 1
        out = np.empty((stop - i, 3), dtype=np.int64)
        rows, done = _compiled(_roberta_kernel)(lengths, extra, capacity, stop == n, out)
        if done == 0:
            window, doc_window = 2 * window, 2 * doc_window  # one run longer than the window
            continue
        out[:rows, :2] += i
        yield out[:rows]
        i += done
        e += int(np.searchsorted(docs, i, side="left"))


def _bert_rows(idx: IdxWindows, max_seq_len: int, seed: int, short_seq_prob: float,
               window: int) -> Iterator[np.ndarray]:
    n, num_docs, max_tokens = idx.n, idx.num_documents, max_seq_len - 3
    rng = np.random.default_rng([seed, _STREAM_INDEX])
    d, i, pending = 0, 0, -1
    while d < num_docs:
        stop = min(n, i + window)
        last = min(d + DOC_WINDOW, num_docs)
        docs = idx.documents(d, last + 1)
        lengths = idx.lengths(i, stop)
        out = np.empty((stop - i, 3), dtype=np.int64)
        rows, done, i_next, pending, finished = _compiled(_bert_kernel)(
            lengths, i, docs, last == num_docs, rng, short_seq_prob, max_tokens, i, pending, out)
        if rows:
            yield out[:rows]
        if finished:
            return
        if rows == 0 and done == 0 and i_next == i and stop < n:
            window *= 2  # one run longer than the window
        d, i = d + done, i_next


def iter_sample_rows(prefix: str | os.PathLike, style: str, max_seq_len: int, seed: int = 1234,
                     short_seq_prob: float = 0.1, window: int = WINDOW) -> Iterator[np.ndarray]:
    """The sample index of a corpus, as int64 ``[k, 3]`` blocks in order (bounded memory).

    Args:
        prefix: corpus prefix (one ``.bin``/``.idx`` pair).
        style: "bert" (runs within documents, random short targets) or "roberta" (greedy packing).
        max_seq_len: sequence length including special tokens.
        seed: seeds BERT's short-target draws.
        short_seq_prob: BERT: probability of a random shorter target length.
        window: sentences per window (memory bound; results do not depend on it).
    """
    if style not in STYLES:
        raise UserError(f"data.style: got {style!r}, expected one of {', '.join(STYLES)}")
    with IdxWindows(prefix) as idx:
        if style == "roberta":
            yield from _roberta_rows(idx, max_seq_len, window)
        else:
            yield from _bert_rows(idx, max_seq_len, seed, short_seq_prob, window)


def build_sample_index(corpus, style: str, max_seq_len: int, seed: int = 1234, short_seq_prob: float = 0.1,
                       window: int = WINDOW) -> np.ndarray:
    """The whole sample index in memory (int64 ``[N, 3]``: first, end, target); :func:`write_sample_index`
    streams it to a file instead. ``corpus`` is an ``IndexedCorpus`` or a prefix."""
    prefix = getattr(corpus, "prefix", corpus)
    blocks = list(iter_sample_rows(prefix, style, max_seq_len, seed, short_seq_prob, window))
    return np.concatenate(blocks) if blocks else np.zeros((0, 3), dtype=np.int64)


# ---------------------------------------------------------------------------------------------- the .npy


class NpyRowWriter:
    """Append int64 rows of ``ncols`` to an open ``.npy`` whose final row count is only known at the end.

    The header is written for ``max_rows`` first; :meth:`finish` rewrites it in place for the rows written
    and truncates the file. Appending with ``write`` (not through a memory map) keeps nothing resident.
    """

    def __init__(self, fh, ncols: int, max_rows: int):
        self.fh, self.ncols, self.rows = fh, ncols, 0
        np.lib.format.write_array_header_1_0(fh, self._header(max_rows))
        self.data_start = fh.tell()

    def _header(self, rows: int) -> dict:
        return {"descr": np.dtype("<i8").str, "fortran_order": False, "shape": (rows, self.ncols)}

    def write(self, block: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(block, dtype="<i8").tobytes())
        self.rows += len(block)

    def finish(self) -> None:
        self.fh.seek(0)
        np.lib.format.write_array_header_1_0(self.fh, self._header(self.rows))
        if self.fh.tell() != self.data_start:  # NumPy pads headers so the first dimension can grow in place
            raise RuntimeError(f"{self.fh.name}: .npy header changed size when rewritten")
        self.fh.truncate(self.data_start + 8 * self.ncols * self.rows)


def write_sample_index(prefix: str | os.PathLike, path: Path, style: str, max_seq_len: int, seed: int,
                       short_seq_prob: float, window: int = WINDOW) -> int:
    """Stream the sample index of ``prefix`` to ``path`` (atomically), row 0 the corpus signature.

    Returns:
        The number of samples.
    """
    signature = corpus_signature(prefix)
    t0 = time.perf_counter()
    last_report = t0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer = NpyRowWriter(fh, 3, int(signature[0]) + 1)
        writer.write(signature[None, :])
        for block in iter_sample_rows(prefix, style, max_seq_len, seed, short_seq_prob, window):
            writer.write(block)
            now = time.perf_counter()
            if now - last_report > 10:
                done = int(block[-1, 1]) if len(block) else 0
                say(f"{path.name}: {writer.rows - 1:,} samples, {done:,}/{int(signature[0]):,} sentences "
                    f"({(writer.rows - 1) / (now - t0):,.0f} samples/s)")
                last_report = now
        writer.finish()
    return writer.rows - 1


# ---------------------------------------------------------------------------------------------- the cache


def index_key(style: str, max_seq_len: int, seed: int, short_seq_prob: float) -> str:
    """The part of a cache file's name that says which index it holds."""
    if style == "roberta":  # greedy packing: no randomness
        params = f"v{INDEX_VERSION}-roberta-L{max_seq_len}"
    else:
        params = f"v{INDEX_VERSION}-bert-L{max_seq_len}-s{seed}-p{short_seq_prob!r}"
    return f"mlm_{style}_L{max_seq_len}_{hashlib.sha1(params.encode()).hexdigest()[:10]}"


def index_path(prefix: str | os.PathLike, style: str, max_seq_len: int, seed: int, short_seq_prob: float,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the index of ``prefix`` is cached: ``PREFIX.<key>.npy``, or that name in ``cache_dir``."""
    base = Path(prefix)
    name = f"{base.name}.{index_key(style, max_seq_len, seed, short_seq_prob)}.npy"
    return Path(cache_dir) / name if cache_dir else base.with_name(name)


def _load(path: Path, check: Callable[[np.ndarray], bool]) -> np.ndarray | None:
    """The cached array at ``path``, memory-mapped, if it exists and passes ``check``; else None."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable cache (%s); rebuilding", path, exc)
        return None
    if check(arr):
        return arr
    log.warning("%s: cache is for another version of its inputs; rebuilding", path)
    return None


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``PATH.lock`` (created if needed; never removed, so that no two
    processes can lock different files of one name). Yields whether this process had to wait for it."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            say(f"{path.name}: waiting for another process that is building it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        except OSError as exc:  # a file system without locks (some NFS mounts): builders race, renames stay atomic
            say(f"{lock}: cannot lock ({exc.strerror}); building without waiting for other processes")
            waited = False
        yield waited
    finally:
        os.close(fd)


def cached_array(path: Path, check: Callable[[np.ndarray], bool], build: Callable[[Path], None],
                 build_in_memory: Callable[[], np.ndarray], what: str) -> tuple[np.ndarray, str]:
    """Map the array cached at ``path``; if missing or stale, one process builds it while others wait.

    Args:
        path: the cache file.
        check: whether a loaded array is current.
        build: writes the array to ``path`` (atomically).
        build_in_memory: the array itself, when ``path`` cannot be written.
        what: the array, for messages.

    Returns:
        ``(array, how)`` with ``how`` one of "cached", "waited" (another process built it), "built",
        "memory" (not cacheable: every process that needs it builds its own copy).
    """
    arr = _load(path, check)
    if arr is not None:
        return arr, "cached"
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            waited = stack.enter_context(build_lock(path))
        except OSError as exc:
            say(f"{path}: cannot cache {what} ({exc.strerror}); building it in memory (set data.cache_dir to a "
                "writable directory)")
            return build_in_memory(), "memory"
        arr = _load(path, check)
        if arr is not None:
            say(f"{path.name}: built by another process; mapping it")
            return arr, "waited" if waited else "cached"
        say(f"{path.name}: building {what}")
        t0 = time.perf_counter()
        try:
            build(path)
        except (OSError, UserError) as exc:
            say(f"{path}: cannot cache {what} ({exc}); building it in memory")
            return build_in_memory(), "memory"
        arr = _load(path, check)
        if arr is None:
            raise RuntimeError(f"{path}: freshly built {what} does not load")
        say(f"{path.name}: built {what} in {time.perf_counter() - t0:.1f}s ({len(arr):,} rows)")
        return arr, "built"
    raise AssertionError("unreachable")


def load_or_build_index(corpus, style: str, max_seq_len: int, seed: int = 1234, short_seq_prob: float = 0.1,
                        cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The sample index of ``corpus`` (an ``IndexedCorpus`` or a prefix), memory-mapped from its cache.

    The cache (``PREFIX.<key>.npy`` beside the corpus, or in ``cache_dir``) is built when missing or when its
    row 0 no longer matches the corpus (rebuilt corpus): by exactly one process, the others waiting for it.
    """
    prefix = getattr(corpus, "prefix", corpus)
    path = index_path(prefix, style, max_seq_len, seed, short_seq_prob, cache_dir)
    signature = corpus_signature(prefix)

    def current(arr: np.ndarray) -> bool:
        return arr.ndim == 2 and arr.shape[1] == 3 and len(arr) >= 1 and np.array_equal(arr[0], signature)

    def in_memory() -> np.ndarray:
        return np.concatenate([signature[None, :],
                               build_sample_index(prefix, style, max_seq_len, seed, short_seq_prob)])

    table, _ = cached_array(
        path, current,
        lambda p: write_sample_index(prefix, p, style, max_seq_len, seed, short_seq_prob),
        in_memory, "the sample index")
    return table[1:]
