"""MMIDIDX reader/writer: round trip, header checks, clear errors on damaged files, fuzzing."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_tools.errors import UserError
from data_tools.indexed import (
    HEADER_SIZE,
    IndexedCorpus,
    IndexedCorpusWriter,
    dtype_for_vocab,
    resolve_prefixes,
)


def make_docs(seed: int = 0, n_docs: int = 15, high: int = 30000):
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(0, high, rng.integers(0, 9)) for _ in range(rng.integers(1, 5))] for _ in range(n_docs)
    ]


def write(prefix, docs, dtype=np.uint16, meta=None):
    with IndexedCorpusWriter(prefix, dtype, meta=meta) as w:
        for doc in docs:
            for sent in doc:
                w.add_sequence(sent)
            w.end_document()
    return prefix


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_round_trip_by_sequence_and_document(tmp_path, dtype):
    docs = make_docs()
    c = IndexedCorpus(write(tmp_path / "c", docs, dtype))
    flat = [s for d in docs for s in d]
    assert len(c) == len(flat) and c.num_documents == len(docs) and c.dtype == np.dtype(dtype)
    for i, sent in enumerate(flat):
        assert c[i].tolist() == sent.tolist()
    for d, doc in enumerate(docs):
        assert [s.tolist() for s in c.document(d)] == [s.tolist() for s in doc]
    assert c.document_indices[0] == 0 and c.document_indices[-1] == len(flat)
    assert c.num_tokens == sum(s.size for s in flat)
    assert c[-1].tolist() == flat[-1].tolist()
    with pytest.raises(IndexError):
        c[len(flat)]
    # no copy: a view over the memmap, read-only
    assert not c[0].flags.writeable
    k = next(i for i, s in enumerate(flat) if len(s) >= 3)
    assert c.get(k, offset=1, length=2).tolist() == flat[k][1:3].tolist()
    with pytest.raises(IndexError):
        c.get(k, offset=1, length=len(flat[k]))


def test_header_layout_matches_megatron_spec(tmp_path):
    write(tmp_path / "c", [[np.array([1, 2, 3])], [np.array([4])]], np.uint16)
    raw = (tmp_path / "c.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack_from("<Q", raw, 9)[0] == 1
    assert raw[17] == 8  # Megatron's DType.uint16
    assert struct.unpack_from("<QQ", raw, 18) == (2, 3)
    lengths = np.frombuffer(raw, np.int32, 2, HEADER_SIZE)
    pointers = np.frombuffer(raw, np.int64, 2, HEADER_SIZE + 8)
    docs = np.frombuffer(raw, np.int64, 3, HEADER_SIZE + 24)
    assert lengths.tolist() == [3, 1] and pointers.tolist() == [0, 6] and docs.tolist() == [0, 1, 2]
    assert (tmp_path / "c.bin").read_bytes() == np.array([1, 2, 3, 4], np.uint16).tobytes()


def test_meta_sidecar_and_pickle(tmp_path):
    c = IndexedCorpus(write(tmp_path / "c", make_docs(), meta={"tokenizer": {"kind": "wordpiece"}}))
    assert c.meta["tokenizer"]["kind"] == "wordpiece" and c.meta["sequences"] == len(c)
    assert len(c.meta["checksums"]["bin_sha256"]) == 64
    c2 = pickle.loads(pickle.dumps(c))
    assert c2[3].tolist() == c[3].tolist()
    assert IndexedCorpus(write(tmp_path / "d", make_docs())).meta is None


def test_empty_corpus(tmp_path):
    with IndexedCorpusWriter(tmp_path / "e", np.uint16):
        pass
    c = IndexedCorpus(tmp_path / "e")
    assert len(c) == 0 and c.num_documents == 0


def test_dtype_choice_and_overflow(tmp_path):
    assert dtype_for_vocab(30522) == np.uint16 and dtype_for_vocab(250002) == np.int32
    with pytest.raises(UserError, match="does not fit the corpus dtype uint16"):
        write(tmp_path / "o", [[np.array([70000])]], np.uint16)
    assert not (tmp_path / "o.bin").exists() and not (tmp_path / "o.idx").exists()
    assert list(tmp_path.iterdir()) == []  # no temp files left either


def test_failed_rewrite_keeps_previous_corpus(tmp_path):
    write(tmp_path / "c", make_docs(1))
    before = (tmp_path / "c.idx").read_bytes(), (tmp_path / "c.bin").read_bytes()
    with pytest.raises(RuntimeError), IndexedCorpusWriter(tmp_path / "c", np.uint16) as w:
        w.add_sequence([1, 2])
        raise RuntimeError("killed")
    assert ((tmp_path / "c.idx").read_bytes(), (tmp_path / "c.bin").read_bytes()) == before


def test_resolve_prefixes(tmp_path):
    write(tmp_path / "one", make_docs())
    assert resolve_prefixes(tmp_path / "one") == [str(tmp_path / "one")]
    for k in (1, 0, 2):
        write(tmp_path / f"wiki_{k:05d}", make_docs(k))
    write(tmp_path / "wiki_extra_00000", make_docs())
    assert resolve_prefixes(tmp_path / "wiki") == [str(tmp_path / f"wiki_{k:05d}") for k in range(3)]
    with pytest.raises(UserError, match="no corpus found"):
        resolve_prefixes(tmp_path / "missing")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda i, b: (b"XXXXXXXXX" + i[9:], b), "bad magic"),
        (lambda i, b: (i[:9] + struct.pack("<Q", 2) + i[17:], b), "unsupported MMIDIDX version 2"),
        (lambda i, b: (i[:17] + bytes([99]) + i[18:], b), "unknown dtype code 99"),
        (lambda i, b: (i[:20], b), "truncated index"),
        (lambda i, b: (i[:-5], b), "truncated or corrupt .idx"),
        (lambda i, b: (i, b[:-2]), "truncated .bin"),
        (lambda i, b: (b"", b), "bad magic|truncated"),
    ],
)
def test_damaged_files_raise_clear_errors(tmp_path, damage, message):
    write(tmp_path / "c", make_docs())
    idx, bin_ = (tmp_path / "c.idx").read_bytes(), (tmp_path / "c.bin").read_bytes()
    new_idx, new_bin = damage(idx, bin_)
    (tmp_path / "c.idx").write_bytes(new_idx)
    (tmp_path / "c.bin").write_bytes(new_bin)
    with pytest.raises(UserError, match=message) as err:
        IndexedCorpus(tmp_path / "c")
    assert str(tmp_path / "c.") in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(UserError, match="index file not found"):
        IndexedCorpus(tmp_path / "nothing")
    write(tmp_path / "c", make_docs())
    (tmp_path / "c.bin").unlink()
    with pytest.raises(UserError, match="data file missing"):
        IndexedCorpus(tmp_path / "c")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_idx_reader_only_raises_user_error(tmp_path, data):
    """Random byte edits, truncations and extensions of a valid .idx: open and read must either work
    (with every sequence inside the .bin) or raise UserError; nothing else may escape."""
    if not (tmp_path / "base.idx").exists():
        write(tmp_path / "base", make_docs(3, n_docs=4))
    idx = bytearray((tmp_path / "base.idx").read_bytes())
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(idx) - 1))
        idx[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(idx) + 16))
    idx = bytes(idx[:cut]) + data.draw(st.binary(max_size=16)) if cut <= len(idx) else bytes(idx)
    (tmp_path / "f.idx").write_bytes(idx)
    (tmp_path / "f.bin").write_bytes((tmp_path / "base.bin").read_bytes())
    try:
        c = IndexedCorpus(tmp_path / "f")
    except UserError as exc:
        assert "f.idx" in str(exc) or "f.bin" in str(exc)
        return
    total = sum(len(c[i]) for i in range(len(c)))
    assert total == int(c.sequence_lengths.sum())
    for d in range(c.num_documents):
        c.document(d)


def test_unreadable_inputs_are_one_line_naming_the_file(tmp_path):
    # One wording (data_tools.errors.reading) for an index and an input document file (and pretrain's configs).
    from data_tools.sources import open_binary

    (tmp_path / "d.idx").mkdir()
    cases = [(lambda: IndexedCorpus(tmp_path / "d"), f"{tmp_path / 'd.idx'}: is a directory, expected an MMIDIDX"),
             (lambda: open_binary(tmp_path / "none.jsonl"), f"{tmp_path / 'none.jsonl'}: input file not found"),
             (lambda: open_binary(tmp_path), f"{tmp_path}: is a directory, expected a file")]
    for call, message in cases:
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value).startswith(message)
