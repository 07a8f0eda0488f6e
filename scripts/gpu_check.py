"""GPU check: ZeRO-2 fp16 and bf16 pre-training with ALUM on BERT-base shapes, through ``python -m pretrain train``.

What it runs (each a real training run of the CLI, on a synthetic corpus with BERT's vocabulary size):

- plain and ALUM (default variant) in fp16 and in bf16, ZeRO-2, the same steps and samples: MFU of each, and
  the ALUM/plain step-time ratio per precision;
- an fp16 ALUM "stress" run whose DeepSpeed loss scale starts at 2^32, so that the first steps overflow: checks
  the hand-off between DeepSpeed's loss scale and ALUM's ascent scaler (overflows counted, the scale backed off,
  no NaN/inf in the saved weights, the loss finite at the end).

It prints a table, writes ``gpu_check.json`` in the work directory, and ends with one ``key=value`` line.
Exit status 1 when a check fails, 2 on bad input (no CUDA device).

    bash scripts/gpu_check.sh                 # the whole check (~3-5 min on one H100/H200)
    python scripts/gpu_check.py --tiny --cpu  # the same pipeline on CPU with a tiny model (bf16 only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_tools.errors import UserError, run_cli  # noqa: E402

BERT_VOCAB = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_data(work: Path, vocab_size: int, tokens: int, seed: int = 0) -> tuple[Path, str]:
    """A WordPiece vocab.txt of ``vocab_size`` entries and an indexed corpus of Zipf-distributed ids over it."""
    from data_tools.indexed import IndexedCorpusWriter, dtype_for_vocab
    from data_tools.tokenizer import load_tokenizer

    tok_dir = work / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    words = SPECIALS + [f"w{i}" for i in range(vocab_size - len(SPECIALS))]
    (tok_dir / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = load_tokenizer(tok_dir)
    rng = np.random.default_rng(seed)
    prefix = str(work / "corpus")
    meta = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}}
    written = 0
    with IndexedCorpusWriter(prefix, dtype_for_vocab(vocab_size), meta=meta) as w:
        while written < tokens:
            for _ in range(int(rng.integers(4, 12))):  # sentences per document
                n = int(rng.integers(12, 48))
                ids = len(SPECIALS) + (rng.zipf(1.2, n) - 1) % (vocab_size - len(SPECIALS))
                w.add_sequence(ids.astype(np.int64))
                written += n
            w.end_document()
    return tok_dir, prefix


def ds_json(work: Path, precision: str, initial_scale_power: int = 16) -> Path:
    """ZeRO-2 DeepSpeed JSON for one precision (the repo's zero2_*.json, with the fp16 start scale settable)."""
    base = json.loads((ROOT / "deepspeed_configs" / f"zero2_{precision}.json").read_text())
    if precision == "fp16":
        base["fp16"]["initial_scale_power"] = initial_scale_power
    path = work / f"ds_{precision}_{initial_scale_power}.json"
    path.write_text(json.dumps(base, indent=2))
    return path


def run_config(work: Path, name: str, tok_dir: Path, prefix: str, ds: Path, args: argparse.Namespace) -> Path:
    shape = (dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256) if args.tiny else
             dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
    cfg = {
        "data": {"prefixes": [prefix], "tokenizer": str(tok_dir), "max_seq_len": args.seq, "eval_samples": 0,
                 "num_workers": args.num_workers},
        "model": {**shape, "dropout": 0.1, "max_position_embeddings": 512},
        "optim": {"name": "adamw", "lr": 1e-4, "warmup_steps": 10},
        "train": {"output_dir": str(work / "runs" / name), "deepspeed_config": str(ds),
                  "micro_batch": args.micro_batch, "global_batch": args.micro_batch, "train_steps": args.steps,
                  "log_interval": args.log_interval, "eval_interval": 0, "save_interval": 0, "progress": False,
                  "seed": 1234},
    }
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def train(work: Path, name: str, config: Path, overrides: list[str]) -> dict:
    """Run ``python -m pretrain train`` and return its metrics rows (and wall time)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pretrain", "train", "--config", str(config), *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = work / f"{name}.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"{name}: training failed (exit {proc.returncode}); log {log}\n{tail}")
    run_dir = work / "runs" / name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"rows": [r for r in rows if "loss" in r], "wall_s": wall, "run_dir": run_dir}


def steady(rows: list[dict], key: str) -> float:
    """Median of ``key`` over the logged intervals after the first (warm-up, allocator, cuDNN autotuning)."""
    vals = [r[key] for r in rows[1:] if r.get(key) is not None] or [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals)


def final_weights_finite(run_dir: Path) -> tuple[bool, int]:
    """Whether every tensor of the last checkpoint's consolidated fp32 weights is finite (and how many)."""
    from pretrain import checkpoint

    tag = checkpoint.resolve_tag(run_dir)
    state = checkpoint.consolidated_state_dict(run_dir, tag)
    tensors = [t for t in state.values() if hasattr(t, "dtype") and t.is_floating_point()]
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors), len(tensors)


