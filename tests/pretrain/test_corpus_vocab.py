"""Training checks every token id against the vocabulary on load: recorded at build time, or computed once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpusWriter, meta_path
from data_tools.merge import merge
from data_tools.tokenizer import load_tokenizer
from data_tools.verify import verify
from pretrain.corpora import open_corpora


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


def test_one_fit_rule_for_training_and_datasets(tmp_path, corpus):
    """The dataset and the run open corpora through one rule: a recorded vocabulary must equal the tokenizer's
    (a smaller one fits the embedding table but means other tokens), and a forced merge ("unknown" tokenizer)
    is judged by its ids alone."""
    from pretrain.samples import MLMDataset

    prefix, tok_dir = corpus
    tok = load_tokenizer(tok_dir)
    merge([prefix], tmp_path / "small", force=True)
    path = meta_path(tmp_path / "small")
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "tokenizer": {"vocab_size": tok.vocab_size - 1}}))
    for open_it in (lambda p: open_corpora([p], tok, "data.prefixes"), lambda p: MLMDataset.from_prefixes(p, tok)):
        with pytest.raises(UserError, match=rf"small was built with another tokenizer \(vocab size {tok.vocab_size - 1}\)"):
            open_it(str(tmp_path / "small"))
    with IndexedCorpusWriter(tmp_path / "fits", np.uint16) as w:  # no sidecar, ids inside the vocabulary
        w.add_sequence([5, 6, 7])
    merge([prefix, tmp_path / "fits"], tmp_path / "forced", force=True)
    assert json.loads(meta_path(tmp_path / "forced").read_text())["tokenizer"]["fingerprint"] == "unknown"
    [[opened]] = open_corpora([str(tmp_path / "forced")], tok, "data.prefixes")
    assert len(MLMDataset([opened], tok, max_seq_len=32)) > 0


@pytest.mark.usefixtures("single_process")
def test_training_opens_each_shard_once(tmp_path, corpus, monkeypatch):
    # Two training shards and a held-out corpus through a whole run (build, steps, evaluation, checkpoint):
    # each shard is opened, and its files checked, once per process (the loader and the dataset used to
    # open every shard twice).
    import shutil

    from engine_kit import tiny_config

    from data_tools.indexed import IndexedCorpus
    from pretrain.config import build_config
    from pretrain.train import run

    prefix, _ = corpus
    for name in ("train/bbc_00000", "train/bbc_00001", "held/bbc"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        for ext in (".bin", ".idx", ".meta.json"):
            shutil.copy(prefix + ext, tmp_path / (name + ext))
    opened: list[str] = []
    real_open = IndexedCorpus._open

    def counting_open(self):
        opened.append(str(self.prefix))
        return real_open(self)

    monkeypatch.setattr(IndexedCorpus, "_open", counting_open)
    cfg = tiny_config(tmp_path, (str(tmp_path / "train" / "bbc"), corpus[1]),
                      data={"eval_prefixes": [str(tmp_path / "held" / "bbc")]},
                      train={"train_steps": 2, "eval_interval": 1, "save_interval": 2})
    run(build_config(cfg))
    assert sorted(opened) == sorted(str(tmp_path / n) for n in ("train/bbc_00000", "train/bbc_00001", "held/bbc"))
