"""classify end to end on the shipped data; BERT, RoBERTa and pretrain-exported directories load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from ft_helpers import cli
from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

from finetune.classify import encode_examples, predict, run_classify
from finetune.config import ClassifyOptions
from finetune.data import TaskLayout, read_examples


def test_tiny_bert_beats_the_majority_baseline_on_bbc_news(bbc_run, bbc):
    out, result = bbc_run["dir"], bbc_run["result"]
    majority = result["dev_majority_accuracy"]
    assert 0.2 < majority < 0.25
    assert result["best"]["accuracy"] >= majority + 0.3, result["history"]
    # What a user looks at afterwards: metrics.json, the resolved config, TensorBoard, best/ and final/.
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best"] == result["best"] and len(saved["history"]) == 3
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    best = AutoModelForSequenceClassification.from_pretrained(str(out / "best")).eval()
    assert best.config.id2label == dict(enumerate(["business", "entertainment", "politics", "sports", "tech"]))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "best"))
    dev = read_examples(bbc / "dev.tsv", TaskLayout())
    enc = encode_examples(tok, dev, 96, {v: k for k, v in best.config.id2label.items()})
    acc = float((predict(best, enc, 64, tok.pad_token_id, False).argmax(-1) == np.array(enc["labels"])).mean())
    assert acc == result["best"]["accuracy"]  # the saved best/ is the checkpoint that scored it
    assert (out / "final" / "model.safetensors").is_file()


def test_polarity_and_roberta_directory(polarity, tiny_roberta, tmp_path):
    code, out, err = cli("classify", "--model", str(tiny_roberta), "--train", str(polarity / "train.tsv"),
                         "--dev", str(polarity / "dev.tsv"), "-o", str(tmp_path / "run"), "--epochs", "2",
                         "--lr", "1e-3", "--batch-size", "16", "--threads", "1", "--max-seq-len", "64")
    assert code == 0, err[-2000:]
    assert "done: best accuracy=" in out and "majority baseline accuracy=0.5000" in out
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "run" / "best"))
    assert type(model).__name__ == "RobertaForSequenceClassification"
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_mismatched_model_and_tokenizer_is_a_clear_error(tiny_bert, bbc, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bert, bad)
    small = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64))
    small.save_pretrained(str(bad))  # weights and config.json for 100 tokens, tokenizer for 2000
    code, _, err = cli("classify", "--model", str(bad), "--train", str(bbc / "train.tsv"), "--dev",
                       str(bbc / "dev.tsv"), "-o", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    assert f"error: {bad}: tokenizer has 2000 tokens but the model's embeddings hold 100" in err
    code, _, err = cli("classify", "--model", str(tmp_path / "nowhere"), "--train", str(bbc / "train.tsv"),
                       "--dev", str(bbc / "dev.tsv"), "-o", str(tmp_path / "run"))
    assert code == 2 and "no such directory; expected a Hugging Face model directory" in err


def test_regression_and_pair_layout(tmp_path, tiny_bert):
    rows = [("a man plays a guitar", "a man plays music", 4.2), ("a cat sleeps", "stocks fell sharply", 0.1),
            ("the team won the match", "the side won the game", 4.6), ("rain in london", "a new phone", 0.3)] * 4
    for name in ("train", "dev"):
        (tmp_path / f"{name}.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(
            f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    opts = ClassifyOptions(model=tiny_bert, train=tmp_path / "train.tsv", dev=tmp_path / "dev.tsv",
                           output_dir=tmp_path / "run", task="stsb", epochs=1, batch_size=8, threads=1)
    result = run_classify(opts)
    assert result["metric"] == "pearson" and set(result["best"]) >= {"pearson", "spearman", "mse"}
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "run" / "final"))
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert torch.isfinite(torch.tensor(result["final"]["mse"]))


def test_pretrain_export_directory_fine_tunes(exported_bert, bbc, tmp_path):
    from safetensors.torch import load_file

    dev = tmp_path / "dev.tsv"
    lines = (bbc / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text("".join(lines[:61]), encoding="utf-8")
    code, out, err = cli("classify", "--model", str(exported_bert), "--train", str(dev), "--dev", str(dev),
                         "-o", str(tmp_path / "run"), "--epochs", "1", "--max-seq-len", "32", "--threads", "1",
                         "--lr", "0")
    # The flags check their bounds when parsed (finetune.flags), as attack's always did: exit 2 naming the flag.
    assert code == 2 and "argument --lr: expected a finite float > 0, got '0'" in err
    from finetune.modeling import load_task_model

    model, tok = load_task_model(exported_bert, "classify", num_labels=5)
    exported = load_file(str(exported_bert / "model.safetensors"))
    key = next(k for k in exported if k.endswith("word_embeddings.weight"))
    # The encoder comes from the export (not a fresh init); only the classifier head is new.
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, exported[key])
    code, out, err = cli("classify", "--model", str(exported_bert), "--train", str(dev), "--dev", str(dev),
                         "-o", str(tmp_path / "run"), "--epochs", "1", "--max-seq-len", "32", "--threads", "1",
                         "--alum")
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["alum"]["enabled"] and metrics["alum"]["alpha"] == 1.0 and metrics["train_samples"] == 60
