"""Which ε, η, K should ALUM's default use? A small sweep on the demo corpus, through ``pretrain.train.run``.

For each arm (plain, the named variants, and a grid of the default's ε = η and K) it pre-trains the same small
BERT from the same seed for a fixed budget of optimizer steps on the ``make demo`` corpus (the embedded Wikipedia
dump → WordPiece → indexed corpus, built once into ``--work``) and reads the run's own ``metrics.jsonl``:

- ``gain``: mean measured ascent gain (l_sym at the final δ over l_sym at a random δ of the same per-token norms,
  same dropout masks; every ``--gain-interval`` steps),
- ``share``: mean α·adv / total loss,
- ``ratio``: mean ‖δ‖/‖x‖ per token; ``cos``: mean cos(δ_final, δ_init),
- ``mlm``: held-out MLM loss after the budget (``eval_mlm_loss``), and ``cpu_s``: process CPU seconds of the run.

Run:  python benchmarks/alum_sweep.py [--steps 40] [--work .cache/alum_sweep] [--arms default,paper,...]
Prints a markdown table (the README's) and ends with one ``key=value`` line for the chosen default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from machine import describe  # noqa: E402

# name -> alum section overrides; "plain" turns ALUM off.
GRID = {
    "plain": {"enabled": False},
    "default eps=0.1": {"variant": "default", "eps": 0.1, "step_size": 0.1},
    "default eps=0.3": {"variant": "default", "eps": 0.3, "step_size": 0.3},
    "default eps=1": {"variant": "default", "eps": 1.0, "step_size": 1.0},
    "noise eps=0.3": {"variant": "noise", "eps": 0.3},
    "default eps=0.3 K=2": {"variant": "default", "eps": 0.3, "step_size": 0.3, "steps": 2},
    "paper": {"variant": "paper"},
    "authors": {"variant": "authors"},
    "noise eps=1": {"variant": "noise", "eps": 1.0},
    "noise eps=0.1": {"variant": "noise", "eps": 0.1},
    "default eps=0.03": {"variant": "default", "eps": 0.03, "step_size": 0.03},
}


def build_corpus(work: Path, vocab: int) -> tuple[str, str]:
    """The demo's data stages (extract, tokenizer, corpus), once; returns (corpus prefix, tokenizer dir)."""
    from data_tools.wheel_data import wiki_dump_path

    py = [sys.executable, "-m"]
    docs, tok, corpus = work / "wiki.jsonl", work / "tokenizer", work / "corpus"
    if not docs.exists():
        subprocess.run(py + ["data_tools", "extract-wiki", str(wiki_dump_path()), "-o", str(docs), "--workers", "1"],
                       check=True)
    if not (tok / "tokenizer.json").exists() and not any(tok.glob("*")):
        subprocess.run(py + ["data_tools", "train-tokenizer", str(docs), "--kind", "wordpiece", "--vocab-size",
                             str(vocab), "-o", str(tok)], check=True)
    if not corpus.exists():
        subprocess.run(py + ["data_tools", "build", str(docs), "--tokenizer", str(tok), "-o", str(corpus / "wiki"),
                             "--workers", "1"], check=True)
    return str(corpus / "wiki"), str(tok)


def run_arm(name: str, alum: dict, prefix: str, tok: str, out: Path, args) -> dict:
    from pretrain.config import build_config
    from pretrain.train import run

    raw = {
        "data": {"prefixes": [prefix], "tokenizer": tok, "style": "bert", "max_seq_len": args.seq,
                 "whole_word_mask": True, "eval_samples": 128, "num_workers": 0},
        "model": {"arch": "bert", "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": 2,
                  "max_position_embeddings": args.seq},
        "alum": {"alpha": 10.0, "gain_interval": args.gain_interval, **alum},
        "optim": {"name": "adamw", "lr": 1e-3, "warmup_ratio": 0.05},
        "train": {"output_dir": str(out), "deepspeed_config": str(ROOT / "deepspeed_configs" / "cpu.json"),
                  "micro_batch": args.batch, "global_batch": args.batch, "train_steps": args.steps,
                  "log_interval": 1, "eval_interval": 0, "eval_batches": 8, "save_interval": 0, "keep_last": 1,
                  "seed": args.seed, "progress": False},
    }
    c0 = time.process_time()
    result = run(build_config(raw, name))
    cpu = time.process_time() - c0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if "loss" in r]
    gains = [r["ascent_gain"] for r in train if r.get("ascent_gain") is not None]
    mean = lambda key: statistics.mean(r[key] for r in train) if train and key in train[0] else float("nan")  # noqa: E731
    resolved = json.loads((out / "config.json").read_text())["alum"]
    return {"arm": name, "gain": statistics.mean(gains) if gains else float("nan"), "gains": len(gains),
            "share": mean("adv_share"), "ratio": mean("delta_ratio"), "cos": mean("delta_cos_init"),
            "mlm": result.eval["mlm_loss"] if result.eval else float("nan"), "cpu_s": cpu, "alum": resolved}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / ".cache" / "alum_sweep"))
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per arm (the fixed budget)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--gain-interval", dest="gain_interval", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arms", default=",".join(GRID), help="comma-separated arm names (default: all)")
    p.add_argument("--chosen", default="default eps=0.1", help="the arm the last line reports")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29531"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(describe(("torch", "transformers", "deepspeed"), threads=args.threads))
    print(f"config: demo corpus (embedded Wikipedia dump, WordPiece {args.vocab}); BERT hidden {args.hidden}, "
          f"{args.layers} layers, seq {args.seq}, batch {args.batch}, {args.steps} steps, lr 1e-3, α = 10, dropout "
          f"0.1, seed {args.seed}; gain measured every {args.gain_interval} steps; 1 process, DeepSpeed ZeRO-2 fp32")
    prefix, tok = build_corpus(work, args.vocab)
    results = []
    for name in args.arms.split(","):
        out = work / f"runs{args.steps}" / name.replace(" ", "_").replace("=", "")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        r = run_arm(name, GRID[name], prefix, tok, out, args)
        results.append(r)
        print(f"{name}: gain {r['gain']:.2f} ({r['gains']} measurements) share {r['share']:.3f} "
              f"ratio {r['ratio']:.4f} cos {r['cos']:.3f} mlm {r['mlm']:.4f} cpu {r['cpu_s']:.0f}s", flush=True)
        (work / f"results{args.steps}.json").write_text(json.dumps(results, indent=1))
    print("\n| arm | ascent gain | α·adv share | ‖δ‖/‖x‖ | cos(δ, δ₀) | held-out MLM loss | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['arm']} | {r['gain']:.2f} | {r['share']:.3f} | {r['ratio']:.4f} | {r['cos']:.3f} | "
              f"{r['mlm']:.4f} | {r['cpu_s']:.0f} |")
    chosen = next((r for r in results if r["arm"] == args.chosen), results[-1])
    print(f"default_gain={chosen['gain']:.2f} default_share={chosen['share']:.3f} default_mlm={chosen['mlm']:.4f}")


if __name__ == "__main__":
    main()
