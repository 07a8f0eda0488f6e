"""SQuAD reading, windows with stride, offsets mapping, and answer extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_tools.errors import UserError
from finetune.squad_data import extract_answers, read_squad, tokenize_features

CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
           "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, "
           "under their leader Rollo, agreed to swear fealty to King Charles III of West Francia. ")


def squad_file(path, qas, version="v1.1", context=CONTEXT):
    path.write_text(json.dumps({"version": version, "data": [
        {"title": "Normans", "paragraphs": [{"context": context, "qas": qas}]}]}, indent=1), encoding="utf-8")
    return path


def qa(qid, question, answer, context=CONTEXT):
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}


def test_answer_whose_offsets_do_not_match_is_an_error(tmp_path):
    bad = {"id": "q7", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 3}]}
    path = squad_file(tmp_path / "s.json", [qa("q1", "Where?", "France"), bad])
    with pytest.raises(UserError, match=r"s\.json:\d+: question 'q7': answer 'Rollo' is not at answer_start=3"):
        read_squad(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if '"id": "q7"' in t)
    with pytest.raises(UserError, match=rf"s\.json:{line}:"):
        read_squad(path)


def test_v2_unanswerable_and_v1_needs_answers(tmp_path):
    no = {"id": "n", "question": "Who won?", "answers": [], "is_impossible": True}
    examples, v2 = read_squad(squad_file(tmp_path / "v2.json", [qa("a", "Who?", "Rollo"), no], "v2.0"))
    assert v2 and examples[1].answers == [] and examples[0].answers == ["Rollo"]
    with pytest.raises(UserError, match="has no answers; SQuAD v1.1 expects at least one"):
        read_squad(squad_file(tmp_path / "v1.json", [{"id": "n", "question": "Who?", "answers": []}]))
    (tmp_path / "e.json").write_text("")
    with pytest.raises(UserError, match="e.json: empty file"):
        read_squad(tmp_path / "e.json")


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_windows_cover_long_contexts_and_map_answers_through_offsets(arch, tiny_bert, tiny_roberta, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_bert if arch == "bert" else tiny_roberta))
    answers = ["Normandy", "Rollo", "King Charles III of West Francia", "Denmark, Iceland and Norway"]
    examples, _ = read_squad(squad_file(tmp_path / "s.json", [qa(f"q{i}", "Who or where?", a)
                                                              for i, a in enumerate(answers)]))
    f = tokenize_features(examples, tok, max_len=48, stride=16, train=True)
    assert len(f["input_ids"]) > len(examples)  # long contexts split into several windows
    for i, ex_idx in enumerate(f["example_index"]):
        ex = examples[ex_idx]
        s, e = f["start_positions"][i], f["end_positions"][i]
        if s == 0:  # the answer is not inside this window
            continue
        text = ex.context[f["offsets"][i, s, 0]: f["offsets"][i, e, 1]]
        assert text == ex.answers[0]
    # every answer is found in at least one window
    found = {f["example_index"][i] for i in range(len(f["input_ids"])) if f["start_positions"][i] > 0}
    assert found == set(range(len(examples)))
    # Logits that point at the labelled spans are decoded back to the gold texts.
    starts = np.full(f["input_ids"].shape, -10.0)
    ends = starts.copy()
    rows = np.arange(len(starts))
    starts[rows, f["start_positions"]] = 10.0
    ends[rows, f["end_positions"]] = 10.0
    preds, _ = extract_answers(examples, f, starts, ends, v2=False)
    assert preds == {f"q{i}": a for i, a in enumerate(answers)}


def test_v2_answerable_question_without_answers_is_an_error(tmp_path):
    bad = {"id": "q9", "question": "Who?", "answers": [], "is_impossible": False}
    path = squad_file(tmp_path / "s.json", [qa("q1", "Where?", "France"), bad], version="v2.0")
    with pytest.raises(UserError, match=r"s\.json:\d+: question 'q9' has is_impossible: false but no answers"):
        read_squad(path)
