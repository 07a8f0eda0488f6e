"""``python -m finetune classify``: sentence / sentence-pair classification and regression."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import write_json
from data_tools.errors import UserError
from finetune.config import ClassifyOptions
from finetune.data import Examples, TaskLayout, read_examples, resolve_layout
from finetune.metrics import (
    CLASSIFY_METRICS,
    REGRESSION_METRICS,
    classification_scores,
    majority_baseline,
    regression_scores,
)
from finetune.modeling import load_task_model


def layout_of(opts: ClassifyOptions) -> TaskLayout:
    """The column layout the options describe."""
    return resolve_layout(opts.task, opts.text_a, opts.text_b, opts.label_column, opts.regression,
                          opts.labels, opts.metric)


def encode_examples(tokenizer, ex: Examples, max_len: int, label_ids: dict | None) -> dict[str, list]:
    """Token ids (with the model's special tokens, truncated to ``max_len``) and label ids / values."""
    enc = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=max_len)
    out = {"input_ids": enc["input_ids"]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"]
    out["labels"] = [label_ids[lab] for lab in ex.labels] if label_ids is not None else list(ex.labels)
    return out


def collate(enc: dict[str, list], idx: list[int], pad_id: int, regression: bool) -> dict[str, torch.Tensor]:
    """Pad the rows ``idx`` to their longest length (dynamic padding)."""
    length = max(len(enc["input_ids"][i]) for i in idx)
    ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), length), dtype=torch.long)
    types = torch.zeros((len(idx), length), dtype=torch.long) if "token_type_ids" in enc else None
    for r, i in enumerate(idx):
        row = enc["input_ids"][i]
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
        if types is not None:
            types[r, : len(row)] = torch.tensor(enc["token_type_ids"][i])
    labels = torch.tensor([enc["labels"][i] for i in idx], dtype=torch.float if regression else torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def batches(enc: dict, batch_size: int, pad_id: int, regression: bool, shuffle_seed: int | None = None
            ) -> Iterator[dict]:
    """Batches over all rows, shuffled by ``shuffle_seed`` (None: file order)."""
    order = list(range(len(enc["input_ids"])))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    for s in range(0, len(order), batch_size):
        yield collate(enc, order[s: s + batch_size], pad_id, regression)


@torch.no_grad()
def predict(model, enc: dict, batch_size: int, pad_id: int, regression: bool) -> np.ndarray:
    """Logits (classification, ``[N, C]``) or values (regression, ``[N]``) for every row."""
    model.eval()
    outs = []
    for batch in batches(enc, batch_size, pad_id, regression):
        batch.pop("labels")
        outs.append(model(**batch).logits.float())
    logits = torch.cat(outs).numpy()
    return logits[:, 0] if regression else logits


def scores_for(logits: np.ndarray, golds: list, regression: bool, num_labels: int) -> dict[str, float]:
    """Task scores for predictions."""
    if regression:
        return regression_scores(logits, np.asarray(golds))
    return classification_scores(logits.argmax(-1), np.asarray(golds), num_labels)


def run_classify(opts: ClassifyOptions) -> dict:
    """Fine-tune on ``opts.train``, evaluate on ``opts.dev``, save ``best/``/``final/``/``metrics.json``.

    Args:
        opts: the validated options.
    Returns:
        The metrics written to ``metrics.json``.
    """
    from finetune.trainer import fit

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    layout = layout_of(opts)
    train = read_examples(opts.train, layout, list(layout.labels) if layout.labels else None)
    label_names = None
    if not layout.regression:
        label_names = list(layout.labels) if layout.labels else sorted(set(train.labels))
        if len(label_names) < 2:
            raise UserError(f"{opts.train}: only one label ({label_names[0]!r}); expected at least two classes")
    dev = read_examples(opts.dev, layout, label_names)
    metric = layout.metric
    valid = REGRESSION_METRICS if layout.regression else CLASSIFY_METRICS
    if metric not in valid:
        raise UserError(f"--metric: got {metric!r}, expected one of {', '.join(valid)}")
    num_labels = 1 if layout.regression else len(label_names)
    id2label = None if layout.regression else dict(enumerate(label_names))
    model, tok = load_task_model(opts.model, "classify", num_labels, id2label)
    label_ids = None if layout.regression else {lab: i for i, lab in enumerate(label_names)}
    train_enc = encode_examples(tok, train, opts.max_seq_len, label_ids)
    dev_enc = encode_examples(tok, dev, opts.max_seq_len, label_ids)
    pad = tok.pad_token_id
    steps = (len(train) + opts.batch_size - 1) // opts.batch_size

    def evaluate(m) -> dict:
        return scores_for(predict(m, dev_enc, opts.eval_batch_size, pad, layout.regression), dev_enc["labels"],
                          layout.regression, num_labels)

    out_dir = Path(opts.output_dir)
    write_json(out_dir / "config.json", opts.model_dump(mode="json"))
    extra = {"task": opts.task, "labels": label_names, "train_examples": len(train), "dev_examples": len(dev)}
    if not layout.regression:
        extra["dev_majority_accuracy"] = majority_baseline(np.asarray(dev_enc["labels"]))
    return fit(model, tok, opts, lambda epoch: batches(train_enc, opts.batch_size, pad, layout.regression,
                                                       shuffle_seed=opts.seed * 1000 + epoch),
               steps, evaluate, metric, out_dir, extra)
