"""The compiled, streaming sample index: the same rows as the former Python loop, bounded windows, the .npy
written as it goes, and one builder per cache file (the others wait on its lock, then map the file)."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter
from pretrain import sample_index
from pretrain.sample_index import (
    IdxWindows,
    NpyRowWriter,
    build_sample_index,
    corpus_signature,
    index_path,
    load_or_build_index,
    write_sample_index,
)

ROOT = Path(__file__).resolve().parents[2]


def reference_index(corpus: IndexedCorpus, style: str, max_seq_len: int, seed: int = 1234,
                    short_seq_prob: float = 0.1) -> np.ndarray:
    """The per-sample Python loop that ``build_sample_index`` replaced (commit 3f7c31e), kept verbatim in
    substance as the definition of the rows."""
    lengths = np.asarray(corpus.sequence_lengths, dtype=np.int64)
    cum = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum[1:])
    docs = np.asarray(corpus.document_indices, dtype=np.int64)
    rows: list[tuple[int, int, int]] = []
    if style == "roberta":
        capacity = max_seq_len - 2
        eff = lengths.copy()
        starts = docs[1:-1][docs[1:-1] < len(lengths)]
        eff[starts] += 1
        ecum = np.zeros(len(eff) + 1, dtype=np.int64)
        np.cumsum(eff, out=ecum[1:])
        i, n = 0, len(lengths)
        while i < n:
            j = int(np.searchsorted(ecum, ecum[i] + capacity, side="right")) - 1
            j = min(max(j, i + 1), n)
            if cum[j] > cum[i]:
                rows.append((i, j, capacity))
            i = j
    else:
        max_tokens = max_seq_len - 3
        rng = np.random.default_rng([seed, 1])
        for d in range(len(docs) - 1):
            i, end = int(docs[d]), int(docs[d + 1])
            while i < end:
                target = max_tokens
                if rng.random() < short_seq_prob:
                    target = int(rng.integers(2, max_tokens + 1))
                j = int(np.searchsorted(cum, cum[i] + target, side="left"))
                j = min(max(j, i + 1), end)
                if cum[j] > cum[i]:
                    rows.append((i, j, target))
                i = j
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def write_corpus(prefix: str, docs: list[list[int]]) -> IndexedCorpus:
    """A corpus whose documents have these sentence lengths (tokens are arbitrary)."""
    with IndexedCorpusWriter(prefix, np.uint16) as w:
        for doc in docs:
            for length in doc:
                w.add_sequence(np.full(length, 7, dtype=np.uint16))
            w.end_document()
    return IndexedCorpus(prefix)


# Documents of sentence lengths: empty documents, empty sentences, sentences longer than a sample.
corpora = st.lists(st.lists(st.integers(0, 70), max_size=12), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=corpora, style=st.sampled_from(["bert", "roberta"]), max_seq_len=st.integers(8, 64),
       seed=st.integers(0, 2**32 - 1), short=st.sampled_from([0.0, 0.1, 0.5, 1.0]), window=st.integers(1, 9))
def test_same_rows_as_the_python_loop(tmp_path_factory, docs, style, max_seq_len, seed, short, window):
    corpus = write_corpus(str(tmp_path_factory.mktemp("c") / "c"), docs)
    expected = reference_index(corpus, style, max_seq_len, seed, short)
    # Tiny windows force every restart path (runs and documents cut by a window edge, pending targets).
    got = build_sample_index(corpus, style, max_seq_len, seed, short, window=window)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(build_sample_index(corpus, style, max_seq_len, seed, short), expected)


def test_same_rows_on_a_larger_corpus_with_small_windows(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, 40, rng.integers(0, 30))) for _ in range(3000)]
    corpus = write_corpus(str(tmp_path / "c"), docs)
    monkeypatch.setattr(sample_index, "DOC_WINDOW", 37)  # document windows cut too
    for style, short in (("bert", 0.1), ("bert", 0.9), ("roberta", 0.1)):
        expected = reference_index(corpus, style, 64, 3, short)
        assert len(expected) > 500
        np.testing.assert_array_equal(build_sample_index(corpus, style, 64, 3, short, window=1000), expected)


def test_without_numba_the_same_rows_in_plain_python(tmp_path, monkeypatch, capfd):
    rng = np.random.default_rng(1)
    docs = [list(rng.integers(0, 40, rng.integers(0, 12))) for _ in range(300)]
    corpus = write_corpus(str(tmp_path / "c"), docs)
    compiled = {style: build_sample_index(corpus, style, 64, 5, 0.3, window=50) for style in ("bert", "roberta")}
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    sample_index._compiled.cache_clear()
    try:
        for style, expected in compiled.items():
            np.testing.assert_array_equal(build_sample_index(corpus, style, 64, 5, 0.3, window=50), expected)
            np.testing.assert_array_equal(reference_index(corpus, style, 64, 5, 0.3), expected)
    finally:
        sample_index._compiled.cache_clear()
    assert capfd.readouterr().err.count("warning: numba is not installed") == 2  # once per kernel


def test_windows_read_what_the_corpus_maps(tmp_path):
    corpus = write_corpus(str(tmp_path / "c"), [[3, 0, 5], [], [9], [1, 2]])
    with IdxWindows(corpus.prefix) as idx:
        assert np.array_equal(idx.lengths(0, len(corpus)), corpus.sequence_lengths)
        assert np.array_equal(idx.lengths(2, 4), corpus.sequence_lengths[2:4])
        assert np.array_equal(idx.documents(0, corpus.num_documents + 1), corpus.document_indices)
        assert np.array_equal(idx.documents(1, 3), corpus.document_indices[1:3])
    assert list(corpus_signature(corpus.prefix)) == [len(corpus), corpus.num_documents, corpus.num_tokens]


def test_row_writer_rewrites_the_header_in_place(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as fh:
        w = NpyRowWriter(fh, 3, max_rows=10**12)
        w.write(np.arange(6).reshape(2, 3))
        w.write(np.arange(6, 9).reshape(1, 3))
        w.finish()
    assert np.array_equal(np.load(path), np.arange(9).reshape(3, 3))


def test_streamed_file_equals_the_in_memory_index(tmp_path):
    rng = np.random.default_rng(1)
    corpus = write_corpus(str(tmp_path / "c"), [list(rng.integers(1, 30, 8)) for _ in range(200)])
    path = tmp_path / "idx.npy"
    count = write_sample_index(corpus.prefix, path, "bert", 32, 5, 0.1, window=50)
    table = np.load(path)
    assert count == len(table) - 1
    assert np.array_equal(table[0], corpus_signature(corpus.prefix))
    assert np.array_equal(table[1:], reference_index(corpus, "bert", 32, 5, 0.1))
    assert sorted(os.listdir(tmp_path)) == ["c.bin", "c.idx", "idx.npy"]  # no temporary left


def test_the_index_is_memory_mapped_not_copied(tmp_path):
    corpus = write_corpus(str(tmp_path / "c"), [[10, 20, 30]] * 50)
    first = load_or_build_index(corpus, "roberta", 32)
    again = load_or_build_index(corpus, "roberta", 32)
    for index in (first, again):
        assert isinstance(index, np.memmap) and not index.flags.writeable
        assert Path(index.filename) == index_path(corpus.prefix, "roberta", 32, 1234, 0.1)
    assert np.array_equal(again, reference_index(corpus, "roberta", 32))


def test_unwritable_cache_dir_falls_back_to_memory(tmp_path, capfd):
    corpus = write_corpus(str(tmp_path / "c"), [[10, 20, 30]] * 5)
    (tmp_path / "file").write_text("")
    index = load_or_build_index(corpus, "bert", 32, cache_dir=tmp_path / "file" / "cache")  # cannot exist
    assert np.array_equal(index, reference_index(corpus, "bert", 32))
    assert "cannot cache the sample index" in capfd.readouterr().err


BUILDER = textwrap.dedent("""
    import sys
    from pretrain.sample_index import load_or_build_index
    index = load_or_build_index(sys.argv[1], "bert", 32, seed=3)
    print("rows", len(index))
