"""build: round trip against the tokenizer, determinism across --workers, shards, dtypes, sidecar, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.build import build
from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, resolve_prefixes
from data_tools.sentences import split_sentences
from data_tools.tokenizer import load_tokenizer


def texts_of(path):
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("tok_fixture", ["wordpiece_dir", "sentencepiece_dir"])
def test_round_trip_sentence_by_sentence(tmp_path, small_docs, tok_fixture, request):
    """decode(build(docs)) gives back the tokenizer's own encoding of every sentence of every document."""
    tok_dir = request.getfixturevalue(tok_fixture)
    tok = load_tokenizer(tok_dir)
    result = build([small_docs], tok_dir, tmp_path / "c", progress=False)
    corpus = IndexedCorpus(tmp_path / "c")
    texts = texts_of(small_docs)
    assert corpus.num_documents == len(texts) == result.documents
    assert corpus.dtype == np.uint16
    for d, text in enumerate(texts):
        expected = [ids for ids in tok.encode_batch(split_sentences(text)) if ids]
        got = corpus.document(d)
        assert [s.tolist() for s in got] == expected
        assert [tok.decode(s) for s in got] == [tok.decode(e) for e in expected]
    assert result.tokens == corpus.num_tokens and result.sentences == len(corpus)
    meta = corpus.meta
    assert meta["tokenizer"] == {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint,
                                 "path": str(tok.path)}
    assert (meta["documents"], meta["sentences"], meta["tokens"]) == (result.documents, result.sentences, result.tokens)


def test_output_independent_of_workers_and_reruns(tmp_path, small_docs, wordpiece_dir):
    build([small_docs], wordpiece_dir, tmp_path / "w1", workers=1, shards=3, progress=False)
    build([small_docs], wordpiece_dir, tmp_path / "w2", workers=2, shards=3, progress=False)
    for k in range(3):
        for ext in ("bin", "idx"):
            one = (tmp_path / f"w1_{k:05d}.{ext}").read_bytes()
            assert one == (tmp_path / f"w2_{k:05d}.{ext}").read_bytes()
    meta1 = json.loads((tmp_path / "w1_00000.meta.json").read_text())
    meta2 = json.loads((tmp_path / "w2_00000.meta.json").read_text())
    assert meta1["checksums"] == meta2["checksums"]


def test_shards_round_robin_and_shard_size(tmp_path, small_docs, wordpiece_dir):
    whole = IndexedCorpus(build([small_docs], wordpiece_dir, tmp_path / "one", progress=False).prefixes[0])
    r = build([small_docs], wordpiece_dir, tmp_path / "rr", shards=2, progress=False)
    assert r.prefixes == resolve_prefixes(tmp_path / "rr") == [str(tmp_path / "rr_00000"), str(tmp_path / "rr_00001")]
    shards = [IndexedCorpus(p) for p in r.prefixes]
    for d in range(whole.num_documents):
        want = [s.tolist() for s in whole.document(d)]
        assert [s.tolist() for s in shards[d % 2].document(d // 2)] == want
    r = build([small_docs], wordpiece_dir, tmp_path / "sz", shard_size=10, progress=False)
    assert [IndexedCorpus(p).num_documents for p in r.prefixes] == [10, whole.num_documents - 10]
    # A rebuild with fewer shards, or unsharded, removes what the old layout left behind.
    build([small_docs], wordpiece_dir, tmp_path / "rr", progress=False)
    assert resolve_prefixes(tmp_path / "rr") == [str(tmp_path / "rr")]
    assert not list(tmp_path.glob("rr_*"))


def test_int32_and_dtype_too_small(tmp_path, small_docs, wordpiece_dir):
    r = build([small_docs], wordpiece_dir, tmp_path / "i", dtype="int32", progress=False)
    c16 = IndexedCorpus(build([small_docs], wordpiece_dir, tmp_path / "u", progress=False).prefixes[0])
    c32 = IndexedCorpus(r.prefixes[0])
    assert c32.dtype == np.int32 and all(np.array_equal(c32[i], c16[i]) for i in range(len(c16)))
    big = tmp_path / "big_vocab.txt"
    big.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(70000)]))
    with pytest.raises(UserError, match="vocabulary of 70,005 ids is too large"):
        build([small_docs], big, tmp_path / "x", dtype="uint16", progress=False)
    assert IndexedCorpus(build([small_docs], big, tmp_path / "auto", progress=False).prefixes[0]).dtype == np.int32


def test_skip_bad_and_errors(tmp_path, wordpiece_dir):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "Good one. Second."}\n{"txt": "wrong key"}\n{"text": "Another good one."}\n')
    with pytest.raises(UserError, match=r"docs.jsonl:2: missing key 'text'"):
        build([src], wordpiece_dir, tmp_path / "c", progress=False)
    assert not list(tmp_path.glob("c*")) and not list(tmp_path.glob(".c*"))
    r = build([src], wordpiece_dir, tmp_path / "c", skip_bad=True, progress=False)
    assert r.documents == 2 and r.skipped == 1 and "1 bad document(s) skipped" in r.summary()
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "   "}\n')
    with pytest.raises(UserError, match="no document produced any token"):
        build([blank], wordpiece_dir, tmp_path / "b", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create output directory"):
        build([src], wordpiece_dir, tmp_path / "file" / "sub" / "c", progress=False)
    with pytest.raises(UserError, match="--shards and --shard-size are exclusive"):
        build([src], wordpiece_dir, tmp_path / "c", shards=2, shard_size=3)


def test_no_split_keeps_one_sequence_per_document(tmp_path, small_docs, wordpiece_dir):
    c = IndexedCorpus(build([small_docs], wordpiece_dir, tmp_path / "d", split_sentences=False, progress=False).prefixes[0])
    assert len(c) == c.num_documents == len(texts_of(small_docs))
    assert c.meta["sequence"] == "document"


@pytest.mark.slow
def test_build_straight_from_the_dump_equals_build_from_extracted_jsonl(tmp_path, wiki_dump, wiki_extract,
                                                                       wordpiece_dir):
    """Wiki pages are cleaned inside the build workers; the corpus is the one extract-wiki + build makes."""
    direct = build([wiki_dump], wordpiece_dir, tmp_path / "direct", workers=2, progress=False)
    via_jsonl = build([wiki_extract[0]], wordpiece_dir, tmp_path / "jsonl", progress=False)
    assert direct.documents == via_jsonl.documents == wiki_extract[1].documents
    for ext in ("bin", "idx"):
        assert (tmp_path / f"direct.{ext}").read_bytes() == (tmp_path / f"jsonl.{ext}").read_bytes()
