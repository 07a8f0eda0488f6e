"""Tokenizer training and loading: fixed special ids, no specials added, every accepted path form, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from data_tools.errors import UserError
from data_tools.tokenizer import load_tokenizer, train_tokenizer

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Anarchism is a political philosophy and movement that is skeptical of authority.",
    "Albedo is the measure of the diffuse reflection of solar radiation.",
    "Ein Café in München serviert Kaffee und Kuchen.",
    "Autism is a developmental disorder characterized by difficulties with social interaction.",
    "The first use of the term in English was in 1642 during the English Civil War.",
] * 30


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    return train_tokenizer(TEXT, tmp_path_factory.mktemp("wp"), kind="wordpiece", vocab_size=300)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    return train_tokenizer(TEXT, tmp_path_factory.mktemp("sp"), kind="sentencepiece", vocab_size=200)


def test_wordpiece_specials_and_encoding(wordpiece):
    tok = wordpiece
    assert tok.kind == "wordpiece" and 100 < tok.vocab_size <= 300
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("The quick brown fox.")
    assert ids and not set(ids) & tok.special_ids
    assert tok.decode(ids) == "the quick brown fox."
    assert tok.encode_batch(["The quick", "brown fox."]) == [tok.encode("The quick"), tok.encode("brown fox.")]
    starts = tok.word_start_mask()
    assert starts.shape == (tok.vocab_size,) and starts[:5].all()
    for i in range(5, tok.vocab_size):
        assert starts[i] == (not tok.id_to_token(i).startswith("##"))
    assert not starts.all()


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_specials_and_encoding(tmp_path, model_type, sentencepiece):
    tok = sentencepiece if model_type == "unigram" else train_tokenizer(
        TEXT, tmp_path, kind="sentencepiece", vocab_size=200, model_type="bpe"
    )
    assert tok.kind == "sentencepiece"
    assert [tok.id_to_token(i) for i in range(5)] == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("The quick brown fox jumps.")
    assert ids and not set(ids) & tok.special_ids
    assert tok.decode(ids) == "The quick brown fox jumps."
    assert tok.decode([tok.cls_id, *ids, tok.mask_id, tok.sep_id]) == "<s> The quick brown fox jumps. <mask> </s>"
    starts = tok.word_start_mask()
    for i in range(5, tok.vocab_size):
        assert starts[i] == tok.id_to_token(i).startswith("▁")


def test_every_path_form_loads_the_same_tokenizer(wordpiece, sentencepiece):
    wp_dir = wordpiece.path
    for p in (wp_dir, wp_dir / "tokenizer.json", wp_dir / "vocab.txt"):
        t = load_tokenizer(p)
        assert t.kind == "wordpiece" and t.encode(TEXT[1]) == wordpiece.encode(TEXT[1]), p
    for p in (wp_dir / "tokenizer.json", wp_dir / "vocab.txt"):  # same ids, same fingerprint
        assert load_tokenizer(p).fingerprint == wordpiece.fingerprint
    for p in (sentencepiece.path, sentencepiece.path.parent):
        t = load_tokenizer(p)
        assert t.fingerprint == sentencepiece.fingerprint and t.encode(TEXT[2]) == sentencepiece.encode(TEXT[2])
    assert wordpiece.fingerprint != sentencepiece.fingerprint


def test_pickles_for_worker_processes(wordpiece, sentencepiece):
    for tok in (wordpiece, sentencepiece):
        clone = pickle.loads(pickle.dumps(tok))
        assert clone.encode(TEXT[3]) == tok.encode(TEXT[3]) and clone.fingerprint == tok.fingerprint


def test_matches_transformers_bert_tokenizer(wordpiece, tmp_path):
    """Our trained directory is an HF tokenizer directory; HF's BERT tokenizer encodes as we do, and what
    HF saves back loads here with the same fingerprint (so an export keeps matching its corpus)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(wordpiece.path))
    hf.save_pretrained(str(tmp_path / "resaved"))
    assert load_tokenizer(tmp_path / "resaved").fingerprint == wordpiece.fingerprint
    for text in TEXT[:6]:
        assert hf(text, add_special_tokens=False)["input_ids"] == wordpiece.encode(text)
        assert hf(text)["input_ids"] == [2, *wordpiece.encode(text), 3]
    slow = transformers.BertTokenizer(vocab=str(wordpiece.path / "vocab.txt"))
    assert slow(TEXT[0], add_special_tokens=False)["input_ids"] == load_tokenizer(
        wordpiece.path / "vocab.txt"
    ).encode(TEXT[0])


