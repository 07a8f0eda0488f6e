"""``python -m finetune text-attack``: accuracy under a discrete text attack this project did not write.

TextAttack's DeepWordBug recipe (Gao et al. 2018, ``textattack.attack_recipes.DeepWordBugGao2018``, TextAttack
0.3.11): rank words by how much replacing each with UNK lowers the gold-label score, then, greedily in that
order, apply the best of four character edits (swap, substitute, delete, insert a letter) until the prediction
flips; stopwords and already-edited words are left alone, total edit distance ≤ 30. It is black-box (logits
only) and needs no downloads, unlike TextFooler (word embeddings) or PWWS (WordNet).

Each example is first cut to the words the model reads (``max_seq_len`` tokens): words past the truncation
cannot change a prediction, and trying them only spends queries. Reported per run: clean accuracy on the
attacked examples, accuracy under attack (an example counts as robust when the search ends without flipping
it), the attack success rate (of the examples right without attack, the share flipped), mean queries and the
mean share of words edited. The search is seeded (``--seed``): the same model and data give the same numbers.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from pathlib import Path

import torch

from data_tools.atomic import write_json
from data_tools.errors import UserError

RECIPES = {"deepwordbug": "DeepWordBugGao2018"}


class _Wrapper:
    """TextAttack's model interface: a list of texts (or text pairs) → class logits (numpy)."""

    def __init__(self, model, tokenizer, max_seq_len: int, batch_size: int):
        self.model, self.tokenizer, self.max_seq_len, self.batch_size = model, tokenizer, max_seq_len, batch_size
        self.queries = 0

    def __call__(self, texts: list) -> object:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i: i + self.batch_size]
                pairs = isinstance(chunk[0], (tuple, list))
                a = [t[0] for t in chunk] if pairs else list(chunk)
                b = [t[1] for t in chunk] if pairs else None
                enc = self.tokenizer(a, b, truncation=True, max_length=self.max_seq_len, padding=True,
                                     return_tensors="pt")
                out.append(self.model(**enc).logits.float())
        self.queries += len(texts)
        return torch.cat(out).numpy()


def visible_prefix(tokenizer, text: str, max_seq_len: int) -> str:
    """``text`` cut after the last whole word that fits in ``max_seq_len`` tokens (specials included)."""
    if not getattr(tokenizer, "is_fast", False):
        return text  # offsets need a fast tokenizer; a slow one attacks the whole text
    enc = tokenizer(text, truncation=True, max_length=max_seq_len, return_offsets_mapping=True)
    ends = [e for s, e in enc["offset_mapping"] if e > s]
    if not ends or ends[-1] >= len(text.rstrip()):
        return text
    end = ends[-1]
    if not text[end].isspace():  # the last token ends inside a word: drop that partial word
        end = text.rfind(" ", 0, end)
    return text[:end].rstrip() if end > 0 else text[: ends[-1]]


def _summary(results: list, seconds: float, queries: int) -> dict:
    kinds = [type(r).__name__.removesuffix("AttackResult").lower() for r in results]
    n = len(kinds)
    skipped, succeeded, failed = (kinds.count(k) for k in ("skipped", "successful", "failed"))
    right = succeeded + failed
    edited = [r.perturbed_result.attacked_text.words_diff_ratio(r.original_result.attacked_text)
              for r, k in zip(results, kinds) if k == "successful"]
    return {"examples": n, "clean_accuracy": right / n, "accuracy": failed / n,
            "success_rate": succeeded / right if right else None, "succeeded": succeeded, "failed": failed,
            "skipped": skipped, "mean_queries": queries / n, "mean_words_edited": sum(edited) / len(edited)
            if edited else None, "seconds": seconds}


def run_text_attack(model_dir: str, data: str, recipe: str = "deepwordbug", examples: int | None = 200,
                    max_seq_len: int = 128, batch_size: int = 64, seed: int = 0, threads: int | None = None,
                    output: str | None = None, task: str | None = None, text_a: str | None = None,
                    text_b: str | None = None, label_column: str | None = None) -> dict:
    """Attack a fine-tuned classifier with a TextAttack recipe on the first ``examples`` rows of ``data``.

    Returns:
        ``{"metric": "accuracy", "recipe", "stopwords", "results": [summary], "adversarial": [...]}``; the
        summary as in the module docstring, ``adversarial`` the successful attacks' original and edited texts.
    """
    from finetune.attack import load_classifier
    from finetune.data import read_examples, resolve_layout
    from finetune.textattack_env import import_textattack, stopword_source

    if recipe not in RECIPES:
        raise UserError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    if examples is not None and examples < 1:
        raise UserError(f"--examples {examples}: expected at least 1")
    textattack = import_textattack()
    import textattack.attack_recipes as recipes

    if threads:
        torch.set_num_threads(threads)
    model, tok = load_classifier(model_dir)
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    layout = resolve_layout(task, text_a, text_b, label_column, labels=labels)
    ex = read_examples(Path(data), layout, labels)
    n = len(ex) if examples is None else min(examples, len(ex))
    label_id = {lab: i for i, lab in enumerate(labels)}
    if ex.text_b is None:
        rows = [(visible_prefix(tok, ex.text_a[i], max_seq_len), label_id[ex.labels[i]]) for i in range(n)]
        dataset = textattack.datasets.Dataset(rows)
    else:
        rows = [((ex.text_a[i], ex.text_b[i]), label_id[ex.labels[i]]) for i in range(n)]
        dataset = textattack.datasets.Dataset(rows, input_columns=("text_a", "text_b"))
    # TextAttack checks for its ModelWrapper base class, importable only once textattack is.
    wrapper = type("ModelWrapper", (_Wrapper, textattack.models.wrappers.ModelWrapper), {})(
        model, tok, max_seq_len, batch_size)
    attack = getattr(recipes, RECIPES[recipe]).build(wrapper)
    args = textattack.AttackArgs(num_examples=n, random_seed=seed, silent=True, disable_stdout=True,
                                 enable_advance_metrics=False)
    start = time.perf_counter()
    results = textattack.Attacker(attack, dataset, args).attack_dataset()
    summary = _summary(results, time.perf_counter() - start, wrapper.queries)
    adversarial = [{"original": r.original_result.attacked_text.text, "edited": r.perturbed_result.attacked_text.text,
                    "label": labels[r.original_result.ground_truth_output],
                    "predicted": labels[r.perturbed_result.output]}
                   for r in results if type(r).__name__ == "SuccessfulAttackResult"]
    out = {"metric": "accuracy", "recipe": recipe, "textattack": version("textattack"), "model": str(model_dir),
           "data": str(data), "max_seq_len": max_seq_len, "seed": seed, "stopwords": stopword_source(),
           "results": [summary], "adversarial": adversarial}
    if output:
        write_json(output, out)
    return out
