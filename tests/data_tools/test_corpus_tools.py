"""verify, merge and inspect on built corpora, including the damage verify must catch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.build import build
from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter
from data_tools.inspect import inspect_corpus
from data_tools.merge import merge
from data_tools.tokenizer import load_tokenizer
from data_tools.verify import verify


@pytest.fixture
def corpus(tmp_path, small_docs, wordpiece_dir):
    build([small_docs], wordpiece_dir, tmp_path / "c", shards=2, progress=False)
    return tmp_path / "c"


def test_verify_accepts_a_fresh_build(corpus):
    reports = verify(corpus)
    assert [r["checksums"] for r in reports] == ["ok", "ok"]
    assert sum(r["documents"] for r in reports) == 15


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.with_suffix(".bin").write_bytes(p.with_suffix(".bin").read_bytes() + b"\0\0"), "trailing data"),
        (lambda p: p.with_suffix(".bin").write_bytes(p.with_suffix(".bin").read_bytes()[:-2]), "truncated .bin"),
        (lambda p: _flip_last_token(p), "checksum mismatch"),
        (lambda p: _edit_meta(p, tokens=1), "says tokens=1"),
        (lambda p: _edit_meta(p, tokenizer={"vocab_size": 10, "fingerprint": "x"}), r"token id \d+ >= the tokenizer's"),
    ],
)
def test_verify_catches_damage(corpus, damage, message):
    shard = corpus.parent / "c_00001.idx"
    damage(shard)
    with pytest.raises(UserError, match=message) as err:
        verify(corpus)
    assert "c_00001" in str(err.value)


def _flip_last_token(idx):
    b = bytearray(idx.with_suffix(".bin").read_bytes())
    b[-2] ^= 1
    idx.with_suffix(".bin").write_bytes(bytes(b))


def _edit_meta(idx, **changes):
    path = idx.parent / "c_00001.meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_verify_shards_must_agree(tmp_path, small_docs, wordpiece_dir, sentencepiece_dir):
    build([small_docs], wordpiece_dir, tmp_path / "a", shards=2, progress=False)
    build([small_docs], sentencepiece_dir, tmp_path / "b", progress=False)
    for ext in ("bin", "idx", "meta.json"):
        (tmp_path / f"a_00001.{ext}").write_bytes((tmp_path / f"b.{ext}").read_bytes())
    with pytest.raises(UserError, match="shards disagree on tokenizer"):
        verify(tmp_path / "a")


def test_merge(tmp_path, corpus, small_docs, wordpiece_dir, sentencepiece_dir):
    whole = build([small_docs], wordpiece_dir, tmp_path / "whole", progress=False)
    merged = merge([corpus, tmp_path / "whole"], tmp_path / "m")
    parts = [IndexedCorpus(corpus.parent / f"c_0000{k}") for k in range(2)] + [IndexedCorpus(whole.prefixes[0])]
    expect = [s.tolist() for p in parts for d in range(p.num_documents) for s in p.document(d)]
    assert [merged[i].tolist() for i in range(len(merged))] == expect
    assert merged.num_documents == sum(p.num_documents for p in parts)
    assert verify(tmp_path / "m")[0]["checksums"] == "ok"
    build([small_docs], sentencepiece_dir, tmp_path / "sp", progress=False)
    with pytest.raises(UserError, match="different tokenizers"):
        merge([corpus, tmp_path / "sp"], tmp_path / "bad")
    with pytest.raises(UserError, match="the output is one of the inputs"):
        merge([tmp_path / "whole", tmp_path / "sp"], tmp_path / "whole")
    with IndexedCorpusWriter(tmp_path / "i32", np.int32) as w:
        w.add_sequence([1, 2])
    with pytest.raises(UserError, match="different dtypes"):
        merge([tmp_path / "whole", tmp_path / "i32"], tmp_path / "bad")


def test_inspect_counts_histogram_and_decoding(corpus, small_docs, wordpiece_dir):
    tok = load_tokenizer(wordpiece_dir)
    report = inspect_corpus(corpus, document=0, sentence=1)
    first_doc = json.loads(small_docs.read_text().splitlines()[0])["text"]
    assert "documents 15" in report and "2 file(s)" in report and "sentence length histogram" in report
    assert tok.decode(tok.encode(first_doc.split(". ")[0])) in report
    c0 = IndexedCorpus(corpus.parent / "c_00000")
    assert f"sentence 1 ({c0.prefix} #1): {tok.decode(c0[1])}" in report
    # numbering runs through the shards in order: shard 0 holds documents 0-7 (8 of 15, round robin)
    assert "document 8 (" + str(corpus.parent / "c_00001") + " #0)" in inspect_corpus(corpus, document=8)
    with pytest.raises(UserError, match="--document 99: out of range"):
        inspect_corpus(corpus, document=99)


def test_inspect_without_tokenizer_shows_ids(tmp_path):
    with IndexedCorpusWriter(tmp_path / "raw", np.uint16) as w:
        w.add_sequence([7, 8, 9])
    report = inspect_corpus(tmp_path / "raw", sentence=0)
    assert "sentence 0" in report and "7 8 9" in report and "pass --tokenizer" in report
