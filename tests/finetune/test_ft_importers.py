"""The importers of the shipped datasets: complete, stratified, and the split is fixed."""

from __future__ import annotations

import collections

from finetune.data import TaskLayout, read_examples
from finetune.importers import import_bbc, import_polarity


def _labels(path):
    return collections.Counter(read_examples(path, TaskLayout()).labels)


def test_bbc_import_keeps_every_article_and_stratifies(bbc):
    train, dev = _labels(bbc / "train.tsv"), _labels(bbc / "dev.tsv")
    assert sum(train.values()) + sum(dev.values()) == 2225
    assert set(train) == set(dev) == {"business", "entertainment", "politics", "sports", "tech"}
    for label in train:
        share = dev[label] / (dev[label] + train[label])
        assert abs(share - 0.2) < 0.01, label
    # Articles are one line each: title and body joined, no tabs.
    row = (bbc / "dev.tsv").read_text(encoding="utf-8").splitlines()[1]
    assert row.count("\t") == 1 and len(row) > 500


def test_split_is_fixed_across_runs(bbc, tmp_path):
    summary = import_bbc(tmp_path)
    assert (tmp_path / "train.tsv").read_bytes() == (bbc / "train.tsv").read_bytes()
    assert (tmp_path / "dev.tsv").read_bytes() == (bbc / "dev.tsv").read_bytes()
    assert summary["dev"] == 444 and 0.2 < summary["dev_majority_accuracy"] < 0.25


def test_polarity_import(polarity, tmp_path):
    train, dev = _labels(polarity / "train.tsv"), _labels(polarity / "dev.tsv")
    assert train == {"neg": 80, "pos": 80} and dev == {"neg": 20, "pos": 20}
    train_texts = set(read_examples(polarity / "train.tsv", TaskLayout()).text_a)
    assert not train_texts & set(read_examples(polarity / "dev.tsv", TaskLayout()).text_a)
    import_polarity(tmp_path)
    assert (tmp_path / "dev.tsv").read_bytes() == (polarity / "dev.tsv").read_bytes()


def test_import_and_init_model_commands(tmp_path):
    import json

    from ft_helpers import cli
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    code, out, err = cli("import-polarity", "-o", str(tmp_path / "pol"), "--dev-fraction", "0.25")
    assert code == 0, err
    assert json.loads(out)["dev"] == 50
    code, out, err = cli("init-model", "--texts", str(tmp_path / "pol" / "train.tsv"), "-o", str(tmp_path / "m"),
                         "--arch", "roberta", "--vocab-size", "400", "--hidden", "32")
    assert code == 0, err
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "m"))
    assert model.config.vocab_size == len(tok) <= 400 and model.config.hidden_size == 32
    code, _, err = cli("import-bbc", "-o", str(tmp_path / "b"), "--dev-fraction", "1.5")
    assert code == 2 and "--dev-fraction: got 1.5, expected a number strictly between 0 and 1" in err
