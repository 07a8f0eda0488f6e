"""attack: ε=0 is the clean accuracy, accuracy never rises with ε, a large ε does break the model, and the success
rate is the share of clean-correct examples flipped; by default in ALUM's site and units (relative ℓ2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ft_helpers import cli
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from finetune.attack import run_attack
from finetune.classify import encode_examples, predict
from finetune.config import AttackOptions
from finetune.data import TaskLayout, read_examples


def _dev_subset(bbc, tmp_path, n=120):
    lines = (bbc / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / "dev_small.tsv"
    path.write_text("".join(lines[: n + 1]), encoding="utf-8")
    return path


def test_eps_zero_is_clean_accuracy_and_accuracy_is_non_increasing(bbc_run, bbc, tmp_path):
    best = bbc_run["dir"] / "best"
    data = _dev_subset(bbc, tmp_path)
    eps = [0.0, 0.03, 0.1, 0.3, 1.0]  # fractions of each token's embedding norm (the default units)
    result = run_attack(AttackOptions(model=best, data=data, eps=eps, steps=3, max_seq_len=96, seed=0))
    assert (result["site"], result["norm"], result["units"]) == ("embedding_output", "l2", "relative")
    accs = [r["accuracy"] for r in result["results"]]
    model = AutoModelForSequenceClassification.from_pretrained(str(best)).eval()
    tok = AutoTokenizer.from_pretrained(str(best))
    ex = read_examples(data, TaskLayout())
    enc = encode_examples(tok, ex, 96, {v: k for k, v in model.config.id2label.items()})
    clean = float((predict(model, enc, 64, tok.pad_token_id, False).argmax(-1) == np.array(enc["labels"])).mean())
    assert accs[0] == clean and clean > 0.6
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < clean - 0.3, accs  # the attack is real: a large ball breaks the tiny model
    rates = [r["success_rate"] for r in result["results"]]
    assert rates[0] == 0.0 and all(a <= b for a, b in zip(rates, rates[1:])), rates
    for r in result["results"]:  # accuracy = clean accuracy × (1 − success rate): no example counted twice
        assert r["accuracy"] == pytest.approx(clean * (1 - r["success_rate"]), abs=1e-9)
    raw = run_attack(AttackOptions(model=best, data=data, eps=[0.0, 0.03], steps=3, max_seq_len=96, seed=0,
                                   site="word_embeddings", norm="linf", units="absolute"))
    assert raw["results"][1]["accuracy"] < clean  # the raw ℓ∞ attack of earlier versions is still there
    # Same seed, same numbers.
    assert run_attack(AttackOptions(model=best, data=data, eps=eps[:3], steps=3, max_seq_len=96,
                                    seed=0))["results"] == result["results"][:3]


def test_attack_cli_writes_json(bbc_run, bbc, tmp_path):
    data = _dev_subset(bbc, tmp_path, n=40)
    code, out, err = cli("attack", "--model", str(bbc_run["dir"] / "best"), "--data", str(data), "--eps", "0.01",
                         "0", "--steps", "2", "-o", str(tmp_path / "attack.json"), "--site", "embedding_output")
    assert code == 0, err
    saved = json.loads((tmp_path / "attack.json").read_text())
    assert [r["eps"] for r in saved["results"]] == [0.0, 0.01]
    assert out.strip().startswith("eps=0:accuracy=")
    code, out, err = cli("attack", "--model", str(bbc / "nowhere"), "--data", str(data), "--eps", "0.1")
    assert code == 2 and "no such directory" in err


def test_relative_units_need_l2(bbc_run, bbc, tmp_path):
    from data_tools.errors import UserError
    from pretrain.config_base import load

    with pytest.raises(UserError, match="--units relative"):
        load(AttackOptions, None, ["--model", str(bbc_run["dir"] / "best"), "--data",
                                   str(_dev_subset(bbc, tmp_path, n=4)), "--eps", "[0.1]", "--norm", "linf"])
