"""Fixtures for data_tools tests: small real documents (the embedded Wikipedia dump) and tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.sentences import split_sentences
from data_tools.tokenizer import train_tokenizer

# Extra documents that real text rarely holds in one place: non-ASCII, CJK, an empty line, a title break.
EXTRA_DOCS = [
    "Mrs. Brown met Dr. Who in München. They talked about Café culture!\nA new paragraph starts here.",
    "東京は日本の首都です。大阪は第二の都市です。",
    "Single sentence without a full stop",
]


@pytest.fixture(scope="session")
def wiki_extract(tmp_path_factory, wiki_dump):
    """The embedded dump extracted once to JSONL (98 real articles): ``(path, ExtractResult)``."""
    from data_tools.extract import extract_wiki

    out = tmp_path_factory.mktemp("wiki") / "extracted.jsonl"
    return out, extract_wiki(wiki_dump, out, workers=1, progress=False)


@pytest.fixture(scope="session")
def wiki_docs(tmp_path_factory, wiki_extract) -> Path:
    """The extracted articles plus a few hand-picked documents, as JSONL."""
    out = tmp_path_factory.mktemp("wiki") / "wiki.jsonl"
    out.write_bytes(wiki_extract[0].read_bytes())
    with open(out, "a", encoding="utf-8") as fh:
        for i, text in enumerate(EXTRA_DOCS):
            fh.write(json.dumps({"id": f"extra{i}", "text": text}, ensure_ascii=False) + "\n")
    return out


@pytest.fixture(scope="session")
def small_docs(tmp_path_factory, wiki_docs) -> Path:
    """The first 12 wiki articles (cut to 4000 characters each) and the extra documents, as JSONL."""
    out = tmp_path_factory.mktemp("small") / "small.jsonl"
    lines = wiki_docs.read_text(encoding="utf-8").splitlines()
    with open(out, "w", encoding="utf-8") as fh:
        for line in lines[:12] + lines[-len(EXTRA_DOCS):]:
            rec = json.loads(line)
            rec["text"] = rec["text"][:4000]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return out


def _sentences(path: Path, limit: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return [s for t in texts for s in split_sentences(t)][:limit]


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory, wiki_docs) -> Path:
    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    train_tokenizer(_sentences(wiki_docs, 6000), out, kind="wordpiece", vocab_size=2000)
    return out


@pytest.fixture(scope="session")
def sentencepiece_dir(tmp_path_factory, wiki_docs) -> Path:
    out = tmp_path_factory.mktemp("tok") / "sentencepiece"
    train_tokenizer(_sentences(wiki_docs, 3000), out, kind="sentencepiece", vocab_size=800)
    return out