def test_cased_vocab_txt_is_not_lowercased(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "world", "!"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = load_tokenizer(tmp_path / "vocab.txt")
    assert tok.encode("Hello world!") == [5, 7, 8] and tok.encode("hello") == [6]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing", None, "tokenizer not found"),
        ("bad.model", b"not a protobuf at all", "not a valid SentencePiece model"),
        ("tokenizer.json", b"{broken", "not a valid tokenizer.json"),
        ("vocab.txt", b"hello\nworld\n", "has no \\[UNK\\] token"),
        ("vocab.txt", b"[UNK]\n\xff\xfe\n", "not UTF-8"),
        ("weird.bin", b"x", "unknown tokenizer file"),
    ],
)
def test_bad_tokenizer_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_tokenizer(path)
    assert str(path) in str(err.value)


def test_missing_specials_and_empty_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("[UNK]\nhello\n")
    with pytest.raises(UserError, match="no pad token"):
        load_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no tokenizer found"):
        load_tokenizer(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_empty_training_input(tmp_path, kind):
    with pytest.raises(UserError, match="no training text"):
        train_tokenizer(["", "   "], tmp_path / kind, kind=kind, vocab_size=100)


def test_word_start_mask_dtype(wordpiece):
    assert wordpiece.word_start_mask().dtype == np.bool_


def test_encode_flat_matches_encode_batch(wordpiece, sentencepiece):
    """The fast path (sentences glued with [SEP], cut apart by id) gives exactly the per-sentence encodings."""
    sentences = [s for t in TEXT[:6] for s in t.split(" ")] * 30 + ["\x00\x01", "東京は日本の首都です。", "  padded  ", "x"]
    for tok in (wordpiece, sentencepiece):
        flat, lengths = tok.encode_flat(sentences)
        expect = tok.encode_batch(sentences)
        assert lengths.tolist() == [len(e) for e in expect]
        assert flat.tolist() == [i for e in expect for i in e]
    with_sep = ["a [SEP] b", "the fox"]  # literal separator text: falls back, still equal
    flat, lengths = wordpiece.encode_flat(with_sep)
    assert flat.tolist() == [i for e in wordpiece.encode_batch(with_sep) for i in e]
    assert wordpiece._joiner == "[SEP]" and load_tokenizer(wordpiece.path / "vocab.txt")._joiner == "[SEP]"


def test_sentencepiece_training_is_reproducible(tmp_path, sentencepiece):
    again = train_tokenizer(TEXT, tmp_path / "again", kind="sentencepiece", vocab_size=200)
    assert (tmp_path / "again" / "spm.model").read_bytes() == sentencepiece.path.read_bytes()
    assert again.fingerprint == sentencepiece.fingerprint


def test_fingerprint_survives_conversion_to_tokenizer_json(tmp_path, sentencepiece):
    """An HF export converts the SentencePiece model to a tokenizer.json: same vocabulary, same fingerprint,
    same ids, so a corpus built with the .model still matches the exported tokenizer."""
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    proto = SentencePieceExtractor(str(sentencepiece.path)).proto
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces])
    backend.save(str(tmp_path / "tokenizer.json"))
    converted = load_tokenizer(tmp_path / "tokenizer.json")
    assert converted.kind == "sentencepiece" and converted.fingerprint == sentencepiece.fingerprint
    assert converted.encode(TEXT[0]) == sentencepiece.encode(TEXT[0])
    assert converted.special_ids == sentencepiece.special_ids
