"""merge refuses inputs that do not vouch for one tokenizer; verify checks every field of the sidecar."""

from __future__ import annotations

import json

import pytest

from data_tools.build import build
from data_tools.errors import UserError
from data_tools.indexed import meta_path
from data_tools.inspect import inspect_corpus
from data_tools.merge import merge
from data_tools.verify import verify


@pytest.fixture
def two_vocabularies(tmp_path, small_docs, wordpiece_dir, sentencepiece_dir):
    """``wp`` (WordPiece, with its sidecar) and ``sp`` (SentencePiece ids, sidecar deleted: vouches for nothing)."""
    build([small_docs], wordpiece_dir, tmp_path / "wp", progress=False)
    build([small_docs], sentencepiece_dir, tmp_path / "sp", dtype="uint16", progress=False)
    meta_path(tmp_path / "sp").unlink()
    return tmp_path / "wp", tmp_path / "sp"


def test_merge_refuses_an_input_without_fingerprint(tmp_path, two_vocabularies):
    wp, sp = two_vocabularies
    for order in ([wp, sp], [sp, wp]):
        with pytest.raises(UserError, match=r"sp: no tokenizer fingerprint .* --force"):
            merge(order, tmp_path / "m")
        assert not (tmp_path / "m.idx").exists() and not (tmp_path / "m.bin").exists()


def test_forced_merge_records_unknown_tokenizer(tmp_path, two_vocabularies, wordpiece_dir):
    wp, sp = two_vocabularies
    merge([wp, sp], tmp_path / "m", force=True)
    meta = json.loads(meta_path(tmp_path / "m").read_text())
    assert meta["tokenizer"]["fingerprint"] == "unknown"
    assert "vocab_size" not in meta["tokenizer"] and "path" not in meta["tokenizer"]
    report = verify(tmp_path / "m")[0]
    assert report["tokenizer"] == "unknown" and report["checksums"] == "ok"
    # nothing is decoded with a tokenizer the corpus does not vouch for, unless the user names one
    assert "pass --tokenizer" in inspect_corpus(tmp_path / "m", sentence=0)
    assert "sentence 0" in inspect_corpus(tmp_path / "m", sentence=0, tokenizer=wordpiece_dir)


def test_merge_of_one_tokenizer_keeps_it(tmp_path, small_docs, wordpiece_dir):
    build([small_docs], wordpiece_dir, tmp_path / "a", progress=False)
    build([small_docs], wordpiece_dir, tmp_path / "b", shards=2, progress=False)
    merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    a = json.loads(meta_path(tmp_path / "a").read_text())
    assert json.loads(meta_path(tmp_path / "m").read_text())["tokenizer"] == a["tokenizer"]


@pytest.mark.parametrize("field, value, message", [
    ("checksums.bin_bytes", 3, "says checksums.bin_bytes=3"),
    ("checksums.idx_bytes", 3, "says checksums.idx_bytes=3"),
    ("sentences", 1, "says sentences=1"),
    ("format", "other", "says format='other'"),
    ("num_shards", 3, "says num_shards=3"),
    ("shard", 0, "says shard=0 but the file is shard 1"),
])
def test_verify_checks_every_meta_field(tmp_path, small_docs, wordpiece_dir, field, value, message):
    build([small_docs], wordpiece_dir, tmp_path / "c", shards=2, progress=False)
    path = meta_path(tmp_path / "c_00001")
    meta = json.loads(path.read_text())
    node, leaf = (meta["checksums"], field.split(".")[1]) if "." in field else (meta, field)
    node[leaf] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=message):
        verify(tmp_path / "c", checksums=False)
