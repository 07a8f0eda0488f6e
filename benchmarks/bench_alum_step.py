"""How much does an ALUM step cost? Our plain and ALUM MLM steps against Hugging Face's BertForMaskedLM.

Measures, in one run and interleaved round by round (so a noisy neighbour slows every variant alike), the
median forward+backward time (process CPU time by default, see ``--clock``; wall time is printed too) of:

- ``hf``: transformers ``BertForMaskedLM`` with ``labels`` (the peer; vocabulary head at every position),
- ``plain``: our training module (``pretrain.objective.PretrainObjective``) without ALUM (head and loss at the
  masked positions only),
- ``alum``: our ALUM step with the default variant (K=1, l_sym over the masked positions), diagnostics off
  (``gain_interval=0``),
- ``alum_all``: the same with l_sym over every position,
- ``alum_diag``: ``alum`` measuring the ascent gain on EVERY step (``gain_interval=1``): the probe's cost; the
  default measures every 10th step, so the diagnostics overhead is (alum_diag - alum) / 10 plus the per-step
  statistics (δ norms, cosines; timed on their own),

with the ALUM step split into phases (clean forward, ascent = perturbed forward + δ-gradient, adversarial
forward, backward; read from a forward pre-hook on the encoder, no monkeypatching), and the peak resident-memory
growth of one step of each, each in a fresh subprocess (``VmHWM`` minus the resident size just before the step).
Same weights, same batch, same threads for all. Finally the ascent gain of the default options after a short
warm-up (20 ALUM training steps on the synthetic batches), averaged over 8 measurements.

Usage::

    python benchmarks/bench_alum_step.py            # the issue's shape, 2 threads
    python benchmarks/bench_alum_step.py --rounds 5 --layers 2   # quicker

Ends with one line: ``plain_speedup_vs_hf=… alum_time_vs_hf=… alum_time_vs_plain=… alum_all_time_vs_plain=…
alum_mem_vs_hf=… diag_overhead=… ascent_gain=…`` (speedup > 1 is faster than HF; the others are ratios of time
or of memory growth; ``diag_overhead`` is a fraction of an ALUM step).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Idle OpenMP threads sleep instead of spinning, so that process CPU time counts work, not waiting (set
# before torch loads libgomp).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from machine import describe
from parts import vm_kib

from pretrain.alum import AlumConfig, regularized_loss  # noqa: E402
from pretrain.alum_stats import AlumStats, AlumSums, delta_diagnostics  # noqa: E402
from pretrain.model import build_model  # noqa: E402
from pretrain.objective import PretrainObjective  # noqa: E402

VARIANTS = ("hf", "plain", "alum", "alum_all", "alum_diag")
ALUM = {"alum": AlumConfig(gain_interval=0), "alum_all": AlumConfig(gain_interval=0, masked_only=False),
        "alum_diag": AlumConfig(gain_interval=1)}
# The clock phases are read with; main() switches it to process CPU time for --clock cpu.
now = time.perf_counter


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="timed steps per variant (after 2 warm-up rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what the final ratios compare: process CPU time per step (default; robust on a machine "
                        "shared with other jobs, which only stretch wall time) or wall time (a quiet machine)")
    p.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup(args: argparse.Namespace):
    """Same weights for every variant, one fixed batch with BERT's 15% of positions to predict."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    ours = PretrainObjective(build_model(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                                         num_heads=args.heads, max_position_embeddings=max(512, args.seq),
                                         seed=args.seed)).train()
    hf = ours.to_hf().train()
    return ours, hf, make_batch(args, args.seed)


def make_batch(args: argparse.Namespace, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, args.vocab, (args.batch, args.seq), generator=g)
    pick = torch.rand(ids.shape, generator=g) < 0.15
    batch = {
        "input_ids": torch.where(pick, torch.full_like(ids, 4), ids),
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "mlm_labels": torch.where(pick, ids, torch.full_like(ids, -100)),
    }
    return batch


class PhaseClock:
    """When each encoder forward of a step starts (a forward pre-hook on the encoder): call 1 is the clean
    forward, calls 2..K+1 the ascent's, call K+2 the adversarial forward (then the gain probe, if any)."""

    def __init__(self, model: PretrainObjective) -> None:
        self.calls: list[float] = []
        model.backbone.encoder.register_forward_pre_hook(lambda module, args: self.calls.append(now()))


