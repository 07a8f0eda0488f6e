"""EM/F1 against the definitions of the official SQuAD v1.1 and v2.0 evaluation scripts."""

from __future__ import annotations

import pytest

from finetune.squad_metrics import exact_match, f1, normalize_answer, squad_scores


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Eiffel-Tower, in Paris! ") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match_and_f1_hand_cases():
    assert exact_match("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # pred tokens {denver}, gold {denver, broncos}: P=1, R=1/2 -> F1=2/3
    assert f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    # repeated tokens count by multiplicity: common = min(2,1) = 1; P=1/3, R=1/2 -> 0.4
    assert f1("a b b c", "b d") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert f1("Paris", "London") == 0.0


def test_multiple_gold_answers_take_the_maximum():
    golds = {"q1": ["Denver Broncos", "the Broncos", "Broncos"], "q2": ["1990", "in 1990"]}
    preds = {"q1": "Broncos", "q2": "1990s"}
    s = squad_scores(golds, preds, v2=False)
    assert s["exact"] == pytest.approx(50.0)  # q1 exact (via "the Broncos"/"Broncos"), q2 not
    assert s["f1"] == pytest.approx(50.0)  # q2's tokens {1990s} share nothing with {1990}
    assert s["total"] == 2


def test_v2_empty_answers():
    golds = {"has": ["Normandy"], "none": [], "none2": []}
    s = squad_scores(golds, {"has": "Normandy", "none": "", "none2": "France"}, v2=True)
    assert s["exact"] == pytest.approx(200 / 3) and s["f1"] == pytest.approx(200 / 3)
    assert s["HasAns_exact"] == 100.0 and s["HasAns_total"] == 1
    assert s["NoAns_exact"] == 50.0 and s["NoAns_total"] == 2
    # Predicting nothing for an answerable question scores 0; a gold that normalises to "" is dropped.
    assert squad_scores({"q": ["the", "Paris"]}, {"q": ""}, v2=True)["f1"] == 0.0
    assert squad_scores({"q": ["the"]}, {"q": ""}, v2=True)["exact"] == 100.0


def test_missing_prediction_scores_zero_and_v1_empty_f1_is_zero():
    assert squad_scores({"a": ["x"], "b": ["y"]}, {"a": "x"}, v2=False)["exact"] == 50.0
    assert f1("", "", v2=False) == 0.0 and f1("", "", v2=True) == 1.0
