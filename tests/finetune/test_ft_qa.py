"""qa end to end on a small SQuAD v2.0 file; attack on QA reports F1 with ε=0 equal to the clean F1."""

from __future__ import annotations

import json

import pytest
from ft_helpers import cli
from transformers import AutoModelForQuestionAnswering

from finetune.attack import run_attack
from finetune.config import AttackOptions

PARAS = [
    ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
     "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.",
     [("Where is Normandy?", "France"), ("Who gave their name to Normandy?", "The Normans"),
      ("Where did the raiders come from?", "Denmark, Iceland and Norway"), ("Who won the war?", None)]),
    ("Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn for the three months to December, "
     "from $639m year-earlier. The firm is now one of the biggest investors in Google.",
     [("How much did profits jump?", "76%"), ("Which firm invests in Google?", "The firm"),
      ("Who is the chief executive?", None)]),
]


def squad_v2(path):
    data = []
    n = 0
    for context, qas in PARAS:
        items = []
        for question, answer in qas:
            n += 1
            if answer is None:
                items.append({"id": f"q{n}", "question": question, "answers": [], "is_impossible": True})
            else:
                items.append({"id": f"q{n}", "question": question, "is_impossible": False,
                              "answers": [{"text": answer, "answer_start": context.index(answer)}]})
        data.append({"title": "t", "paragraphs": [{"context": context, "qas": items}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def test_qa_trains_writes_official_predictions_and_attack_reports_f1(tiny_bert, tmp_path):
    data = squad_v2(tmp_path / "train-v2.0.json")
    out = tmp_path / "run"
    code, stdout, err = cli("qa", "--model", str(tiny_bert), "--train", str(data), "--dev", str(data), "-o",
                            str(out), "--epochs", "3", "--lr", "1e-3", "--batch-size", "4", "--max-seq-len", "48",
                            "--doc-stride", "16", "--threads", "1", "--alum")
    assert code == 0, err[-2000:]
    assert "done: best f1=" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["squad_version"] == "v2.0" and metrics["dev_features"] > metrics["dev_examples"] == 7
    best = metrics["best"]
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1"} <= set(best) and best["HasAns_total"] == 5
    preds = json.loads((out / "predictions.json").read_text())
    assert set(preds) == {f"q{i}" for i in range(1, 8)} and all(isinstance(v, str) for v in preds.values())
    assert set(json.loads((out / "null_odds.json").read_text())) == set(preds)
    assert type(AutoModelForQuestionAnswering.from_pretrained(str(out / "best"))).__name__ == \
        "BertForQuestionAnswering"
    res = run_attack(AttackOptions(model=out / "best", data=data, eps=[0.0, 0.05], steps=2, max_seq_len=48,
                                   doc_stride=16))
    assert res["metric"] == "f1"
    f1s = [r["f1"] for r in res["results"]]
    assert f1s[0] == pytest.approx(best["f1"]) and f1s[1] <= f1s[0]


def test_qa_config_errors(tiny_bert, tmp_path):
    data = squad_v2(tmp_path / "d.json")
    code, _, err = cli("qa", "--model", str(tiny_bert), "--train", str(data), "--dev", str(data), "-o",
                       str(tmp_path / "r"), "--max-seq-len", "64", "--doc-stride", "40")
    assert code == 2 and "doc_stride" in err and "expected less than max_seq_len/2" in err
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"epochs": 1, "epochs": 2}')
    code, _, err = cli("qa", "--config", str(cfg))
    assert code == 2 and f"error: {cfg}: duplicate key 'epochs'" in err
