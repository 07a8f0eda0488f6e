"""Training checks every token id against the vocabulary on load: recorded at build time, or computed once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_kit import tiny_corpus

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpusWriter, meta_path
from data_tools.merge import merge
from data_tools.tokenizer import load_tokenizer
from data_tools.verify import verify
from pretrain.corpora import open_corpora


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_corpus_without_meta_and_ids_past_the_vocabulary(tmp_path, corpus):
    tok = load_tokenizer(corpus[1])
    with IndexedCorpusWriter(tmp_path / "foreign", np.uint16) as w:  # no sidecar: vouches for nothing
        w.add_sequence([5, 6, tok.vocab_size + 40])
        w.add_sequence([7, 8])
    with pytest.raises(UserError, match=rf"foreign holds token id {tok.vocab_size + 40}, but data.tokenizer .* has "
                                        rf"{tok.vocab_size} ids"):
        open_corpora([str(tmp_path / "foreign")], tok, "data.prefixes")


def test_max_id_is_recorded_at_build_time_and_used(tmp_path, corpus):
    prefix, tok_dir = corpus
    tok = load_tokenizer(tok_dir)
    meta = json.loads(meta_path(prefix).read_text())
    assert 0 < meta["max_token_id"] < tok.vocab_size
    open_corpora([prefix], tok, "data.prefixes")
    # A forced merge with a sidecar-less corpus of another vocabulary: the merged sidecar's max id says it all.
    with IndexedCorpusWriter(tmp_path / "big", np.uint16) as w:
        w.add_sequence([1, 2, 999])
    merge([prefix, tmp_path / "big"], tmp_path / "m", force=True)
    assert json.loads(meta_path(tmp_path / "m").read_text())["max_token_id"] == 999
    with pytest.raises(UserError, match="holds token id 999"):
        open_corpora([str(tmp_path / "m")], tok, "data.prefixes")
    # verify checks the recorded value against the .bin
    path = meta_path(tmp_path / "m")
    path.write_text(json.dumps({**json.loads(path.read_text()), "max_token_id": 5}))
    with pytest.raises(UserError, match="says max_token_id=5 but the largest id .* is 999"):
        verify(tmp_path / "m")
