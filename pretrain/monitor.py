"""What a run reports: TensorBoard scalars, ``metrics.jsonl``, a progress bar on rank 0, an MFU estimate.

Scalars (TensorBoard tag → meaning):
``train/loss`` total (MLM + NSP + α·adversarial), ``train/mlm_loss``, ``train/adv_loss``,
``train/ascent_overflows`` (cumulative ALUM ascent steps skipped for a non-finite gradient), ``train/lr``,
``train/loss_scale`` (DeepSpeed fp16 loss scale; 1 otherwise), ``train/grad_norm``,
``perf/samples_per_sec``, ``perf/tokens_per_sec`` (non-pad tokens), ``perf/mfu``, ``perf/data_wait_frac``,
``eval/mlm_loss``, ``eval/perplexity``, ``eval/accuracy`` (masked-token accuracy on held-out samples).

ALUM diagnostics (``pretrain.alum_stats.AlumStats``; the same keys in ``metrics.jsonl``): ``alum/delta_ratio``
(‖δ‖/‖x‖, per-token mean), ``alum/ascent_gain`` (l_sym at δ over l_sym at a random δ of the same per-token
norms; measured every ``alum.gain_interval`` ALUM steps, absent (None in the JSON) in an interval without one),
``alum/delta_cos_init`` (cos(δ_final, δ_init)), ``alum/adv_share`` (α·adv / total loss), ``alum/ascent_overflows``
(cumulative). A run whose measured gain stays below 2 prints one warning line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pretrain.alum_stats import AlumStats
from pretrain.config import RunConfig
from pretrain.dist import DistEnv
from pretrain.step_stats import StepStats

_GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10": 125.0, "L4": 121.0, "V100": 125.0}


def peak_flops(cfg: RunConfig) -> float:
    """Peak FLOP/s of one device: ``train.peak_tflops``, a known GPU's dense bf16/fp16 peak, or (CPU) a
    short fp32 matmul measurement, which makes CPU MFU a ratio to what this machine actually sustains."""
    if cfg.train.peak_tflops:
        return cfg.train.peak_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in _GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))  # keep the global RNG
    a @ a
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.1:
        a @ a
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - t0)


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token of the plain model: 6 × parameters + attention (12 · layers · hidden · seq),
    the usual MFU convention (ALUM's extra passes are overhead, not useful model FLOPs)."""
    config = model.config
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    return 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len


class Monitor:
    """Reduces per-step statistics over ranks and writes them (rank 0) to TensorBoard, metrics.jsonl, tqdm."""

    def __init__(self, cfg: RunConfig, run_dir: Path, dist: DistEnv, model: torch.nn.Module, start_step: int,
                 total_steps: int):
        self.cfg, self.dist, self.run_dir = cfg, dist, run_dir
        self.is_main = dist.rank == 0
        self.overflows = 0.0
        self.alum = AlumStats(cfg.alum.build())
        self._acc: StepStats | None = None
        self._time = self._wait = 0.0
        self._steps = 0
        self.tb = self.bar = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm import tqdm

            # purge_step: events a killed run logged after its last checkpoint are dropped on resume.
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                            disable=not cfg.train.progress, dynamic_ncols=True)
            self.peak = peak_flops(cfg)
            self.flops_tok = flops_per_token(model, cfg.data.max_seq_len)

    def _write(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def step(self, step: int, stats: StepStats, seconds: float, wait: float, lr: float, scale: float,
             grad_norm: float | None) -> float | None:
        """Account one optimizer step; every ``log_interval`` steps reduce over ranks and log.

        Args:
            step: Optimizer steps done.
            stats: This rank's sums over the step's micro-batches.
            seconds: Wall time of the step; wait: of which spent waiting for data.
            lr, scale, grad_norm: From the engine.
        Returns:
            The mean total loss when this step was logged, else None.
        """
        self._acc = stats if self._acc is None else self._acc + stats
        self._time += seconds
        self._wait += wait
        self._steps += 1
        if step % self.cfg.train.log_interval and step != self.cfg.total_steps():
            if self.bar is not None:
                self.bar.update(1)
            return None
        row = self._row(step, self._acc.all_reduce(self.dist.world_size), lr, scale, grad_norm)
        self._acc = None
        self._time = self._wait = 0.0
        self._steps = 0
        if self.is_main:
            self._publish(step, row)
        return row["loss"]

    def _row(self, step: int, total: StepStats, lr: float, scale: float, grad_norm: float | None) -> dict:
        """The log row of the steps since the last one, from their sums over every rank."""
        n = total.micro_batches
        self.overflows += total.overflows
        row = {
            "step": step, "loss": total.loss / n, "mlm_loss": total.mlm_loss / n, "adv_loss": total.adv_loss / n,
            "ascent_overflows": self.overflows,
            "masked_accuracy": total.masked_correct / max(total.masked_count, 1.0), "lr": lr, "loss_scale": scale,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "samples_per_sec": self.cfg.train.global_batch * self._steps / self._time,
            "tokens_per_sec": total.tokens / self._time, "data_wait_frac": self._wait / self._time,
        }
        row.update(self.alum.row_from(total.alum, self.overflows))
        return row

    def _publish(self, step: int, row: dict) -> None:
        """Rank 0: metrics.jsonl, TensorBoard, the low-gain warning, the progress bar."""
        row["mfu"] = row["tokens_per_sec"] * self.flops_tok / (self.peak * self.dist.world_size)
        self._write(row)
        for key, value in row.items():
            if key == "step" or value is None:
                continue
            if key in AlumStats.KEYS:
                self.tb.add_scalar(f"alum/{key}", value, step)
                if key != "ascent_overflows":
                    continue
            group = "perf" if key in ("samples_per_sec", "tokens_per_sec", "mfu", "data_wait_frac") else "train"
            self.tb.add_scalar(f"{group}/{key}", value, step)
        warning = self.alum.warning()
        if warning:
            print(warning, file=sys.stderr, flush=True)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", sps=f"{row['samples_per_sec']:.1f}")

    def eval(self, step: int, metrics: dict[str, float] | None) -> None:
        """Log held-out metrics (rank 0)."""
        if metrics is None or not self.is_main:
            return
        self._write({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
        for key, value in metrics.items():
            self.tb.add_scalar(f"eval/{key}", value, step)
        self.bar.write(f"step {step}: eval mlm_loss {metrics['mlm_loss']:.4f} "
                       f"ppl {metrics['perplexity']:.2f} acc {metrics['accuracy']:.4f}")

    def close(self, step: int, exited: bool) -> None:
        """Flush and close (rank 0), with a one-line summary."""
        if not self.is_main:
            return
        self.tb.close()
        self.bar.close()
        print(f"{'exited (exit_interval)' if exited else 'done'} at step {step}; run dir {self.run_dir}", flush=True)