def hf_peer_step(args: argparse.Namespace) -> dict:
    """The peer: HF ``BertForMaskedLM`` (BERT-base) trained by a bare PyTorch loop, bf16 autocast, fused AdamW,
    on random ids with 15% of positions predicted: no DeepSpeed, no data loader. What the GPU does for the
    same shapes without our pipeline around it (an upper bound for our MFU)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from pretrain.monitor import _GPU_PEAK_TFLOPS

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=BERT_VOCAB)).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    b, t = args.micro_batch, args.seq
    ids = torch.randint(len(SPECIALS), BERT_VOCAB, (b, t), device="cuda")
    labels = torch.where(torch.rand(b, t, device="cuda") < 0.15, ids, torch.full_like(ids, -100))

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    n, t0 = 20, time.perf_counter()
    for _ in range(n):
        loss = step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / n
    params = sum(p.numel() for p in model.parameters())
    flops_tok = 6 * params + 12 * model.config.num_hidden_layers * model.config.hidden_size * t
    peak = next((v for k, v in _GPU_PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), 989.0) * 1e12
    tps = b * t / seconds
    return {"tokens_per_sec": tps, "mfu": tps * flops_tok / peak, "final_loss": float(loss), "adv_loss": None}


def _arm_row(rows: list[dict], wall_s: float) -> dict:
    """One run's figures: steady-state throughput and MFU, the last row's losses and ALUM diagnostics."""
    last = rows[-1]
    return {
        "tokens_per_sec": steady(rows, "tokens_per_sec"), "mfu": steady(rows, "mfu"),
        "final_loss": last["loss"], "final_mlm_loss": last["mlm_loss"], "adv_loss": last.get("adv_loss"),
        "ascent_overflows": last.get("ascent_overflows"), "loss_scale": last.get("loss_scale"),
        "ascent_gain": next((r["ascent_gain"] for r in reversed(rows) if r.get("ascent_gain")), None),
        "delta_ratio": last.get("delta_ratio"), "adv_share": last.get("adv_share"),
        "data_wait_frac": steady(rows, "data_wait_frac"), "wall_s": wall_s,
    }


def _fp16_stress(work: Path, tok_dir: Path, prefix: str, args: argparse.Namespace, results: dict) -> None:
    """ALUM in fp16 with the loss scale starting at 2^32: the scaler must back off and the weights stay finite."""
    name = "fp16_alum_stress"
    print(f"gpu_check: running {name} (fp16 loss scale starts at 2^32) ...", flush=True)
    ds = ds_json(work, "fp16", initial_scale_power=32)
    out = train(work, name, run_config(work, name, tok_dir, prefix, ds, args), ["--alum.enabled", "true"])
    rows = out["rows"]
    finite, n = final_weights_finite(out["run_dir"])
    scales = [r["loss_scale"] for r in rows]
    results["runs"][name] = {"loss_scales": scales, "ascent_overflows": rows[-1].get("ascent_overflows"),
                             "final_loss": rows[-1]["loss"], "weights_finite": finite, "weight_tensors": n}
    results["checks"]["fp16_scale_backed_off"] = scales[0] < 2.0**32
    results["checks"]["fp16_weights_finite"] = finite
    results["checks"]["fp16_loss_finite"] = bool(np.isfinite(rows[-1]["loss"]))
    results["checks"]["fp16_adv_loss_finite"] = all(np.isfinite(r["adv_loss"]) for r in rows)


def _print_report(results: dict, precisions: list[str]) -> bool:
    """The table, the checks and the final ``key=value`` line; returns whether every check passed."""
    print("\nrun                 tokens/s      MFU   final loss  adv loss  ascent gain  overflows  loss scale  data wait")
    for name, r in results["runs"].items():
        if "tokens_per_sec" not in r:
            continue
        gain = f"{r['ascent_gain']:.2f}" if r.get("ascent_gain") else "-"
        adv = f"{r['adv_loss']:.4g}" if r.get("adv_loss") is not None else "-"
        print(f"{name:18s} {r['tokens_per_sec']:10.0f} {r['mfu']:8.3f} {r['final_loss']:11.4f} {adv:>9s} "
              f"{gain:>12s} {r.get('ascent_overflows') or 0:10.0f} {r.get('loss_scale') or 1:11.0f} "
              f"{r.get('data_wait_frac') or 0:10.2f}")
    if "fp16_alum_stress" in results["runs"]:
        s = results["runs"]["fp16_alum_stress"]
        print(f"fp16 stress: loss scales logged {s['loss_scales']}, ascent overflows {s['ascent_overflows']}, "
              f"weights finite {s['weights_finite']} ({s['weight_tensors']} tensors), final loss {s['final_loss']:.4f}")
    failed = [k for k, ok in results["checks"].items() if not ok]
    for k, ok in results["checks"].items():
        print(f"check {k}: {'ok' if ok else 'FAILED'}")
    kv = {"ok": int(not failed)}
    for prec in precisions:
        kv[f"mfu_plain_{prec}"] = f"{results['runs'][f'{prec}_plain']['mfu']:.3f}"
        kv[f"mfu_alum_{prec}"] = f"{results['runs'][f'{prec}_alum']['mfu']:.3f}"
        kv[f"alum_over_plain_{prec}"] = f"{results[f'alum_over_plain_{prec}']:.2f}"
        gain = results["runs"][f"{prec}_alum"]["ascent_gain"]
        kv[f"ascent_gain_{prec}"] = f"{gain:.2f}" if gain else "none"
    if "hf_torch_bf16" in results["runs"]:
        kv["mfu_hf_torch_bf16"] = f"{results['runs']['hf_torch_bf16']['mfu']:.3f}"
    if "fp16_alum_stress" in results["runs"]:
        kv["fp16_stress_ascent_overflows"] = results["runs"]["fp16_alum_stress"]["ascent_overflows"]
    print(" ".join(f"{k}={v}" for k, v in kv.items()), flush=True)
    return not failed


def check(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available() and not args.cpu:
        raise UserError("gpu_check: no CUDA device (torch.cuda.is_available() is False); --cpu --tiny runs the "
                        "pipeline on CPU")
    precisions = ["bf16"] if args.cpu else args.precisions
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"gpu_check: device {device}, torch {torch.__version__}, work dir {work}", flush=True)
    vocab = 512 if args.tiny else BERT_VOCAB
    tokens = args.steps * args.micro_batch * args.seq * 2
    tok_dir, prefix = make_data(work, vocab, tokens)

    results: dict = {"device": device, "torch": torch.__version__, "steps": args.steps, "seq": args.seq,
                     "micro_batch": args.micro_batch, "runs": {}, "checks": {}}
    for prec in precisions:
        ds = ds_json(work, prec)
        for arm in ("plain", "alum"):
            name = f"{prec}_{arm}"
            print(f"gpu_check: running {name} ({args.steps} steps) ...", flush=True)
            out = train(work, name, run_config(work, name, tok_dir, prefix, ds, args),
                        ["--alum.enabled", "true" if arm == "alum" else "false"])
            results["runs"][name] = _arm_row(out["rows"], out["wall_s"])
        p, a = results["runs"][f"{prec}_plain"], results["runs"][f"{prec}_alum"]
        results[f"alum_over_plain_{prec}"] = p["tokens_per_sec"] / a["tokens_per_sec"]
    if "fp16" in precisions:
        _fp16_stress(work, tok_dir, prefix, args, results)
    for name, run in results["runs"].items():
        if "final_loss" in run and not name.endswith("stress"):
            results["checks"][f"{name}_loss_finite"] = bool(np.isfinite(run["final_loss"]))

    (work / "gpu_check.json").write_text(json.dumps(results, indent=2))
    if not args.tiny and torch.cuda.is_available():
        print("gpu_check: peer: Hugging Face BertForMaskedLM, plain PyTorch step ...", flush=True)
        results["runs"]["hf_torch_bf16"] = hf_peer_step(args)
    return 0 if _print_report(results, precisions) else 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    p.add_argument("--seq", type=int, default=128, help="sequence length (default 128, BERT phase 1)")
    p.add_argument("--micro-batch", type=int, default=64, help="samples per step (default 64)")
    p.add_argument("--log-interval", type=int, default=10, help="steps per metrics row (default 10)")
    p.add_argument("--precisions", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loader processes per run (default min(8, cores))")
    p.add_argument("--workdir", default=None, help="where corpora and runs go (default: a new temp dir)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer hidden-64 model instead of BERT-base")
    p.add_argument("--cpu", action="store_true", help="allow running without CUDA (bf16 only; with --tiny)")
    args = p.parse_args(argv)
    for key in ("steps", "seq", "micro_batch", "log_interval"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')}: expected a positive integer, got {getattr(args, key)}")
    if args.steps < 2 * args.log_interval:
        raise UserError(f"--steps: expected at least 2 × --log-interval ({2 * args.log_interval}) so that a "
                        "steady-state interval is measured")
    sys.exit(check(args))


if __name__ == "__main__":
    run_cli(main)
