"""The data half of ``make demo``: the embedded real Wikipedia dump to a verified, sharded corpus."""

from __future__ import annotations

import os
import time
from pathlib import Path

from data_tools.build import build
from data_tools.extract import extract_wiki
from data_tools.inspect import inspect_corpus
from data_tools.sentences import split_sentences
from data_tools.sources import read_documents
from data_tools.tokenizer import train_tokenizer
from data_tools.verify import verify
from data_tools.wheel_data import wiki_dump_path


def run_demo(out_dir: str | os.PathLike = "demo_out/data", workers: int = 2, kind: str = "wordpiece",
             vocab_size: int = 8000, progress: bool = True) -> dict[str, Path]:
    """extract-wiki → train-tokenizer → build --shards 2 → verify → inspect, printing each step's summary.

    Returns:
        paths of what was made: ``docs`` (JSONL), ``tokenizer`` (dir) and ``corpus`` (prefix).
    """
    out = Path(out_dir)
    docs, tok_dir, corpus = out / "wiki.jsonl", out / f"tokenizer-{kind}", out / "corpus" / "wiki"
    t0 = time.perf_counter()
    print(f"[1/5] extract-wiki {wiki_dump_path().name}")
    print("  " + extract_wiki(wiki_dump_path(), docs, workers=workers, progress=progress).summary())
    print(f"[2/5] train-tokenizer --kind {kind} --vocab-size {vocab_size}")
    sentences = (s for d in read_documents(docs) for s in split_sentences(d.text))
    tok = train_tokenizer(sentences, tok_dir, kind=kind, vocab_size=vocab_size, threads=workers)
    print(f"  {tok.kind} vocab {tok.vocab_size}, fingerprint {tok.fingerprint} -> {tok_dir}")
    print("[3/5] build --shards 2")
    print("  " + build([docs], tok_dir, corpus, workers=workers, shards=2, progress=progress).summary())
    print("[4/5] verify")
    for r in verify(corpus):
        print(f"  ok {r['prefix']}: {r['documents']} documents, {r['sequences']} sentences, checksums {r['checksums']}")
    print("[5/5] inspect --document 0")
    report = inspect_corpus(corpus, document=0, show_histogram=True)
    print("\n".join("  " + line[:160] for line in report.splitlines()[:40]))
    print(f"data demo done in {time.perf_counter() - t0:.1f}s: corpus {corpus}_0000{{0,1}}, tokenizer {tok_dir}")
    return {"docs": docs, "tokenizer": tok_dir, "corpus": corpus}
