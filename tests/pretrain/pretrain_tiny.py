"""Tiny models and batches shared by the pretrain core tests (hidden 32, 2 layers)."""

from __future__ import annotations

import torch

from pretrain.alum import AlumConfig
from pretrain.model import PretrainModel, build_model
from pretrain.objective import PretrainObjective

VOCAB = 120


def tiny_model(arch: str = "bert", alum: AlumConfig | None = None, nsp: bool = False, dropout: float = 0.0,
               seed: int = 0) -> PretrainModel | PretrainObjective:
    """The bare model, or (``alum`` given) the training module DeepSpeed wraps, around it."""
    model = build_model(vocab_size=VOCAB, arch=arch, hidden_size=32, num_layers=2, num_heads=2,
                        max_position_embeddings=64, dropout=dropout, nsp=nsp, pad_token_id=0, seed=seed)
    return model if alum is None else PretrainObjective(model, alum)


def tiny_batch(batch: int = 3, seq: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ids (pad 0) with ~20% of the real tokens selected for prediction."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
    attention = torch.ones_like(ids)
    attention[1, seq - 5:] = 0
    ids[attention == 0] = 0
    token_types = torch.zeros_like(ids)
    token_types[:, seq // 2:] = 1
    token_types[attention == 0] = 0
    pick = (torch.rand(ids.shape, generator=g) < 0.2) & (attention == 1)
    pick[0, 1] = True
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": attention, "token_type_ids": token_types, "mlm_labels": labels}


def lee_documents(limit: int = 120) -> list[list[str]]:
    """Real news text shipped in gensim's wheel (lee_background.cor: one article per line), split into sentences."""
    import re

    from data_tools.wheel_data import package_dir

    path = package_dir("gensim") / "test" / "test_data" / "lee_background.cor"
    docs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:limit]:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
        if sentences:
            docs.append(sentences)
    return docs


def build_corpus(directory, kind: str = "wordpiece", vocab_size: int = 400, limit: int = 120):
    """Train a tokenizer on the Lee articles and write them as an indexed corpus; returns (tokenizer, prefix)."""
    import numpy as np

    from data_tools.indexed import IndexedCorpusWriter
    from data_tools.tokenizer import train_tokenizer

    docs = lee_documents(limit)
    tok = train_tokenizer([s for d in docs for s in d], directory / f"tok_{kind}", kind=kind, vocab_size=vocab_size)
    prefix = str(directory / f"corpus_{kind}")
    meta = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}}
    with IndexedCorpusWriter(prefix, np.uint16, meta=meta) as w:
        for d in docs:
            for ids in tok.encode_batch(d):
                w.add_sequence(ids)
            w.end_document()
    return tok, prefix