def step(variant: str, ours, hf, batch, clock: PhaseClock | None = None) -> dict[str, float]:
    """One forward + backward; returns its time and, for ALUM, its phases (seconds)."""
    model = hf if variant == "hf" else ours
    if variant != "hf":
        ours.alum = ALUM.get(variant)
    if clock is not None:
        clock.calls.clear()
    model.zero_grad(set_to_none=True)
    w0, c0 = time.perf_counter(), time.process_time()
    t0 = now()
    if variant == "hf":
        loss = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"], labels=batch["mlm_labels"]).loss
    else:
        loss = ours(**batch).loss
    t1 = now()
    loss.backward()
    t2 = now()
    out = {"total": t2 - t0, "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
    if clock is not None and variant.startswith("alum"):
        k = ours.alum.steps
        c = clock.calls
        out.update(clean_forward=c[1] - t0, ascent=c[k + 1] - c[1], adversarial_forward=t1 - c[k + 1],
                   backward=t2 - t1)
    else:
        out.update(forward=t1 - t0, backward=t2 - t1)
    return out


def _rss_kib(field: str) -> int:
    kib = vm_kib(field)
    if kib is None:
        raise RuntimeError(f"{field} not in /proc/self/status")
    return kib


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: peak RSS growth of one step of ``args.memory_child`` (KiB), printed as JSON."""
    ours, hf, batch = setup(args)
    other = ours if args.memory_child == "hf" else hf
    del other
    gc.collect()
    before = _rss_kib("VmRSS")
    step(args.memory_child, ours, hf, batch)
    print(json.dumps({"growth_kib": _rss_kib("VmHWM") - before}))


def measure_memory(args: argparse.Namespace, variant: str) -> int:
    cmd = [sys.executable, __file__, "--memory-child", variant]
    for k in ("layers", "hidden", "heads", "seq", "batch", "vocab", "threads", "seed"):
        cmd += [f"--{k}", str(getattr(args, k))]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["growth_kib"]


def time_rounds(args: argparse.Namespace, ours, hf, batch) -> dict[str, list[dict[str, float]]]:
    """Every variant's step, interleaved round by round; the 2 warm-up rounds are not kept."""
    clock = PhaseClock(ours)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds + 2):
        for v in VARIANTS:
            t = step(v, ours, hf, batch, clock)
            if r >= 2:
                results[v].append(t)
        print(f"round {r + 1}/{args.rounds + 2} ({args.clock}): " + " ".join(f"{v}={results[v][-1]['total'] * 1e3:.0f}ms"
                                                            for v in VARIANTS if results[v]), flush=True)
    return results


