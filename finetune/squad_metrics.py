"""SQuAD exact match and F1, as defined by the official evaluation scripts.

v1.1 (``evaluate-v1.1.py``): answers are normalised (lower case, punctuation and the articles a/an/the
removed, whitespace collapsed); EM and token-level F1 take the maximum over the gold answers.
v2.0 (``evaluate-v2.0.py``): gold answers that normalise to "" are dropped and a question without any is
unanswerable, its only gold being ""; F1 against an empty side is 1 if both are empty else 0. Scores are
percentages, as the official scripts print them, with HasAns/NoAns breakdowns for v2.0.
"""

from __future__ import annotations

import collections
import re
import string

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official normalisation)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, v2: bool = True) -> float:
    """Token-overlap F1 of normalised answers.

    With an empty side, v2.0 scores 1.0 if both are empty; v1.1 scores 0.0 (no common token).
    """
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if v2 and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: list[str], v2: bool) -> list[str]:
    """The gold texts a prediction is scored against (v2.0: empty ones dropped, [""] if none is left)."""
    if not v2:
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(golds: dict[str, list[str]], predictions: dict[str, str], v2: bool) -> dict[str, float]:
    """Official EM/F1 over a dataset.

    Args:
        golds: question id -> gold answer texts ([] for an unanswerable v2.0 question).
        predictions: question id -> predicted text ("" predicts "no answer").
        v2: apply the v2.0 rules and report HasAns/NoAns breakdowns.
    Returns:
        ``{"exact", "f1", "total"}`` (+ ``HasAns_*``/``NoAns_*`` for v2.0), scores in percent. A question
        without a prediction scores 0, as in the official scripts.
    """
    em_by, f1_by, has_ans = {}, {}, {}
    for qid, answers in golds.items():
        refs = gold_answers(answers, v2)
        if not v2 and not refs:
            continue
        pred = predictions.get(qid)
        has_ans[qid] = bool(refs and refs != [""])
        if pred is None:
            em_by[qid] = f1_by[qid] = 0.0
            continue
        em_by[qid] = max(exact_match(pred, a) for a in refs)
        f1_by[qid] = max(f1(pred, a, v2) for a in refs)
    total = len(em_by)
    out = {"exact": 100.0 * sum(em_by.values()) / max(total, 1),
           "f1": 100.0 * sum(f1_by.values()) / max(total, 1), "total": total}
    if v2:
        for name, want in (("HasAns", True), ("NoAns", False)):
            ids = [q for q in em_by if has_ans[q] == want]
            if ids:
                out[f"{name}_exact"] = 100.0 * sum(em_by[q] for q in ids) / len(ids)
                out[f"{name}_f1"] = 100.0 * sum(f1_by[q] for q in ids) / len(ids)
                out[f"{name}_total"] = len(ids)
    return out
