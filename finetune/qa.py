"""``python -m finetune qa``: extractive question answering on SQuAD v1.1 / v2.0 JSON."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import write_json
from data_tools.errors import UserError
from finetune.config import QAOptions
from finetune.modeling import load_task_model
from finetune.squad_data import QAExample, extract_answers, read_squad, tokenize_features
from finetune.squad_metrics import squad_scores

_TENSOR_KEYS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")


def feature_batches(features: dict[str, np.ndarray], batch_size: int, shuffle_seed: int | None = None,
                    with_labels: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of windowed features (already padded to ``max_seq_len``), trimmed to the longest row."""
    n = len(features["input_ids"])
    order = list(range(n))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    keys = [k for k in _TENSOR_KEYS if k in features and (with_labels or "positions" not in k)]
    for s in range(0, n, batch_size):
        idx = order[s: s + batch_size]
        length = int(features["attention_mask"][idx].sum(1).max())
        # Right padding only: trimming the pad columns changes nothing the model sees.
        yield {k: torch.from_numpy(features[k][idx][:, :length] if features[k].ndim == 2 else features[k][idx])
               for k in keys}


@torch.no_grad()
def predict_spans(model, features: dict, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits ``[F, max_seq_len]`` for every window (-inf beyond each batch's length)."""
    model.eval()
    f, length = features["input_ids"].shape
    starts = np.full((f, length), -np.inf, dtype=np.float32)
    ends = starts.copy()
    row = 0
    for batch in feature_batches(features, batch_size, with_labels=False):
        out = model(**batch)
        b, t = out.start_logits.shape
        starts[row: row + b, :t] = out.start_logits.float().numpy()
        ends[row: row + b, :t] = out.end_logits.float().numpy()
        row += b
    return starts, ends


def evaluate_qa(model, examples: list[QAExample], features: dict, v2: bool, opts) -> tuple[dict, dict, dict]:
    """Predict answers and score them with the official EM/F1. Returns ``(scores, predictions, null_odds)``."""
    starts, ends = predict_spans(model, features, opts.eval_batch_size)
    preds, odds = extract_answers(examples, features, starts, ends, v2, opts.n_best, opts.max_answer_len,
                                  opts.null_threshold)
    scores = squad_scores({e.qid: e.answers for e in examples}, preds, v2)
    return {k: float(v) for k, v in scores.items()}, preds, odds


def run_qa(opts: QAOptions) -> dict:
    """Fine-tune QA on ``opts.train``, evaluate on ``opts.dev``; writes ``predictions.json`` (official format:
    question id -> answer text, "" for no answer) and, for v2.0, ``null_odds.json``.

    Args:
        opts: validated options.
    Returns:
        The metrics written to ``metrics.json``.
    """
    from finetune.trainer import fit

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    train_ex, train_v2 = read_squad(opts.train)
    dev_ex, dev_v2 = read_squad(opts.dev)
    v2 = train_v2 or dev_v2
    model, tok = load_task_model(opts.model, "qa")
    if tok.padding_side != "right":
        raise UserError(f"{opts.model}: tokenizer pads on the {tok.padding_side}; expected right padding")
    train_f = tokenize_features(train_ex, tok, opts.max_seq_len, opts.doc_stride, train=True)
    dev_f = tokenize_features(dev_ex, tok, opts.max_seq_len, opts.doc_stride, train=False)
    steps = (len(train_f["input_ids"]) + opts.batch_size - 1) // opts.batch_size
    out_dir = Path(opts.output_dir)
    write_json(out_dir / "config.json", opts.model_dump(mode="json"))
    best_f1 = [-1.0]

    def evaluate(m) -> dict:
        scores, preds, odds = evaluate_qa(m, dev_ex, dev_f, v2, opts)
        if scores["f1"] > best_f1[0]:  # the predictions of the checkpoint kept as best/
            best_f1[0] = scores["f1"]
            write_json(out_dir / "predictions.json", preds)
            if v2:
                write_json(out_dir / "null_odds.json", odds)
        return scores

    extra = {"squad_version": "v2.0" if v2 else "v1.1", "train_examples": len(train_ex),
             "train_features": len(train_f["input_ids"]), "dev_examples": len(dev_ex),
             "dev_features": len(dev_f["input_ids"])}
    metric = opts.metric or "f1"
    return fit(model, tok, opts, lambda epoch: feature_batches(train_f, opts.batch_size, opts.seed * 1000 + epoch),
               steps, evaluate, metric, out_dir, extra)
