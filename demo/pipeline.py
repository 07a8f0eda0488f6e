"""The stages of ``make demo``, each one of the project's own CLIs run as a user would run it.

Embedded real Wikipedia dump → documents → WordPiece tokenizer → 2 shards (+ verify) → ALUM pre-training of a
small BERT with 2 CPU processes through the DeepSpeed launcher → export → BBC News fine-tuning, plain and with
ALUM → clean and attacked accuracy.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from data_tools.atomic import write_json
from data_tools.wheel_data import wiki_dump_path
from demo.runner import Stage

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    """The small-BERT pre-training recipe that learns on 2 CPU cores within minutes: its held-out MLM loss falls
    below the corpus' unigram entropy (a context-free predictor's loss). The earlier demo recipe (hidden 128,
    sequences of 128, dropout 0.1, LR 1e-3, 300 steps) stayed at the unigram level; a narrower model on shorter
    sequences without dropout, a higher peak LR and more (cheaper) steps gets past it. ``python -m experiments
    replicate`` pre-trains with the same recipe (README: "Does ALUM help?")."""

    vocab_size: int = 4000
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    seq_len: int = 32
    dropout: float = 0.0
    lr: float = 2e-3
    warmup_ratio: float = 0.06
    batch: int = 32


RECIPE = Recipe()


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is; ``tiny`` is what the end-to-end test runs."""

    vocab_size: int = RECIPE.vocab_size
    hidden: int = RECIPE.hidden
    layers: int = RECIPE.layers
    heads: int = RECIPE.heads
    seq_len: int = RECIPE.seq_len
    micro_batch: int = RECIPE.batch // 2  # two processes
    # More than the study's 600: the demo pre-trains with ALUM (α = 10), whose held-out MLM loss the study
    # measured above plain MLM's after 600 steps (README, "Does ALUM help?").
    pretrain_steps: int = 1000
    finetune_epochs: float = 3.0
    finetune_train_limit: int | None = None
    # finetune attack's default units: a fraction of each token's embedding norm (ALUM's default ε: 0.1)
    attack_eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)


FULL = DemoSize()
TINY = DemoSize(vocab_size=2000, hidden=32, layers=1, heads=2, seq_len=32, micro_batch=8, pretrain_steps=12,
                finetune_epochs=0.3, attack_eps=(0.0, 0.1))


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed() -> str:
    return str(Path(sys.executable).parent / "deepspeed")


def _pretrain_cmd(out: Path, size: DemoSize, work: Path) -> list[str]:
    """ALUM pre-training (α = 10) under the DeepSpeed launcher, 2 processes; writes its config beside the stages."""
    config = {
        # Full-sentence packing (every sample is seq_len tokens): the recipe's samples (see Recipe).
        "data": {"prefixes": [str(out / "corpus" / "wiki")], "tokenizer": str(out / "tokenizer"),
                 "style": "roberta", "max_seq_len": size.seq_len, "eval_samples": 256},
        "model": {"arch": "bert", "hidden_size": size.hidden, "num_layers": size.layers,
                  "num_heads": size.heads, "max_position_embeddings": size.seq_len,
                  "dropout": RECIPE.dropout},
        "alum": {"enabled": True, "alpha": 10.0},
        "optim": {"name": "adamw", "lr": RECIPE.lr, "warmup_ratio": RECIPE.warmup_ratio},
        "train": {"output_dir": str(work), "deepspeed_config": str(ROOT / "deepspeed_configs" / "cpu.json"),
                  "micro_batch": size.micro_batch, "global_batch": size.micro_batch * 2,
                  "train_steps": size.pretrain_steps, "log_interval": 10,
                  "eval_interval": max(size.pretrain_steps // 6, 1), "eval_batches": 8,
                  "save_interval": max(size.pretrain_steps // 3, 1), "keep_last": 2},
    }
    write_json(out / "pretrain.json", config)
    return [_deepspeed(), "--num_gpus", "2", "--master_port", str(_free_port()), "--module",
            "pretrain", "train", "--config", str(out / "pretrain.json")]


def _finetune_cmd(out: Path, size: DemoSize, alum: bool, work: Path) -> list[str]:
    bbc = out / "bbc"
    argv = _py("-m", "finetune", "classify", "--model", str(out / "export"), "--train", str(bbc / "train.tsv"),
               "--dev", str(bbc / "dev.tsv"), "-o", str(work), "--epochs", str(size.finetune_epochs),
               "--lr", "1e-3", "--batch-size", "16", "--max-seq-len", str(size.seq_len),
               # one thread: two intra-op threads on two busy cores ran ~10x slower here
               "--threads", "1", "--seed", "1")
    return argv + (["--alum"] if alum else [])


def _attack_cmd(out: Path, size: DemoSize, run: str, work: Path) -> list[str]:
    return _py("-m", "finetune", "attack", "--model", str(out / run / "best"), "--data",
               str(out / "bbc" / "dev.tsv"), "--eps", *map(str, size.attack_eps), "--steps", "3",
               "-o", str(work / "attack.json"), "--max-seq-len", str(size.seq_len), "--threads", "1")


def stages(out: Path, size: DemoSize, workers: int = 2) -> list[Stage]:
    """The demo's stages in order; each command reads only finished outputs of earlier stages."""
    docs = out / "documents" / "wiki.jsonl"
    tok = out / "tokenizer"
    bbc_limit = [] if size.finetune_train_limit is None else ["--limit", str(size.finetune_train_limit)]
    return [
        Stage("documents", "extract the embedded Wikipedia dump", lambda w: _py(
            "-m", "data_tools", "extract-wiki", str(wiki_dump_path()), "-o", str(w / "wiki.jsonl"),
            "--workers", str(workers))),
        Stage("tokenizer", "train a WordPiece tokenizer", lambda w: _py(
            "-m", "data_tools", "train-tokenizer", str(docs), "--kind", "wordpiece",
            "--vocab-size", str(size.vocab_size), "-o", str(w))),
        Stage("corpus", "build the sharded indexed corpus", lambda w: _py(
            "-m", "data_tools", "build", str(docs), "--tokenizer", str(tok), "-o", str(w / "wiki"),
            "--workers", str(workers), "--shards", "2")),
        Stage("verify", "verify the corpus", lambda w: _py(
            "-m", "data_tools", "verify", str(out / "corpus" / "wiki"))),
        Stage("pretrain", "ALUM pre-training (2 processes, DeepSpeed launcher)",
              partial(_pretrain_cmd, out, size), in_place=True),
        Stage("export", "export to a Hugging Face directory", lambda w: _py(
            "-m", "pretrain", "export", str(out / "pretrain"), "-o", str(w))),
        Stage("bbc", "import BBC News (train/dev split)", lambda w: _py(
            "-m", "finetune", "import-bbc", "-o", str(w)) + bbc_limit),
        Stage("finetune_plain", "fine-tune on BBC News (plain)", partial(_finetune_cmd, out, size, False)),
        Stage("finetune_alum", "fine-tune on BBC News (ALUM, alpha=1)", partial(_finetune_cmd, out, size, True)),
        Stage("attack_plain", "attack the plain model (embedding PGD)",
              partial(_attack_cmd, out, size, "finetune_plain")),
        Stage("attack_alum", "attack the ALUM model (embedding PGD)",
              partial(_attack_cmd, out, size, "finetune_alum")),
    ]
