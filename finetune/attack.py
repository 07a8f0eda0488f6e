"""``python -m finetune attack``: accuracy (or SQuAD F1) under an embedding-space PGD attack.

The attacker adds δ to the embeddings and runs projected gradient ascent on the *task loss* against the gold
labels (Madry et al. 2018): δ₀ = 0, δ ← Π_ε(δ + η·d) with d the per-token normalised gradient (ℓ2) or its sign
(ℓ∞), η = 2.5·ε/steps by default. By default it attacks where and in the units the default ALUM perturbation
trains (``pretrain.alum.AlumConfig``): at the embedding layer's output, a per-token ℓ2 ball whose radius ε is a
fraction of each token's embedding norm (``--units relative``: ‖δ_t‖ ≤ ε·‖x_t‖), so an attack ε and a training
ε mean the same thing. ``--site word_embeddings --norm linf --units absolute`` is the earlier raw ℓ∞ attack. The
encoder is run from the perturbed embeddings by ``pretrain.model``'s ``embed``/``encode_from`` (the same path
ALUM uses) and the model's own task head.

Each row also reports the attack success rate: the share of the examples predicted correctly without attack
that the attack at that ε (or a smaller one of the sweep) flips.

An example counts as broken at ε if any iterate of the ε run — or of a run at a smaller ε of the same
sweep — changes its prediction: all of those δ lie inside the ε-ball, so the reported accuracy is that
of the strongest attack tried, and it is non-increasing in ε by construction. ε = 0 is the clean score
(dropout off, δ = 0). The model is in eval mode and the attack is deterministic given the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_tools.atomic import write_json
from data_tools.errors import UserError
from finetune.config import AttackOptions
from finetune.modeling import encode, load_task_model, task_loss
from pretrain.alum import project_l2


def _project(delta: torch.Tensor, radius, norm: str) -> torch.Tensor:
    # radius: a float, or a per-token [B, T, 1] tensor (relative units). The ℓ2 ball is ALUM's (per token).
    if norm == "linf":
        return torch.clamp(delta, -radius, radius)
    return project_l2(delta, radius)


def _step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    # The ascent direction: the gradient's sign (ℓ∞), or the per-token unit gradient (ℓ2). Not
    # pretrain.alum.l2_direction: the additive 1e-12 guard here shortens steps along tiny gradients, ALUM's
    # zero-only guard does not, and swapping them changes the attack's logits (~1e-9 on a random tiny BERT).
    if norm == "linf":
        return grad.sign()
    return grad / (grad.norm(dim=-1, keepdim=True) + 1e-12)


def pgd_iterates(model, batch: dict, eps: float, steps: int, step_size: float, site: str, norm: str,
                 units: str = "absolute"):
    """Yield the task logits at δ = 0 and after each PGD step inside the ε-ball.

    Args:
        model: a HF task model in eval mode.
        batch: tensors with labels (``labels`` or ``start_positions``/``end_positions``).
        eps: radius (0: only the clean logits).
        steps: PGD iterations.
        step_size: η.
        site: "word_embeddings" or "embedding_output".
        norm: "linf" or "l2" (per token).
        units: "absolute" or "relative" (ε and η are fractions of each token's embedding ℓ2 norm; l2 only).
    Yields:
        Detached logits, first clean, then one per step.
    """
    embeds, forward_fn = encode(model, batch, site)
    embeds = embeds.detach()
    mask = batch["attention_mask"].unsqueeze(-1).to(embeds.dtype)  # padding is never perturbed
    delta = torch.zeros_like(embeds)
    unit = embeds.norm(dim=-1, keepdim=True) if units == "relative" else 1.0
    with torch.no_grad():
        yield forward_fn(embeds)
    if eps <= 0:
        return
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = task_loss(model, forward_fn(embeds + delta), batch)
        (grad,) = torch.autograd.grad(loss, delta)
        moved = delta.detach() + step_size * unit * _step(grad, norm)
        delta = _project(moved, eps * unit, norm) * mask
        with torch.no_grad():
            yield forward_fn(embeds + delta)


def attack_classify(model, enc: dict, eps_list: list[float], steps: int, step_size: float | None, site: str,
                    norm: str, batch_size: int, pad_id: int, units: str = "absolute") -> list[dict]:
    """Accuracy and attack success rate at each ε of a sweep (sorted ascending). Returns one dict per ε.

    ``success_rate``: of the examples predicted correctly at δ = 0, the share that an attack at this ε or a
    smaller one of the sweep flipped (None when no example is right without attack).
    """
    from finetune.classify import batches

    golds = torch.tensor(enc["labels"])
    broken = torch.zeros(len(golds), dtype=torch.bool)
    clean_ok = torch.zeros(len(golds), dtype=torch.bool)
    results = []
    bar = tqdm(total=len(eps_list) * len(golds), desc="attack", unit="ex", dynamic_ncols=True)
    for i, eps in enumerate(eps_list):
        eta = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
        bar.set_postfix(eps=eps)
        row = 0
        for batch in batches(enc, batch_size, pad_id, regression=False):
            n = len(batch["labels"])
            for j, logits in enumerate(pgd_iterates(model, batch, eps, steps, eta, site, norm, units)):
                wrong = logits.argmax(-1) != batch["labels"]
                if i == 0 and j == 0:  # the first iterate is δ = 0: the clean prediction
                    clean_ok[row: row + n] = ~wrong
                broken[row: row + n] |= wrong
            row += n
            bar.update(n)
        right = int(clean_ok.sum())
        results.append({"eps": eps, "accuracy": int((~broken).sum()) / len(golds), "examples": len(golds),
                        "success_rate": int((clean_ok & broken).sum()) / right if right else None})
    bar.close()
    return results


def attack_qa(model, examples, features: dict, v2: bool, eps_list: list[float], steps: int,
              step_size: float | None, site: str, norm: str, batch_size: int, units: str = "absolute") -> list[dict]:
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
            for logits in pgd_iterates(model, batch, eps, steps, eta, site, norm, units):
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


def run_attack(opts: AttackOptions) -> dict:
    """Attack a fine-tuned model on a classify table (accuracy) or a SQuAD file (F1/EM).

    Args:
        opts: the validated options (``finetune.config.AttackOptions``: model, data, the ε sweep, PGD settings,
            data layout, output file); their checks (finite ε ≥ 0, at least one step, relative units only
            with l2) already hold.
    Returns:
        ``{"metric", "results": [{"eps", metric, ...}], ...}``.
    """
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    eps_list = sorted(set(opts.eps))
    pgd = (opts.steps, opts.step_size, opts.site, opts.norm, opts.batch_size)
    if opts.data.suffix.lower() == ".json":
        from finetune.squad_data import read_squad, tokenize_features

        examples, v2 = read_squad(opts.data)
        model, tok = load_task_model(str(opts.model), "qa")
        model.eval()
        features = tokenize_features(examples, tok, opts.max_seq_len or 384, opts.doc_stride, train=True)
        results = attack_qa(model, examples, features, v2, eps_list, *pgd, opts.units)
        metric = "f1"
    else:
        from finetune.classify import encode_examples
        from finetune.data import read_examples, resolve_layout

        model, tok = load_classifier(str(opts.model))
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        layout = resolve_layout(opts.task, opts.text_a, opts.text_b, opts.label_column, labels=labels)
        ex = read_examples(opts.data, layout, labels)
        enc = encode_examples(tok, ex, opts.max_seq_len or 128, {lab: i for i, lab in enumerate(labels)})
        model.eval()
        results = attack_classify(model, enc, eps_list, *pgd, tok.pad_token_id, opts.units)
        metric = "accuracy"
    out = {"metric": metric, "model": str(opts.model), "data": str(opts.data), "steps": opts.steps,
           "site": opts.site, "norm": opts.norm, "units": opts.units, "step_size": opts.step_size,
           "results": results}
    if opts.output:
        write_json(opts.output, out)
    return out


def load_classifier(model_dir: str):
    from finetune.modeling import read_model_config

    cfg_path = Path(model_dir) / "config.json"
    cfg = read_model_config(Path(model_dir))
    id2label = cfg.get("id2label")
    if not id2label or cfg.get("problem_type") == "regression":
        raise UserError(f"{cfg_path}: expected a fine-tuned classifier (id2label in config.json), e.g. "
                        "RUN/best from `python -m finetune classify`")
    return load_task_model(model_dir, "classify", len(id2label), id2label)


