"""MLM samples over real indexed corpora: cached index, BERT pairs/NSP, RoBERTa packing, dynamic masking."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pretrain_tiny import build_corpus

import pretrain.corpora as corpora
import pretrain.sample_index as sample_index
import pretrain.samples as samples
from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter
from pretrain.masking import MaskingConfig
from pretrain.samples import BlendedDataset, MLMDataset, collate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def wp(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("wp"), "wordpiece")


def _original(s):
    return np.where(s["mlm_labels"] != -100, s["mlm_labels"], s["input_ids"])


def test_index_is_cached_beside_the_corpus_and_reused(wp, tmp_path, monkeypatch):
    tok, prefix = wp
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=64, seed=5)
    cached = [f for f in os.listdir(os.path.dirname(prefix)) if f.endswith(".npy")]
    assert len(cached) == 1 and cached[0].startswith("corpus_wordpiece.mlm_bert_L64")
    assert not [f for f in os.listdir(os.path.dirname(prefix)) if f.endswith(".tmp")]

    def no_build(*a, **k):
        raise AssertionError("index rebuilt although cached")

    monkeypatch.setattr(sample_index, "write_sample_index", no_build)
    monkeypatch.setattr(sample_index, "build_sample_index", no_build)
    again = MLMDataset.from_prefixes(prefix, tok, max_seq_len=64, seed=5)
    assert len(again) == len(ds)
    for i in (0, 7, len(ds) - 1):  # deterministic random access, any order, any instance
        for k in ds.get(i, 2):
            assert np.array_equal(ds.get(i, 2)[k], again.get(i, 2)[k])


def test_a_rebuilt_corpus_invalidates_the_cache(tmp_path, wp):
    tok, _ = wp
    prefix = str(tmp_path / "c")
    for n in (30, 20):
        with IndexedCorpusWriter(prefix, np.uint16) as w:
            for i in range(n):
                w.add_sequence(np.arange(5, 5 + 10 + i % 7))
                if i % 3 == 2:
                    w.end_document()
            w.end_document()
        ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=32, style="roberta")
        total = sum(int(ds.get(i)["attention_mask"].sum()) - 2 for i in range(len(ds)))
        assert total >= IndexedCorpus(prefix).num_tokens  # every token is in a sample (+ doc separators)


def test_bert_samples_are_sentence_runs_split_into_two_segments(wp):
    tok, prefix = wp
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=128, seed=1)
    corpus = ds.corpora[0]
    two_segments = 0
    for i in range(len(ds)):
        s = ds.get(i)
        n = int(s["attention_mask"].sum())
        assert s["attention_mask"][:n].all() and not s["attention_mask"][n:].any()
        orig = _original(s)[:n]
        assert orig[0] == tok.cls_id and orig[-1] == tok.sep_id
        seps = np.flatnonzero(orig == tok.sep_id)
        _, (first, end, _) = ds.locate(i)
        text = np.concatenate([corpus[k] for k in range(first, end)])
        body = np.delete(orig, [0, *seps])
        if len(text) <= 125:  # not truncated: the sample is exactly the sentences, in order
            assert np.array_equal(body, text)
        if len(seps) == 2:
            two_segments += 1
            types = s["token_type_ids"][:n]
            assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1:] == 1).all()
    assert two_segments > len(ds) // 2


def test_nsp_labels_half_random_and_true_pairs_follow(wp):
    tok, prefix = wp
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=128, seed=1, nsp=True)
    labels = np.array([int(ds.get(i)["nsp_labels"]) for i in range(len(ds))])
    # 1/2 of the multi-sentence runs, plus every single-sentence run (BERT: B must then come from elsewhere)
    single = np.array([ds.locate(i)[1][1] - ds.locate(i)[1][0] == 1 for i in range(len(ds))])
    assert labels[single].all()
    assert 0.4 < labels[~single].mean() < 0.6
    batch = collate([ds[i] for i in range(4)])
    assert batch["nsp_labels"].shape == (4,) and batch["input_ids"].shape == (4, 128)
    assert batch["input_ids"].dtype == torch.int64


def test_dynamic_masking_changes_per_epoch_but_not_the_text(wp):
    tok, prefix = wp
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=64, seed=1, masking=MaskingConfig(whole_word=True))
    a, b = ds.get(3, epoch=0), ds.get(3, epoch=1)
    in_worker = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    assert np.array_equal(in_worker.get(3, epoch=1)["input_ids"], b["input_ids"])
    assert np.array_equal(_original(a), _original(b))
    assert not np.array_equal(a["mlm_labels"], b["mlm_labels"])
    assert np.array_equal(ds[len(ds) + 3]["mlm_labels"], b["mlm_labels"])  # sampler numbering of epoch 1


def test_roberta_packs_full_sentences_across_documents(tmp_path_factory):
    tok, prefix = build_corpus(tmp_path_factory.mktemp("sp"), "sentencepiece", limit=40)
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=256, style="roberta")
    corpus = ds.corpora[0]
    seen = []
    crossed = 0
    fill = []
    for i in range(len(ds)):
        s = ds.get(i)
        assert not s["token_type_ids"].any() and "nsp_labels" not in s
        _, (first, end, _) = ds.locate(i)
        seen.extend(range(first, end))
        n = int(s["attention_mask"].sum())
        orig = _original(s)[:n]
        fill.append(n / 256)
        inner_seps = int((orig[1:-1] == tok.sep_id).sum())
        docs = np.searchsorted(corpus.document_indices, [first, end - 1], side="right")
        assert inner_seps == docs[1] - docs[0]  # one separator per document boundary crossed
        crossed += inner_seps > 0
    assert seen == list(range(len(corpus)))
    assert crossed > 0
    assert np.mean(fill) > 0.75  # packed, not one sentence per sample


def test_tokenizer_mismatch_is_refused(wp, tmp_path_factory):
    _, prefix = wp
    other, _ = build_corpus(tmp_path_factory.mktemp("other"), "sentencepiece", limit=30)
    with pytest.raises(UserError, match="another tokenizer"):
        MLMDataset.from_prefixes(prefix, other)


def test_blend_follows_weights_and_feeds_the_model(wp, tmp_path_factory):
    tok, prefix = wp
    a = MLMDataset.from_prefixes(prefix, tok, max_seq_len=32, seed=1)
    b = MLMDataset.from_prefixes(prefix, tok, max_seq_len=32, seed=2, cache_dir=tmp_path_factory.mktemp("cache"))
    blend = BlendedDataset([a, b], [3, 1], size=400, seed=0)
    share = (blend.choice == 0).mean()
    assert share == pytest.approx(0.75, abs=1e-9)
    again = BlendedDataset([a, b], [3, 1], size=400, seed=0)
    assert np.array_equal(blend[17]["input_ids"], again[17]["input_ids"])

    from pretrain.alum import AlumConfig
    from pretrain.model import build_model
    from pretrain.objective import PretrainObjective

    model = PretrainObjective(build_model(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2),
                              AlumConfig())
    out = model(**collate([blend[i] for i in range(4)]))
    assert torch.isfinite(out.loss) and out.masked_count.item() > 0


def test_workers_get_the_index_as_a_mapped_file_not_its_rows(wp):
    tok, prefix = wp
    ds = MLMDataset.from_prefixes(prefix, tok, max_seq_len=64, seed=5)
    assert isinstance(ds.indices[0], np.memmap)
    blob = pickle.dumps(ds)
    assert len(blob) < ds.indices[0].nbytes  # the rows did not travel
    copy = pickle.loads(blob)
    assert isinstance(copy.indices[0], np.memmap) and np.array_equal(copy.indices[0], ds.indices[0])
    for i in (0, len(ds) - 1):
        assert np.array_equal(copy.get(i, 1)["input_ids"], ds.get(i, 1)["input_ids"])


def test_blend_map_is_cached_once_and_mapped(wp, tmp_path, capfd):
    tok, prefix = wp
    a = MLMDataset.from_prefixes(prefix, tok, max_seq_len=32, seed=1)
    b = MLMDataset.from_prefixes(prefix, tok, max_seq_len=48, seed=1)
    blend = BlendedDataset([a, b], [2, 1], size=300, seed=4, cache_dir=tmp_path)
    assert "building the blend map" in capfd.readouterr().err
    (file,) = tmp_path.glob("blend_*.npy")
    again = BlendedDataset([a, b], [2, 1], size=300, seed=4, cache_dir=tmp_path)
    assert "building" not in capfd.readouterr().err
    assert isinstance(again.map, np.memmap) and os.path.samefile(again.map.filename, file)
    w = np.array([2 / 3, 1 / 3])
    assert np.array_equal(again.map, samples.blend_map([len(a), len(b)], w, 300, 4))
    assert np.array_equal(pickle.loads(pickle.dumps(again)).map, again.map)
    assert (blend.choice == 0).sum() == 200 and sorted(blend.rank[blend.choice == 1]) == list(range(100))


def test_a_prefix_may_be_shards_a_directory_or_a_glob(tmp_path, wp):
    tok, _ = wp
    for name in ("wiki_00000", "wiki_00001", "other"):
        with IndexedCorpusWriter(str(tmp_path / "c" / name), np.uint16) as w:
            for i in range(12):
                w.add_sequence(np.arange(5, 25 + i))
                w.end_document()
    shards = [str(tmp_path / "c" / "wiki_00000"), str(tmp_path / "c" / "wiki_00001")]
    assert corpora.expand_prefix(tmp_path / "c" / "wiki") == shards
    assert corpora.expand_prefix(str(tmp_path / "c" / "wiki_*")) == shards
    assert corpora.expand_prefix(tmp_path / "c") == sorted([*shards, str(tmp_path / "c" / "other")])
    ds = MLMDataset.from_prefixes(str(tmp_path / "c"), tok, max_seq_len=32)
    assert len(ds.corpora) == 3
    with pytest.raises(UserError, match="no corpus"):
        corpora.expand_prefix(str(tmp_path / "c" / "nothing_*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no corpus"):
        corpora.expand_prefix(tmp_path / "empty")


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 500), min_size=1, max_size=6), size=st.integers(1, 3000),
       seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 700), data=st.data())
def test_streamed_blend_map_equals_the_in_memory_one(tmp_path_factory, sizes, size, seed, chunk, data):
    w = np.array(data.draw(st.lists(st.floats(0.01, 10), min_size=len(sizes), max_size=len(sizes))))
    w = w / w.sum()
    path = tmp_path_factory.mktemp("b") / "b.npy"
    with open(path, "wb") as fh:
        samples.write_blend_map(fh, sizes, w, size, seed, chunk=chunk)
    assert np.array_equal(np.load(path), samples.blend_map(sizes, w, size, seed))
