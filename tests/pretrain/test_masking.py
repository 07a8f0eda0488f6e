"""BERT masking statistics, specials, and whole-word masking on real WordPiece and SentencePiece vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from pretrain_tiny import build_corpus

from data_tools.indexed import IndexedCorpus
from pretrain.masking import IGNORE, Masker, MaskingConfig


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def corpus(request, tmp_path_factory):
    tok, prefix = build_corpus(tmp_path_factory.mktemp(request.param), request.param)
    return tok, IndexedCorpus(prefix)


def _sequences(tok, corpus, n=400):
    # [CLS] sentence [SEP] [PAD] [PAD]: specials on both ends and inside
    return [np.concatenate([[tok.cls_id], corpus[i], [tok.sep_id, tok.pad_id, tok.pad_id]]) for i in range(n)]


def test_fifteen_percent_eighty_ten_ten_and_specials_untouched(corpus):
    tok, c = corpus
    masker = Masker(MaskingConfig(), tok.vocab_size, tok.mask_id, tok.special_ids)
    rng = np.random.default_rng(0)
    chosen = candidates = masked = randomised = kept = 0
    for seq in _sequences(tok, c):
        out, labels = masker(seq, rng)
        special = np.isin(seq, list(tok.special_ids))
        assert (labels[special] == IGNORE).all() and (out[special] == seq[special]).all()
        pick = labels != IGNORE
        assert (labels[pick] == seq[pick]).all()
        assert (out[~pick] == seq[~pick]).all()
        assert not np.isin(out[pick & (out != tok.mask_id)], list(tok.special_ids)).any()
        chosen += pick.sum()
        candidates += (~special).sum()
        masked += (out[pick] == tok.mask_id).sum()
        kept += (out[pick] == seq[pick]).sum()
        randomised += ((out[pick] != tok.mask_id) & (out[pick] != seq[pick])).sum()
    assert chosen / candidates == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.8, abs=0.03)
    # a random replacement can hit the original id (1 in ~400), which then counts as kept
    assert randomised / chosen == pytest.approx(0.1, abs=0.025)
    assert kept / chosen == pytest.approx(0.1, abs=0.025)


def test_whole_word_masking_takes_every_piece_of_a_word(corpus):
    tok, c = corpus
    starts = tok.word_start_mask()
    masker = Masker(MaskingConfig(whole_word=True), tok.vocab_size, tok.mask_id, tok.special_ids, starts)
    rng = np.random.default_rng(1)
    multi_piece_words_chosen = chosen = candidates = 0
    for seq in _sequences(tok, c):
        _, labels = masker(seq, rng)
        pick = labels != IGNORE
        special = np.isin(seq, list(tok.special_ids))
        word_start = starts[seq] | special
        word = np.cumsum(word_start)
        for w in np.unique(word[pick]):
            members = (word == w) & ~special
            assert pick[members].all(), "a word was only partly chosen"
            multi_piece_words_chosen += members.sum() > 1
        chosen += pick.sum()
        candidates += (~special).sum()
    assert multi_piece_words_chosen > 50  # the test exercises real multi-piece words
    assert chosen / candidates == pytest.approx(0.15, abs=0.02)


def test_same_rng_same_mask_and_bad_config():
    masker = Masker(MaskingConfig(), 50, 4, {0, 1, 2, 3, 4})
    seq = np.arange(5, 45)
    a = masker(seq, np.random.default_rng([7, 1]))
    b = masker(seq, np.random.default_rng([7, 1]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="mask_prob"):
        MaskingConfig(mask_prob=1.5)
    with pytest.raises(ValueError, match="word_start"):
        Masker(MaskingConfig(whole_word=True), 50, 4, {0})
