"""attack: ε=0 is the clean accuracy, accuracy never rises with ε, a large ε does break the model, and the success
rate is the share of clean-correct examples flipped; by default in ALUM's site and units (relative ℓ2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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


# ------------------------------------------------------------------ TextAttack's DeepWordBug (text-attack)
# Here rather than in a file of its own: it attacks the same fine-tuned model (bbc_run), built once per worker.


def test_visible_prefix_keeps_exactly_what_the_model_reads(bbc_run, bbc):
    from finetune.text_attack import visible_prefix

    tok = AutoTokenizer.from_pretrained(str(bbc_run["dir"] / "best"))
    text = read_examples(bbc / "dev.tsv", TaskLayout()).text_a[0]
    cut = visible_prefix(tok, text, 32)
    assert len(cut) < len(text) and text.startswith(cut) and text[len(cut)].isspace()
    full, short = tok(text, truncation=True, max_length=32)["input_ids"], tok(cut)["input_ids"]
    assert short[:-1] == full[: len(short) - 1] and len(short) <= 32  # a prefix of what the model reads
    assert visible_prefix(tok, "short text", 32) == "short text"


def test_deepwordbug_flips_predictions_of_a_trained_model(bbc_run, bbc, tmp_path):
    import Levenshtein

    from finetune.text_attack import run_text_attack

    best = bbc_run["dir"] / "best"
    data = _dev_subset(bbc, tmp_path, n=12)
    out = tmp_path / "dwb.json"
    code, stdout, err = cli("text-attack", "--model", str(best), "--data", str(data), "--examples", "12",
                            "--max-seq-len", "64", "--seed", "0", "-o", str(out))
    assert code == 0, err
    assert stdout.strip().startswith("deepwordbug: clean accuracy=")
    result = json.loads(out.read_text())
    r = result["results"][0]
    assert r["examples"] == 12 and r["succeeded"] + r["failed"] + r["skipped"] == 12
    assert result["stopwords"]  # which stopword list TextAttack used is on record
    # The clean accuracy TextAttack saw is our own model's on the same rows (the wrapper and the cut are faithful).
    model = AutoModelForSequenceClassification.from_pretrained(str(best)).eval()
    tok = AutoTokenizer.from_pretrained(str(best))
    ex = read_examples(data, TaskLayout())
    label_id = {v: k for k, v in model.config.id2label.items()}
    enc = encode_examples(tok, ex, 64, label_id)
    clean = float((predict(model, enc, 64, tok.pad_token_id, False).argmax(-1) == np.array(enc["labels"])).mean())
    assert r["clean_accuracy"] == pytest.approx(clean) and clean > 0.5
    # The intended effect: the attack flips predictions, with small character edits.
    assert r["accuracy"] < r["clean_accuracy"] and r["success_rate"] > 0 and result["adversarial"]
    for adv in result["adversarial"]:
        assert adv["edited"] != adv["original"] and Levenshtein.distance(adv["edited"], adv["original"]) <= 30
        ids = tok([adv["edited"]], truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            predicted = model.config.id2label[int(model(**ids).logits.argmax(-1))]
        assert predicted == adv["predicted"] != adv["label"]
    # Seeded: the same rows give the same numbers.
    again = run_text_attack(str(best), str(data), examples=12, max_seq_len=64, seed=0)["results"][0]
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in r.items() if k != "seconds"}


def test_deepwordbugs_stopword_constraint_holds_the_provided_list():
    # DeepWordBug's StopwordModification, with the list textattack_env provided
    # (NLTK's corpus is not installed here), leaves exactly the stopwords unmodifiable.
    from finetune.textattack_env import import_textattack, stopword_source

    textattack = import_textattack()
    from textattack.constraints.pre_transformation import StopwordModification

    # textattack/attack_recipes/deepwordbug_gao_2018.py (0.3.11) builds it as StopwordModification().
    constraint = StopwordModification()
    if stopword_source() != "nltk":
        import stopwords as package

        listed = (Path(package.__file__).parent / "languages" / "english" / "default.txt").read_text().split()
        assert constraint.stopwords == set(listed) and len(listed) > 100
    text = textattack.shared.AttackedText("the cat sat on the mat because it was warm")
    words = text.words
    modifiable = {words[i] for i in constraint._get_modifiable_indices(text)}
    assert modifiable == {"cat", "sat", "mat", "warm"}  # the, on, because, it, was: stopwords


def test_text_attack_without_textattack_says_how_to_install(monkeypatch):
    import finetune.textattack_env as env
    from data_tools.errors import UserError

    monkeypatch.setattr(env.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="TextAttack is not installed; `make venv` installs it"):
        env.import_textattack()
