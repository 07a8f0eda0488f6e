"""unigram_entropy: the loss of a context-free predictor, over every shard, special tokens left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_tools.indexed import IndexedCorpusWriter
from data_tools.inspect import unigram_entropy


def _write(prefix: str, docs: list[list[list[int]]]) -> None:
    with IndexedCorpusWriter(prefix, np.uint16) as w:
        for doc in docs:
            for seq in doc:
                w.add_sequence(seq)
            w.end_document()


def test_matches_the_distribution_and_leaves_out_special_tokens(tmp_path):
    prefix = str(tmp_path / "c")
    _write(prefix, [[[5, 5, 2], [6]], [[7, 2, 2]]])  # token 2 plays a special token
    p = np.array([0.5, 0.25, 0.25])
    assert unigram_entropy(prefix, {2}) == pytest.approx(float(-(p * np.log(p)).sum()))
    assert unigram_entropy(prefix) > unigram_entropy(prefix, {2})


def test_sharded_prefix_counts_every_shard(tmp_path):
    _write(str(tmp_path / "s_00000"), [[[1, 1]]])
    _write(str(tmp_path / "s_00001"), [[[3, 3]]])
    assert unigram_entropy(str(tmp_path / "s")) == pytest.approx(math.log(2))