def report_medians(args: argparse.Namespace,
                   results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each variant's median times and phases, printed; the ALUM step's phases as shares."""
    med = {v: {k: statistics.median(x[k] for x in results[v]) for k in results[v][0]} for v in VARIANTS}
    print(f"\nmedian step time (ms), forward+backward: process CPU time, wall time; [phases, {args.clock} time]")
    for v in VARIANTS:
        parts = ", ".join(f"{k} {s * 1e3:.1f}" for k, s in med[v].items() if k not in ("total", "wall", "cpu"))
        print(f"  {v:9s} cpu {med[v]['cpu'] * 1e3:8.1f}  wall {med[v]['wall'] * 1e3:8.1f}   [{parts}]")
    print("ALUM (masked-only) phases as a share of its step:")
    for k in ("clean_forward", "ascent", "adversarial_forward", "backward"):
        print(f"  {k:20s} {med['alum'][k] / med['alum']['total'] * 100:5.1f}%  "
              f"({med['alum'][k] / med['plain']['total']:.2f}x our plain step)")
    return med


def report_memory(args: argparse.Namespace) -> dict[str, int]:
    """Peak RSS growth of one step (KiB) of each variant but alum_diag, each in a fresh process."""
    mem = {v: measure_memory(args, v) for v in VARIANTS if v != "alum_diag"}
    print("\npeak RSS growth of one step (MiB), fresh process each:")
    for v in mem:
        print(f"  {v:9s} {mem[v] / 1024:8.1f}")
    return mem


def report_views(args: argparse.Namespace, med, results) -> dict[str, float]:
    """The ratios by median and by fastest --clock time and by median wall time, printed; returns the median
    --clock times."""
    # Other jobs on a shared machine stretch wall time (they take the cores) but hardly the CPU time this
    # process spends; all three views of the same ratios are printed, the final line uses --clock.
    views = {
        f"median {args.clock} time": {v: med[v]["total"] for v in VARIANTS},
        f"fastest {args.clock} time": {v: min(x["total"] for x in results[v]) for v in VARIANTS},
    }
    views.setdefault("median wall time", {v: med[v]["wall"] for v in VARIANTS})
    for name, t in views.items():
        print(f"{name:18s}: plain_speedup_vs_hf={t['hf'] / t['plain']:.2f} "
              f"alum_time_vs_hf={t['alum'] / t['hf']:.2f} alum_time_vs_plain={t['alum'] / t['plain']:.2f} "
              f"alum_all_time_vs_plain={t['alum_all'] / t['plain']:.2f}")
    return views[f"median {args.clock} time"]


def report_diagnostics(ours: PretrainObjective, batch: dict, t: dict[str, float]) -> float:
    """The diagnostics' cost as a fraction of an ALUM step: the gain probe spread over its interval plus the
    per-step statistics."""
    stats_s = per_step_stats_seconds(ours, batch)
    probe = max(t["alum_diag"] - t["alum"], 0.0) / AlumConfig().gain_interval
    diag = (probe + stats_s) / t["alum"]
    print(f"\ndiagnostics: gain probe {(t['alum_diag'] - t['alum']) * 1e3:.1f} ms when measured (every "
          f"{AlumConfig().gain_interval} steps by default), per-step statistics {stats_s * 1e3:.2f} ms -> "
          f"{diag * 100:.1f}% of an ALUM step")
    return diag


def main(argv=None) -> None:
    global now
    args = parse_args(argv)
    if args.clock == "cpu":
        now = time.process_time
    if args.memory_child:
        memory_child(args)
        return
    print(describe(("torch", "transformers"), threads=args.threads))
    print(f"shape: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, seq {args.seq}, batch "
          f"{args.batch}, vocab {args.vocab}; 15% predicted; ALUM K=1 (AlumConfig defaults); fp32; "
          f"dropout 0.1; {args.rounds} timed rounds after 2 warm-up, interleaved; medians; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; clock {args.clock}")

    ours, hf, batch = setup(args)
    results = time_rounds(args, ours, hf, batch)
    med = report_medians(args, results)
    mem = report_memory(args)
    t = report_views(args, med, results)
    print(f"final line: {'median process CPU time' if args.clock == 'cpu' else 'median wall time'} per step")
    diag = report_diagnostics(ours, batch, t)
    gain = warmed_up_gain(args)
    print(f"ascent gain of the default options after 20 warm-up steps: {gain:.2f} (mean of 8 measurements)")
    print("\ntargets: plain >= 1.5x faster than HF, ALUM <= 1.5x HF time and <= 2.7x plain, memory <= 1.5x HF, "
          "diagnostics <= 3% of a step")
    print(f"plain_speedup_vs_hf={t['hf'] / t['plain']:.2f} alum_time_vs_hf={t['alum'] / t['hf']:.2f} "
          f"alum_time_vs_plain={t['alum'] / t['plain']:.2f} alum_all_time_vs_plain={t['alum_all'] / t['plain']:.2f} "
          f"alum_mem_vs_hf={mem['alum'] / mem['hf']:.2f} diag_overhead={diag:.3f} ascent_gain={gain:.2f}")


def per_step_stats_seconds(ours: PretrainObjective, batch: dict, repeats: int = 20) -> float:
    """Median time of the per-step ALUM statistics (δ norms and cosines, the summable vector) on real tensors."""
    t = ours.model.task(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["mlm_labels"])
    reg = regularized_loss(t.task_loss, t.embeds, t.logits, t.logits_from, AlumConfig(gain_interval=0),
                           token_mask=batch["attention_mask"])
    times = []
    for _ in range(repeats):
        t0 = now()
        delta_diagnostics(t.embeds, reg.adv.delta, reg.adv.delta, batch["attention_mask"])
        AlumSums.of(reg)
        times.append(now() - t0)
    return statistics.median(times)


def warmed_up_gain(args: argparse.Namespace, warmup: int = 20, measurements: int = 8) -> float:
    """Ascent gain of the default options after ``warmup`` ALUM training steps (AdamW, lr 1e-3)."""
    ours, _, _ = setup(args)
    ours.alum = AlumConfig(gain_interval=0)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    for i in range(warmup):
        ours(**make_batch(args, 1000 + i)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    ours.alum = AlumConfig(gain_interval=1)
    stats = AlumStats(ours.alum)
    for i in range(measurements):
        stats.sums += ours(**make_batch(args, 2000 + i)).alum_stats
    return stats.row()["ascent_gain"]


if __name__ == "__main__":
    main()
