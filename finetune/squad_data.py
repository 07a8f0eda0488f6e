"""SQuAD v1.1 / v2.0 reading, windowed features over long contexts, and answer extraction.

Features follow the recipe of Hugging Face's ``run_qa.py``: the question and a window of the context,
``truncation="only_second"`` with ``stride`` tokens of overlap between windows, and the fast tokenizer's
offsets mapping to carry character answer spans to token positions and back. A window that does not hold
the answer (or an unanswerable v2.0 question) is labelled with the [CLS] position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_tools.errors import UserError
from data_tools.jsonfile import parse_json


@dataclass
class QAExample:
    """One question: id, texts, gold answers (texts and character starts; empty when unanswerable)."""

    qid: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    line: int = 0


def _line_of(raw: str, needle: str, fallback: int = 0) -> int:
    pos = raw.find(needle)
    return raw.count("\n", 0, pos) + 1 if pos >= 0 else fallback


def read_squad(path: str | Path) -> tuple[list[QAExample], bool]:
    """Read a SQuAD JSON file and check every answer against its context.

    Args:
        path: ``{"version": ..., "data": [{"paragraphs": [{"context", "qas": [...]}]}]}``.
    Returns:
        The examples and whether the file is v2.0-style (has ``is_impossible`` or version "v2.0").
    Raises:
        UserError: unreadable JSON, missing keys, or an answer whose text is not at ``answer_start``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); expected SQuAD JSON in UTF-8") from None
    if not raw.strip():
        raise UserError(f"{path}: empty file; expected SQuAD JSON with a 'data' list")
    doc = parse_json(raw, path, expected="SQuAD JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise UserError(f"{path}:1: expected a JSON object with a 'data' list (SQuAD layout)")
    v2 = str(doc.get("version", "")).startswith("v2") or '"is_impossible"' in raw
    examples: list[QAExample] = []
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise UserError(f"{path}: {where}: expected a 'context' string")
            context = para["context"]
            for q, qa in enumerate(para.get("qas", [])):
                examples.append(_read_qa(path, raw, f"{where}.qas[{q}]", qa, context, v2))
    if not examples:
        raise UserError(f"{path}: no questions found; expected data[].paragraphs[].qas[]")
    return examples, v2


def _read_qa(path: Path, raw: str, where: str, qa: dict, context: str, v2: bool) -> QAExample:
    for key in ("id", "question"):
        if not isinstance(qa, dict) or key not in qa:
            raise UserError(f"{path}: {where}: missing key {key!r}; expected 'id', 'question', 'answers'")
    qid = str(qa["id"])
    line = _line_of(raw, json.dumps(qid))
    answers = qa.get("answers", [])
    if qa.get("is_impossible"):
        answers = []
    elif not answers and not v2:
        raise UserError(f"{path}:{line}: question {qid!r} has no answers; SQuAD v1.1 expects at least one")
    elif not answers and qa.get("is_impossible") is False:  # says answerable, gives no answer: not "unanswerable"
        raise UserError(f"{path}:{line}: question {qid!r} has is_impossible: false but no answers; expected "
                        "answers, or is_impossible: true")
    ex = QAExample(qid, qa["question"], context, line=line)
    for ans in answers:
        if not isinstance(ans, dict) or "text" not in ans or "answer_start" not in ans:
            raise UserError(f"{path}:{line}: question {qid!r}: expected answers with 'text' and 'answer_start'")
        text, start = ans["text"], ans["answer_start"]
        if not isinstance(start, int) or context[start:start + len(text)] != text:
            found = context[start:start + len(text)] if isinstance(start, int) else None
            raise UserError(f"{path}:{line}: question {qid!r}: answer {text!r} is not at answer_start={start} "
                            f"of its context (found {found!r}); expected offsets that match the text")
        ex.answers.append(text)
        ex.starts.append(start)
    return ex


def tokenize_features(examples: list[QAExample], tokenizer, max_len: int, stride: int,
                      train: bool) -> dict[str, np.ndarray]:
    """Windowed features for ``examples``.

    Args:
        examples: the questions.
        tokenizer: a fast (Rust-backed) Hugging Face tokenizer; offsets mapping needs one.
        max_len: tokens per feature (question + window + specials).
        stride: overlap in tokens between consecutive windows of one context.
        train: also produce ``start_positions``/``end_positions`` (the first gold answer).
    Returns:
        Arrays: ``input_ids``, ``attention_mask``, (``token_type_ids``), ``example_index`` [F],
        ``offsets`` [F, L, 2] with (-1, -1) outside the context, (+ positions when ``train``).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: QA needs a fast tokenizer "
                        "(tokenizer.json) for offsets mapping")
    pad_right = tokenizer.padding_side == "right"
    enc = tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                    truncation="only_second" if pad_right else "only_first", max_length=max_len,
                    stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets = np.full((len(sample_map), max_len, 2), -1, dtype=np.int64)
    starts = np.zeros(len(sample_map), dtype=np.int64)
    ends = np.zeros(len(sample_map), dtype=np.int64)
    for i, ex_idx in enumerate(sample_map):
        seq_ids = enc.sequence_ids(i)
        ctx = [j for j, s in enumerate(seq_ids) if s == 1]
        for j in ctx:
            offsets[i, j] = enc["offset_mapping"][i][j]
        if not train or not examples[ex_idx].answers:
            continue
        cls = enc["input_ids"][i].index(tokenizer.cls_token_id) if tokenizer.cls_token_id is not None else 0
        starts[i] = ends[i] = cls
        a_start = examples[ex_idx].starts[0]
        a_end = a_start + len(examples[ex_idx].answers[0])
        if ctx and offsets[i, ctx[0], 0] <= a_start and offsets[i, ctx[-1], 1] >= a_end:
            s = next(j for j in ctx if offsets[i, j, 1] > a_start)
            e = next(j for j in reversed(ctx) if offsets[i, j, 0] < a_end)
            starts[i], ends[i] = s, e
    out = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")
           if k in enc}
    out["example_index"] = np.asarray(sample_map, dtype=np.int64)
    out["offsets"] = offsets
    if train:
        out["start_positions"], out["end_positions"] = starts, ends
    return out


def extract_answers(examples: list[QAExample], features: dict[str, np.ndarray], start_logits: np.ndarray,
                    end_logits: np.ndarray, v2: bool, n_best: int = 20, max_answer_len: int = 30,
                    null_threshold: float = 0.0) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer text per question from the windows' logits (``run_qa.py``'s post-processing).

    Args:
        examples, features: as returned by ``read_squad`` / ``tokenize_features``.
        start_logits, end_logits: [F, L].
        v2: allow "no answer": predicted when the [CLS] score beats the best span by ``null_threshold``.
        n_best: candidate starts/ends per window.
        max_answer_len: longest span in tokens.
    Returns:
        ``(predictions, null_odds)``: question id -> text, and id -> null score minus best span score.
    """
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    offsets = features["offsets"]
    for f, ex_idx in enumerate(features["example_index"]):
        s_log, e_log = start_logits[f], end_logits[f]
        null[ex_idx] = min(null.get(ex_idx, np.inf), float(s_log[0] + e_log[0]))
        ctx = offsets[f, :, 0] >= 0
        s_idx = [i for i in np.argsort(s_log)[::-1][:n_best] if ctx[i]]
        e_idx = [i for i in np.argsort(e_log)[::-1][:n_best] if ctx[i]]
        context = examples[ex_idx].context
        for s in s_idx:
            for e in e_idx:
                if e < s or e - s + 1 > max_answer_len:
                    continue
                score = float(s_log[s] + e_log[e])
                if ex_idx not in best or score > best[ex_idx][0]:
                    best[ex_idx] = (score, context[offsets[f, s, 0]:offsets[f, e, 1]])
    preds, odds = {}, {}
    for i, ex in enumerate(examples):
        score, text = best.get(i, (-np.inf, ""))
        odds[ex.qid] = float(null.get(i, 0.0) - score) if np.isfinite(score) else float("inf")
        preds[ex.qid] = "" if v2 and (not np.isfinite(score) or odds[ex.qid] > null_threshold) else text
    return preds, odds


