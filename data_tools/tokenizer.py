"""One small tokenizer interface over HF ``tokenizers`` (WordPiece, any ``tokenizer.json``) and ``sentencepiece``.

Encoding never adds special tokens: the corpus stores bare sentences and ``pretrain`` adds [CLS]/[SEP]
(or <s>/</s>) when it makes samples. Trained vocabularies put the specials first, with fixed ids:
WordPiece [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; SentencePiece <pad>=0 <unk>=1 <s>=2 </s>=3 <mask>=4.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece

from data_tools.atomic import atomic_path, write_json
from data_tools.errors import UserError

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
SPM_MODEL_NAME = "spm.model"
_GLUE = 64  # sentences per glued input in HFTokenizer.encode_flat
# Names that each role goes by in the tokenizers users bring (BERT, RoBERTa, ALBERT, XLM-R, our own).
_ROLE_NAMES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
}


class Tokenizer:
    """Common interface; use :func:`load_tokenizer` to get one.

    Attributes:
        kind: ``"wordpiece"``, ``"sentencepiece"`` or ``"bpe"`` (byte-level BPE from a ``tokenizer.json``).
        vocab_size: number of ids.
        path: what it was loaded from.
        files: files to copy into an exported model directory.
        fingerprint: hash of the vocabulary in id order (:func:`vocab_fingerprint`).
        cls_id, sep_id, mask_id, pad_id, unk_id: special ids; ``special_ids`` is their set.
    """

    kind: str
    vocab_size: int
    path: Path
    files: list[Path]
    fingerprint: str
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    unk_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        raise NotImplementedError

    def encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each text (no specials) packed as ``(ids int32[total], lengths int64[len(texts)])``.

        Equal to ``encode_batch(texts)`` concatenated; subclasses may get there faster.
        """
        ids = self.encode_batch(texts) if texts else []
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        # One conversion for the whole batch: per-token Python work would make us slower than the tokenizer.
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        return flat, lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (special tokens kept, so that a decoded sample shows its structure)."""
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry of id ``i``."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        """The id of vocabulary entry ``token``, or ``None``."""
        raise NotImplementedError

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the five special tokens."""
        return frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))

    def word_start_mask(self) -> np.ndarray:
        """Per vocabulary id: True if the piece starts a word (used by whole-word masking); specials True."""
        mask = np.array([self._starts_word(self.id_to_token(i)) for i in range(self.vocab_size)], dtype=bool)
        mask[list(self.special_ids)] = True
        return mask

    def _starts_word(self, piece: str) -> bool:
        raise NotImplementedError

    def _set_specials(self) -> None:
        for role, names in _ROLE_NAMES.items():
            ids = [i for i in (self.token_to_id(n) for n in names) if i is not None]
            if not ids:
                raise UserError(
                    f"{self.path}: tokenizer has no {role} token (expected one of {', '.join(names)}); "
                    "masked-LM pre-training needs all of [PAD] [UNK] [CLS] [SEP] [MASK] or their <…> forms"
                )
            setattr(self, f"{role}_id", ids[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, path='{self.path}')"


class HFTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer`` (WordPiece vocab, ``tokenizer.json`` or an HF tokenizer directory)."""

    def __init__(self, tok: tokenizers.Tokenizer, path: Path, files: list[Path]):
        self._tok = tok
        self.path = Path(path)
        self.files = files
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        model = json.loads(tok.to_str())["model"]
        mtype = model.get("type")
        if mtype == "WordPiece":
            self.kind, self._prefix = "wordpiece", model.get("continuing_subword_prefix") or "##"
        elif mtype == "BPE" and isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel):
            self.kind, self._prefix = "bpe", "Ġ"
        else:  # Unigram/BPE with a Metaspace pre-tokenizer: SentencePiece conventions
            self.kind, self._prefix = "sentencepiece", "▁"
        by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
        self.fingerprint = vocab_fingerprint(by_id.get(i, "") for i in range(self.vocab_size))
        self._set_specials()
        self._joiner = self._find_joiner()

    def _find_joiner(self) -> str | None:
        """A special token that can glue sentences into one input without changing how each is tokenized.

        That holds when pre-tokenization splits on whitespace (BERT, Whitespace): added special tokens are
        cut out before normalization, and each piece between them is then tokenized on its own.
        """
        whitespace_split = (pre_tokenizers.BertPreTokenizer, pre_tokenizers.Whitespace, pre_tokenizers.WhitespaceSplit)
        if not isinstance(self._tok.pre_tokenizer, whitespace_split):
            return None
        sep = self.id_to_token(self.sep_id)
        added = self._tok.get_added_tokens_decoder().get(self.sep_id)
        return sep if added is not None and added.special and added.content == sep else None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast skips offset tracking, which we never use.
        return [e.ids for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """As the base method, but sentences are glued with the [SEP] token into inputs of ``_GLUE`` texts and
        cut apart again by id: the tokenizer's per-input cost is what makes sentence-by-sentence encoding
        ~35% slower than whole documents; the result is identical (checked in the tests)."""
        joiner = self._joiner
        if joiner is None or len(texts) < 2 or any(joiner in t for t in texts):
            return super().encode_flat(texts)
        glue = f" {joiner} "
        groups = [glue.join(texts[i : i + _GLUE]) for i in range(0, len(texts), _GLUE)]
        flats, lengths = [], []
        for g, enc in enumerate(self._tok.encode_batch_fast(groups, add_special_tokens=False)):
            row = np.array(enc.ids, dtype=np.int32)
            cuts = np.flatnonzero(row == self.sep_id)
            n = min(_GLUE, len(texts) - g * _GLUE)
            if len(cuts) != n - 1:  # cannot happen with a whitespace pre-tokenizer; stay correct regardless
                return super().encode_flat(texts)
            bounds = np.concatenate(([-1], cuts, [len(row)]))
            lengths.append(np.diff(bounds) - 1)
            flats.append(np.delete(row, cuts))
        return np.concatenate(flats), np.concatenate(lengths).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(int(i))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _starts_word(self, piece: str | None) -> bool:
        if piece is None:
            return False
        if self.kind == "wordpiece":
            return not piece.startswith(self._prefix)
        return piece.startswith(self._prefix)



def vocab_fingerprint(pieces: Iterable[str]) -> str:
    """Hash of the vocabulary in id order: what the ids of a corpus or an embedding matrix mean.

    The same vocabulary gives the same fingerprint whatever the file (vocab.txt, tokenizer.json, an HF
    export that converted a SentencePiece model), so ``pretrain`` can tell a corpus/tokenizer mismatch from
    a mere re-save.
    """
    return hashlib.sha256("\n".join(pieces).encode("utf-8", "surrogatepass")).hexdigest()[:16]


class SPTokenizer(Tokenizer):
    """A SentencePiece ``.model`` (unigram or BPE)."""

    kind = "sentencepiece"

    def __init__(self, model_file: Path):
        self.path = Path(model_file)
        self.files = [self.path]
        proto = self.path.read_bytes()
        self._sp = _load_spm(proto, self.path)
        self._proto = proto
        self.vocab_size = self._sp.get_piece_size()
        self.fingerprint = vocab_fingerprint(self._sp.id_to_piece(i) for i in range(self.vocab_size))
        self._set_specials()

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        # SentencePiece drops control symbols (<s>, <pad>) when decoding; render them like HF does.
        out, run = [], []
        for i in (int(x) for x in ids):
            if self._sp.is_control(i) or i == self.mask_id:
                if run:
                    out.append(self._sp.decode(run))
                    run = []
                out.append(self._sp.id_to_piece(i))
            else:
                run.append(i)
        if run:
            out.append(self._sp.decode(run))
        return " ".join(s for s in out if s)

    def id_to_token(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        # piece_to_id maps unknown pieces to unk_id
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    def _starts_word(self, piece: str) -> bool:
        return piece.startswith("▁")


def _load_spm(proto: bytes, path: Path) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(proto)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"{path}: not a valid SentencePiece model ({str(exc).splitlines()[0]})") from None
    return sp


def _load_tokenizer_json(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on parse errors
        raise UserError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0][:200]})") from None


def _wordpiece_from_vocab(vocab_file: Path, lowercase: bool | None = None) -> tokenizers.Tokenizer:
    try:
        lines = vocab_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{vocab_file}: vocabulary is not UTF-8 (byte {exc.start})") from None
    vocab: dict[str, int] = {}
    for lineno, tok in enumerate(lines, 1):
        tok = tok.rstrip("\r")
        if not tok:
            raise UserError(f"{vocab_file}:{lineno}: empty vocabulary entry (expected one token per line)")
        vocab.setdefault(tok, len(vocab))
    if "[UNK]" not in vocab:
        raise UserError(f"{vocab_file}: WordPiece vocabulary has no [UNK] token")
    if lowercase is None:
        # An uncased BERT vocabulary holds no upper-case letters outside its [SPECIAL] tokens.
        lowercase = not any(any(c.isupper() for c in t) for t in vocab if not t.startswith("["))
    tok = tokenizers.Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    # As HF's BERT conversion does: "[MASK]" in text is the mask token, not "[", "mask", "]".
    tok.add_special_tokens([t for t in WORDPIECE_SPECIALS if t in vocab])
    _bert_pipeline(tok, lowercase)
    return tok


def _bert_pipeline(tok: tokenizers.Tokenizer, lowercase: bool) -> None:
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is not None and sep is not None:
        # So that the saved tokenizer.json gives HF users [CLS] a [SEP] b [SEP] like BERT's.
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a directory made by ``train-tokenizer``, a ``vocab.txt``, a ``tokenizer.json``,
    a SentencePiece ``.model``, or an HF tokenizer directory (``tokenizer.json`` or ``vocab.txt`` inside).

    Raises:
        UserError: if the path does not exist or holds none of these.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / SPM_MODEL_NAME, path / "tokenizer.json", path / "vocab.txt"]
        candidates += sorted(path.glob("*.model"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(
                f"{path}: no tokenizer found (expected {SPM_MODEL_NAME}, tokenizer.json, vocab.txt or a .model file)"
            )
        if found.name == "vocab.txt":
            return HFTokenizer(_wordpiece_from_vocab(found, _dir_lowercase(path)), path, [found])
        return _load_file(found, path)
    if not path.exists():
        raise UserError(f"{path}: tokenizer not found")
    return _load_file(path, path)


def _dir_lowercase(directory: Path) -> bool | None:
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
    return None


def _load_file(file: Path, origin: Path) -> Tokenizer:
    if file.suffix == ".model":
        return SPTokenizer(file)
    if file.suffix == ".json":
        extra = [f for f in (file.parent / "tokenizer_config.json", file.parent / "vocab.txt") if f.is_file()]
        return HFTokenizer(_load_tokenizer_json(file), origin, [file, *extra])
    if file.suffix == ".txt":
        return HFTokenizer(_wordpiece_from_vocab(file), origin, [file])
    raise UserError(f"{file}: unknown tokenizer file (expected vocab.txt, tokenizer.json or a SentencePiece .model)")


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    kind: str = "wordpiece",
    vocab_size: int = 30522,
    model_type: str = "unigram",
    lowercase: bool | None = None,
    min_frequency: int = 2,
    character_coverage: float = 0.9995,
    threads: int = 1,
) -> Tokenizer:
    """Train a tokenizer on ``texts`` (sentences or lines) and save it to ``out_dir``.

    Args:
        texts: training text, one sentence (or short paragraph) per item.
        out_dir: directory to write (``tokenizer.json``/``vocab.txt``/``tokenizer_config.json`` for WordPiece;
            ``spm.model``/``spm.vocab`` for SentencePiece). Files appear atomically.
        kind: ``"wordpiece"`` (BERT) or ``"sentencepiece"``.
        vocab_size: size including the five special tokens.
        model_type: SentencePiece algorithm, ``"unigram"`` or ``"bpe"``.
        lowercase: WordPiece only; default True (BERT uncased).
        min_frequency: WordPiece: minimum pair frequency for a merge.
        character_coverage: SentencePiece: share of characters covered (rest map to <unk>).
        threads: SentencePiece trainer threads.

    Returns:
        the trained tokenizer, loaded from ``out_dir``.

    SentencePiece training is seeded, so the same text gives the same model (``threads=1``). WordPiece
    training in ``tokenizers`` 0.23 is not bit-reproducible (hash-map order breaks count ties:
    huggingface/tokenizers#1794): keep the trained directory, the corpus' fingerprint check relies on it.
    """
    out = Path(out_dir)
    if kind not in ("wordpiece", "sentencepiece"):
        raise UserError(f"--kind {kind!r}: expected wordpiece or sentencepiece")
    if vocab_size < 16:
        raise UserError(f"--vocab-size {vocab_size}: expected at least 16")
    counted = _CountingIter(texts)
    if kind == "wordpiece":
        _train_wordpiece(counted, out, vocab_size, True if lowercase is None else lowercase, min_frequency)
    else:
        if model_type not in ("unigram", "bpe"):
            raise UserError(f"--model-type {model_type!r}: expected unigram or bpe")
        _train_sentencepiece(counted, out, vocab_size, model_type, character_coverage, threads)
    return load_tokenizer(out)


class _CountingIter:
    """Wraps the training text so that an empty input becomes a clear error, not an empty vocabulary."""

    def __init__(self, texts: Iterable[str]):
        self._it = iter(texts)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for t in self._it:
            if t and not t.isspace():
                self.count += 1
                yield t


def _train_wordpiece(texts: _CountingIter, out: Path, vocab_size: int, lowercase: bool, min_freq: int) -> None:
    tok = tokenizers.Tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_freq,
        special_tokens=list(WORDPIECE_SPECIALS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if texts.count == 0:
        raise UserError("no training text: the input holds no non-empty document")
    _bert_pipeline(tok, lowercase)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [t for t, _ in vocab[:5]] == list(WORDPIECE_SPECIALS), vocab[:5]
    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    with atomic_path(out / "vocab.txt") as tmp:
        tmp.write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lowercase,
            "model_max_length": 512,
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
    )


def _train_sentencepiece(
    texts: _CountingIter, out: Path, vocab_size: int, model_type: str, coverage: float, threads: int
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".spm-") as tmpdir:
        prefix = os.path.join(tmpdir, "spm")
        spm.set_random_generator_seed(0)  # same text, same model (with one thread)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_prefix=prefix,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=coverage,
                pad_id=0,
                unk_id=1,
                bos_id=2,
                eos_id=3,
                pad_piece="<pad>",
                unk_piece="<unk>",
                bos_piece="<s>",
                eos_piece="</s>",
                user_defined_symbols=["<mask>"],
                # A small corpus may not support the requested size; take what it supports instead of failing.
                hard_vocab_limit=False,
                # Reservoir-sample at most this many sentences: bounds the trainer's memory on a full dump.
                input_sentence_size=10_000_000,
                shuffle_input_sentence=True,
                num_threads=threads,
                minloglevel=2,
            )
        except RuntimeError as exc:
            if texts.count == 0:
                raise UserError("no training text: the input holds no non-empty document") from None
            raise UserError(f"SentencePiece training failed: {str(exc).splitlines()[0]}") from None
        model = sp_pb2.ModelProto()
        model.ParseFromString(Path(prefix + ".model").read_bytes())
        model.trainer_spec.model_prefix = "spm"  # not the temporary directory: same text, same bytes
        Path(prefix + ".model").write_bytes(model.SerializeToString(deterministic=True))
        for name in (SPM_MODEL_NAME, "spm.vocab"):
            os.replace(os.path.join(tmpdir, name), out / name)
