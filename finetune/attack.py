"""``python -m finetune attack``: accuracy (or SQuAD F1) under an embedding-space PGD attack.

The attacker adds δ to the embeddings (``--site``: the word embeddings by default, or the embedding
layer's output where ALUM perturbs) and runs projected gradient ascent on the *task loss* against the gold
labels (Madry et al. 2018): δ₀ = 0, δ ← Π_ε(δ + η·sign(∇δ L)) for ℓ∞ (per-token ℓ2 steps for ``l2``),
η = 2.5·ε/steps by default. The encoder is run from the perturbed embeddings by ``pretrain.model``'s
``embed``/``encode_from`` (the same path ALUM uses) and the model's own task head.

An example counts as broken at ε if any iterate of the ε run — or of a run at a smaller ε of the same
sweep — changes its prediction: all of those δ lie inside the ε-ball, so the reported accuracy is that
of the strongest attack tried, and it is non-increasing in ε by construction. ε = 0 is the clean score
(dropout off, δ = 0). The model is in eval mode and the attack is deterministic given the seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_tools.atomic import write_json
from data_tools.errors import UserError
from finetune.modeling import encode, load_task_model, task_loss


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(eps / (norms + 1e-12), max=1.0)


def _step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / (grad.norm(dim=-1, keepdim=True) + 1e-12)


def pgd_iterates(model, batch: dict, eps: float, steps: int, step_size: float, site: str, norm: str):
    """Yield the task logits at δ = 0 and after each PGD step inside the ε-ball.

    Args:
        model: a HF task model in eval mode.
        batch: tensors with labels (``labels`` or ``start_positions``/``end_positions``).
        eps: radius (0: only the clean logits).
        steps: PGD iterations.
        step_size: η.
        site: "word_embeddings" or "embedding_output".
        norm: "linf" or "l2" (per token).
    Yields:
        Detached logits, first clean, then one per step.
    """
    embeds, forward_fn = encode(model, batch, site)
    embeds = embeds.detach()
    mask = batch["attention_mask"].unsqueeze(-1).to(embeds.dtype)  # padding is never perturbed
    delta = torch.zeros_like(embeds)
    with torch.no_grad():
        yield forward_fn(embeds)
    if eps <= 0:
        return
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = task_loss(model, forward_fn(embeds + delta), batch)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = _project(delta.detach() + step_size * _step(grad, norm), eps, norm) * mask
        with torch.no_grad():
            yield forward_fn(embeds + delta)


def attack_classify(model, enc: dict, eps_list: list[float], steps: int, step_size: float | None, site: str,
                    norm: str, batch_size: int, pad_id: int) -> list[dict]:
    """Accuracy at each ε of a sweep (sorted ascending). Returns one dict per ε."""
    from finetune.classify import batches

    golds = torch.tensor(enc["labels"])
    broken = torch.zeros(len(golds), dtype=torch.bool)
    results = []
    bar = tqdm(total=len(eps_list) * len(golds), desc="attack", unit="ex", dynamic_ncols=True)
    for eps in eps_list:
        eta = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
        bar.set_postfix(eps=eps)
        row = 0
        for batch in batches(enc, batch_size, pad_id, regression=False):
            n = len(batch["labels"])
            for logits in pgd_iterates(model, batch, eps, steps, eta, site, norm):
                broken[row: row + n] |= logits.argmax(-1) != batch["labels"]
            row += n
            bar.update(n)
        results.append({"eps": eps, "accuracy": int((~broken).sum()) / len(golds), "examples": len(golds)})
    bar.close()
    return results


def attack_qa(model, examples, features: dict, v2: bool, eps_list: list[float], steps: int,
              step_size: float | None, site: str, norm: str, batch_size: int) -> list[dict]:
    """SQuAD EM/F1 at each ε of a sweep: per question, the worst over the ε values tried so far."""
    from finetune.qa import feature_batches
    from finetune.squad_data import extract_answers
    from finetune.squad_metrics import exact_match, f1, gold_answers

    worst_f1 = {e.qid: 1.0 for e in examples}
    worst_em = {e.qid: 1.0 for e in examples}
    f, length = features["input_ids"].shape
    results = []
    for eps in eps_list:
        eta = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
        starts = np.full((f, length), -np.inf, dtype=np.float32)
        ends = starts.copy()
        row = 0
        for batch in feature_batches(features, batch_size):
            # The final iterate's logits (the task loss' ascent direction) are scored.
            for logits in pgd_iterates(model, batch, eps, steps, eta, site, norm):
                last = logits
            b, t, _ = last.shape
            starts[row: row + b, :t] = last[..., 0].float().numpy()
            ends[row: row + b, :t] = last[..., 1].float().numpy()
            row += b
        preds, _ = extract_answers(examples, features, starts, ends, v2)
        for e in examples:
            refs = gold_answers(e.answers, v2)
            worst_f1[e.qid] = min(worst_f1[e.qid], max(f1(preds[e.qid], a, v2) for a in refs))
            worst_em[e.qid] = min(worst_em[e.qid], max(exact_match(preds[e.qid], a) for a in refs))
        n = len(examples)
        results.append({"eps": eps, "f1": 100.0 * sum(worst_f1.values()) / n,
                        "exact": 100.0 * sum(worst_em.values()) / n, "examples": n})
    return results


def run_attack(model_dir: str, data: str, eps: list[float], steps: int = 10, step_size: float | None = None,
               site: str = "word_embeddings", norm: str = "linf", batch_size: int = 32,
               max_seq_len: int | None = None, seed: int = 0, output: str | None = None, doc_stride: int = 128,
               task: str | None = None, text_a: str | None = None, text_b: str | None = None,
               label_column: str | None = None, threads: int | None = None) -> dict:
    """Attack a fine-tuned model on a classify table (accuracy) or a SQuAD file (F1/EM).

    Args:
        model_dir: a fine-tuned HF directory (``RUN/best``), whose config holds the label names.
        data: a .tsv/.csv/.jsonl table or a SQuAD .json file.
        eps: the ε values (any order; reported ascending).
        steps, step_size, site, norm: PGD settings (see the module docstring).
        batch_size: examples per attack batch.
        max_seq_len: truncation (default: 128 for tables, 384 for SQuAD).
        seed: torch seed (the attack itself is deterministic; kept for dropout-free reproducibility).
        output: optional JSON file for the results.
        doc_stride, task, text_a, text_b, label_column: data layout, as for ``classify``/``qa``.
        threads: torch CPU threads (None: torch's default).
    Returns:
        ``{"metric", "results": [{"eps", metric, ...}], ...}``.
    """
    if not eps or any(not math.isfinite(e) or e < 0 for e in eps):
        raise UserError(f"--eps: got {eps}, expected finite values >= 0")
    if steps < 1 and any(e > 0 for e in eps):  # 0 steps would report the clean score as the attacked one
        raise UserError(f"--steps: got {steps}, expected at least 1 PGD step for eps > 0")
    if step_size is not None and (not math.isfinite(step_size) or step_size <= 0):
        raise UserError(f"--step-size: got {step_size}, expected a finite value > 0")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    eps_list = sorted(set(eps))
    path = Path(data)
    if path.suffix.lower() == ".json":
        from finetune.squad_data import read_squad, tokenize_features

        examples, v2 = read_squad(path)
        model, tok = load_task_model(model_dir, "qa")
        model.eval()
        features = tokenize_features(examples, tok, max_seq_len or 384, doc_stride, train=True)
        results = attack_qa(model, examples, features, v2, eps_list, steps, step_size, site, norm, batch_size)
        metric = "f1"
    else:
        from finetune.classify import encode_examples
        from finetune.data import read_examples, resolve_layout

        model, tok = _load_classifier(model_dir)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        layout = resolve_layout(task, text_a, text_b, label_column, labels=labels)
        ex = read_examples(path, layout, labels)
        enc = encode_examples(tok, ex, max_seq_len or 128, {lab: i for i, lab in enumerate(labels)})
        model.eval()
        results = attack_classify(model, enc, eps_list, steps, step_size, site, norm, batch_size,
                                  tok.pad_token_id)
        metric = "accuracy"
    out = {"metric": metric, "model": str(model_dir), "data": str(data), "steps": steps, "site": site,
           "norm": norm, "step_size": step_size, "results": results}
    if output:
        write_json(output, out)
    return out


def _load_classifier(model_dir: str):
    from finetune.modeling import read_model_config

    cfg_path = Path(model_dir) / "config.json"
    cfg = read_model_config(Path(model_dir))
    id2label = cfg.get("id2label")
    if not id2label or cfg.get("problem_type") == "regression":
        raise UserError(f"{cfg_path}: expected a fine-tuned classifier (id2label in config.json), e.g. "
                        "RUN/best from `python -m finetune classify`")
    return load_task_model(model_dir, "classify", len(id2label), id2label)


