"""The demo's closing summary and loss-curve plot, read back from the artefacts each stage left behind."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from data_tools.atomic import atomic_path
from data_tools.errors import UserError
from demo.runner import StageResult


@dataclass
class Figures:
    """What the summary reports; every number comes from a file a stage wrote."""

    documents: int
    sentences: int
    tokens: int
    shards: int
    pretrain_steps: list[int]
    pretrain_loss: list[float]
    pretrain_mlm: list[float]
    pretrain_adv: list[float]
    unigram_entropy: float  # nats/token: the loss of a context-free (unigram) predictor on this corpus
    eval_steps: list[int]
    eval_mlm: list[float]  # held-out MLM loss at each eval
    eval_accuracy: list[float]  # held-out masked-token accuracy at each eval
    finetune: dict[str, dict]  # run name -> {"clean": float, "attacked": {eps: acc}, "majority": float | None}
    finetune_curves: dict[str, tuple[list[int], list[float]]]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: expected a JSON file written by the demo ({exc})") from None


def _tb_scalars(tb_dir: Path, tag_suffix: str = "loss") -> tuple[list[int], list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in acc.Tags().get("scalars", []) if t.startswith("train") and t.endswith(tag_suffix)]
    if not tags:
        return [], []
    events = acc.Scalars(sorted(tags, key=len)[0])
    return [e.step for e in events], [e.value for e in events]


def collect(out: Path) -> Figures:
    """Read the corpus metadata, the pre-training log and the fine-tune/attack results under ``out``."""
    metas = sorted((out / "corpus").glob("wiki_*.meta.json"))
    if not metas:
        raise UserError(f"{out / 'corpus'}: no corpus shards (*.meta.json) found")
    meta = [_read_json(m) for m in metas]
    rows = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines() if line]
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_mlm_loss" in r]
    from data_tools.inspect import unigram_entropy
    from data_tools.tokenizer import load_tokenizer

    entropy = unigram_entropy(out / "corpus" / "wiki", load_tokenizer(out / "tokenizer").special_ids)
    finetune, curves = {}, {}
    for name in ("plain", "alum"):
        metrics = _read_json(out / f"finetune_{name}" / "metrics.json")
        attack = _read_json(out / f"attack_{name}" / "attack.json")
        finetune[name] = {
            "clean": metrics["best"][metrics["metric"]],
            "metric": metrics["metric"],
            "majority": metrics.get("dev_majority_accuracy"),
            "attacked": {r["eps"]: r[attack["metric"]] for r in attack["results"]},
        }
        curves[name] = _tb_scalars(out / f"finetune_{name}" / "tensorboard")
    return Figures(
        documents=sum(m["documents"] for m in meta),
        sentences=sum(m["sentences"] for m in meta),
        tokens=sum(m["tokens"] for m in meta),
        shards=len(meta),
        pretrain_steps=[r["step"] for r in train_rows],
        pretrain_loss=[r["loss"] for r in train_rows],
        pretrain_mlm=[r["mlm_loss"] for r in train_rows],
        pretrain_adv=[r["adv_loss"] for r in train_rows],
        unigram_entropy=entropy,
        eval_steps=[r["step"] for r in eval_rows],
        eval_mlm=[r["eval_mlm_loss"] for r in eval_rows],
        eval_accuracy=[r["eval_accuracy"] for r in eval_rows],
        finetune=finetune,
        finetune_curves=curves,
    )


def plot(fig_data: Figures, path: Path) -> Path:
    """Pre-training (total, MLM, adversarial) and fine-tuning (plain vs ALUM) training-loss curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(fig_data.pretrain_steps, fig_data.pretrain_loss, label="total (MLM + α·adv)")
    ax1.plot(fig_data.pretrain_steps, fig_data.pretrain_mlm, label="MLM")
    ax1.plot(fig_data.pretrain_steps, fig_data.pretrain_adv, label="adversarial l_sym")
    ax1.plot(fig_data.eval_steps, fig_data.eval_mlm, marker="o", label="held-out MLM")
    ax1.axhline(fig_data.unigram_entropy, color="k", ls="--", lw=1, label="unigram entropy")
    ax1.set(title="ALUM pre-training", xlabel="step", ylabel="loss", yscale="log")
    ax1.legend()
    for name, (steps, values) in fig_data.finetune_curves.items():
        ax2.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
    ax2.set(title="BBC News fine-tuning", xlabel="step", ylabel="training loss")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def render(fig_data: Figures, results: list[StageResult], png: Path) -> None:
    """Print the summary table: corpus, pre-training, fine-tuning, artefact paths and time per stage."""
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    table = Table(title="ALUM demo summary", show_lines=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    f = fig_data
    table.add_row("corpus", f"{f.documents:,} documents, {f.sentences:,} sentences, {f.tokens:,} tokens, "
                            f"{f.shards} shards (verified)")
    if f.pretrain_loss:
        table.add_row("pre-training loss", f"{fmt(f.pretrain_loss[0])} -> {fmt(f.pretrain_loss[-1])} "
                                           f"(steps {f.pretrain_steps[0]}-{f.pretrain_steps[-1]})")
        table.add_row("  MLM loss", f"{fmt(f.pretrain_mlm[0])} -> {fmt(f.pretrain_mlm[-1])}")
        table.add_row("  adversarial loss", f"{fmt(f.pretrain_adv[0])} -> {fmt(f.pretrain_adv[-1])}")
    if f.eval_mlm:
        verdict = "below" if f.eval_mlm[-1] < f.unigram_entropy else "NOT below"
        table.add_row("held-out MLM loss", f"{fmt(f.eval_mlm[0])} -> {fmt(f.eval_mlm[-1])} (step {f.eval_steps[-1]}): "
                                           f"{verdict} the corpus' unigram entropy {fmt(f.unigram_entropy)} "
                                           "(what a model that ignores the context would score)")
        table.add_row("  masked-token accuracy", f"{fmt(f.eval_accuracy[0])} -> {fmt(f.eval_accuracy[-1])}")
    for name, r in f.finetune.items():
        attacked = ", ".join(f"eps {eps:g}: {fmt(v)}" for eps, v in sorted(r["attacked"].items()))
        majority = f" (majority class {fmt(r['majority'])})" if r["majority"] is not None else ""
        table.add_row(f"fine-tune {name}", f"dev {r['metric']} {fmt(r['clean'])}{majority}; attacked: {attacked}")
    table.add_row("seeds", "1 seed per fine-tuning arm: the plain/ALUM difference above is one draw, not a finding "
                           "(seed noise on BBC is a few points); `python -m experiments replicate` runs 3+ seeds "
                           "and tests each difference against it")
    for res in results:
        state = "reused" if res.skipped else "ran"
        table.add_row(f"stage {res.name}", f"{res.seconds:6.1f}s ({state})  {res.path}")
    table.add_row("loss curves", str(png))
    Console().print(table)