""")


def test_one_process_builds_while_the_other_waits(tmp_path):
    """Two processes start while the cache's lock is held (as by a third process mid-build): both wait;
    after the lock is released exactly one builds and the other maps its file."""
    rng = np.random.default_rng(2)
    corpus = write_corpus(str(tmp_path / "c"), [list(rng.integers(1, 30, 8)) for _ in range(300)])
    path = index_path(corpus.prefix, "bert", 32, 3, 0.1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    procs = []
    try:
        for rank in (0, 1):
            err = open(tmp_path / f"err{rank}", "w+")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen([sys.executable, "-c", BUILDER, corpus.prefix], text=True,
                                           stdout=subprocess.PIPE, stderr=err, env={**env, "RANK": str(rank)}),
                          err))
        for rank, (proc, _) in enumerate(procs):  # both are blocked on the lock: wait for their "waiting" line
            while "waiting for another process" not in (log := (tmp_path / f"err{rank}").read_text()):
                assert proc.poll() is None, log
                time.sleep(0.05)
    finally:
        os.close(fd)  # releases the lock
    outs = []
    for proc, err in procs:
        out, _ = proc.communicate(timeout=120)
        err.seek(0)
        outs.append((proc.returncode, out, err.read()))
        err.close()
    assert all(code == 0 for code, _, _ in outs), outs
    expected = reference_index(corpus, "bert", 32, 3, 0.1)
    assert {out.strip() for _, out, _ in outs} == {f"rows {len(expected)}"}
    logs = [e for _, _, e in outs]
    assert sum("building the sample index" in e for e in logs) == 1, logs
    assert sum("built by another process; mapping it" in e for e in logs) == 1, logs
    assert np.array_equal(np.load(path)[1:], expected)


def test_a_file_system_without_locks_still_gets_a_cache(tmp_path, monkeypatch, capfd):
    corpus = write_corpus(str(tmp_path / "c"), [[10, 20, 30]] * 5)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    index = load_or_build_index(corpus, "bert", 32)
    assert isinstance(index, np.memmap) and np.array_equal(index, reference_index(corpus, "bert", 32))
    assert "cannot lock" in capfd.readouterr().err
